//! Rank-0-only side effects: logging and checkpoints, written once for the whole group.

use std::fmt::Display;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::error::DdpError;
use crate::group::ProcessGroup;

impl ProcessGroup {
    /// Runs `f` on rank 0 only (its result there, `None` elsewhere). No collective: the other
    /// ranks do not wait for it.
    pub fn on_main<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        self.is_main().then(f)
    }

    /// Prints `message` on rank 0 only.
    pub fn println_main(&self, message: impl Display) {
        if self.is_main() {
            println!("{message}");
        }
    }

    /// Saves `vs` to `path` on rank 0, then tells every rank whether that worked: all return once
    /// the file is complete, and all return an error when rank 0 could not write it. A collective:
    /// every rank calls it. (Data-parallel ranks hold the same parameters, so one copy is enough.)
    pub fn save_on_main(&self, vs: &VarStore, path: impl AsRef<Path>) -> Result<(), DdpError> {
        let path = path.as_ref();
        self.run_on_main(|| vs.save(path).map_err(DdpError::from), &format!("save `{}`", path.display()))
    }

    /// Runs `f` on rank 0, then shares whether it succeeded: rank 0 returns `f`'s error, the
    /// others an error saying rank 0 failed to `what`. A collective: every rank calls it.
    pub fn run_on_main(&self, f: impl FnOnce() -> Result<(), DdpError>, what: &str) -> Result<(), DdpError> {
        let outcome = if self.is_main() { Some(f()) } else { None };
        let ok = outcome.as_ref().is_none_or(|r| r.is_ok());
        let flag = Tensor::from_slice(&[i64::from(ok)]).to_kind(Kind::Int64).to_device(self.device());
        self.broadcast(&flag, 0)?;
        match outcome {
            Some(result) => result,
            None if flag.int64_value(&[0]) == 1 => Ok(()),
            None => Err(DdpError::RankMismatch(format!("rank 0 failed to {what}"))),
        }
    }
}
