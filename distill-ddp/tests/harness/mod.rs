//! Runs a test's body in several processes, one per rank: the test re-executes its own binary,
//! filtered to itself, with the rank in the environment, and waits for every rank (bounded).
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use distill_ddp::{DdpConfig, ProcessGroup};

const WORKER: &str = "DISTILL_DDP_TEST_WORKER";
const OUT: &str = "DISTILL_DDP_TEST_OUT";

/// In a worker process: its rank and the folder to write results to.
pub struct Worker {
    pub rank: usize,
    pub out: PathBuf,
}

impl Worker {
    /// Joins the group described by the environment, with `timeout` for collectives.
    pub fn join(&self, timeout: Duration) -> ProcessGroup {
        let config = DdpConfig::from_env().expect("worker environment").with_timeout(timeout);
        ProcessGroup::new(&config.with_rendezvous_timeout(Duration::from_secs(60))).expect("rendezvous")
    }

    /// This rank's file `name` in the output folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.out.join(format!("rank{}-{name}", self.rank))
    }
}

/// `Some` when this process is a worker started by [`run_ranks`].
pub fn worker() -> Option<Worker> {
    std::env::var_os(WORKER)?;
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set for workers"));
    Some(Worker { rank: var("RANK").parse().unwrap(), out: PathBuf::from(var(OUT)) })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh, empty folder for one test's files.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-ddp-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What one rank did.
#[derive(Debug)]
pub struct RankOutcome {
    pub status: Option<ExitStatus>,
    pub output: String,
}

impl RankOutcome {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Starts `world_size` processes running test `test` as ranks, with `MASTER_ADDR=127.0.0.1` and a
/// free port, and waits for all of them; a rank still running after `deadline` is killed (its
/// status is `None`). `extra(rank)` adds environment variables.
pub fn run_ranks(
    test: &str,
    world_size: usize,
    out: &Path,
    deadline: Duration,
    extra: impl Fn(usize) -> Vec<(String, String)>,
) -> Vec<RankOutcome> {
    let port = free_port().to_string();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<Option<Child>> = (0..world_size)
        .map(|rank| {
            let mut cmd = Command::new(&exe);
            cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(WORKER, "1")
                .env(OUT, out)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world_size.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env_remove("TORCHELASTIC_USE_AGENT_STORE")
                .env_remove("GLOO_SOCKET_IFNAME")
                .envs(extra(rank))
                .stdout(Stdio::from(std::fs::File::create(out.join(format!("rank{rank}.log"))).unwrap()))
                .stderr(Stdio::from(std::fs::File::create(out.join(format!("rank{rank}.err"))).unwrap()));
            Some(cmd.spawn().expect("spawn a rank"))
        })
        .collect();
    let start = Instant::now();
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; world_size];
    while children.iter().any(Option::is_some) && start.elapsed() < deadline {
        for (rank, slot) in children.iter_mut().enumerate() {
            if let Some(child) = slot {
                if let Some(status) = child.try_wait().unwrap() {
                    statuses[rank] = Some(status);
                    *slot = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut child in children.into_iter().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
    statuses
        .into_iter()
        .enumerate()
        .map(|(rank, status)| {
            let read = |ext: &str| std::fs::read_to_string(out.join(format!("rank{rank}.{ext}"))).unwrap_or_default();
            RankOutcome { status, output: format!("{}{}", read("log"), read("err")) }
        })
        .collect()
}

/// Panics with every rank's output unless all succeeded.
pub fn assert_all_succeeded(outcomes: &[RankOutcome]) {
    for (rank, o) in outcomes.iter().enumerate() {
        assert!(o.succeeded(), "rank {rank} ended with {:?}:\n{}", o.status, o.output);
    }
}
