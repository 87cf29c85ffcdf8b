//! The PyTorch baseline of (c): `benches/python/step_hooks.py --serve`, started by the bench and
//! asked over a pipe for the seconds N steps take, so that its rounds interleave with the Rust ones.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::Args;

/// The Python baseline, served over a pipe.
pub(crate) struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

pub(crate) fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python/step_hooks.py")
}

impl Python {
    pub(crate) fn start(args: &Args, batch: i64) -> Result<Python, String> {
        let mut child = Command::new(&args.python)
            .arg(script())
            .args(["--serve", "--batch", &batch.to_string(), "--threads", &args.threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args.python))?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("the Python baseline did not start (is torch importable? PYTHONPATH is set by scripts/libtorch.sh); said {line:?}"));
        }
        Ok(Python { child, stdin, stdout })
    }

    /// Seconds per step over `n` steps.
    pub(crate) fn round(&mut self, n: usize) -> f64 {
        writeln!(self.stdin, "{n}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().parse::<f64>().expect("Python answers with seconds") / n as f64
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}
