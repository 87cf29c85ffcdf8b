//! Joining a group fails within the rendezvous timeout, whatever holds it up, and says why: a
//! process that holds the port and never answers, sockets that do not connect, ranks started with
//! different world sizes. Loopback only; every wait is bounded.

mod harness;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use distill_ddp::{DdpConfig, DdpError, GlooDevice, ProcessGroup};
use harness::{run_ranks, scratch, worker};

/// Process start-up, thread wake-ups and libtorch's own polling (TCPStore retries every second or
/// so) on a loaded 2-core machine: how much later than the timeout a failure may arrive.
const SLACK: Duration = Duration::from_secs(2);

fn config(rank: usize, world_size: usize, port: u16, rendezvous: Duration) -> DdpConfig {
    DdpConfig::new(rank, world_size, "127.0.0.1", port)
        .unwrap()
        // Long collective timeout: only the rendezvous timeout may end the waits below.
        .with_timeout(Duration::from_secs(120))
        .with_rendezvous_timeout(rendezvous)
}

#[test]
fn a_port_held_by_a_process_that_never_answers_fails_every_rank_within_the_timeout() {
    // Listening, never accepting: the kernel completes every connection, nothing ever replies.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let timeout = Duration::from_secs(3);

    let start = Instant::now();
    let err = ProcessGroup::new(&config(0, 2, port, timeout)).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, DdpError::Backend { op: "TCPStore", .. }), "{err:?}");
    assert!(message.contains("EADDRINUSE") || message.to_lowercase().contains("in use"), "{message}");
    assert!(start.elapsed() < timeout + SLACK, "rank 0 took {:?}", start.elapsed());

    for rank in [1, 2] {
        let start = Instant::now();
        let err = ProcessGroup::new(&config(rank, 3, port, timeout)).unwrap_err();
        let elapsed = start.elapsed();
        println!("rank {rank} failed after {elapsed:?}: {err}");
        assert!(elapsed < timeout + SLACK, "rank {rank} took {elapsed:?} with a timeout of {timeout:?}: {err}");
        match &err {
            DdpError::RendezvousTimeout { stage, timeout: t, .. } => {
                assert_eq!(*t, timeout);
                assert!(stage.starts_with("connecting to the rendezvous store"), "{stage}");
            }
            // libtorch's own deadline may end the wait first.
            DdpError::Backend { op: "TCPStore", .. } => {}
            other => panic!("rank {rank}: {other:?}"),
        }
    }
    drop(holder);
}

#[test]
fn gloo_connects_within_the_rendezvous_timeout_not_the_collective_one() {
    // Rank 1 passes the store check-in, then cannot open a Gloo socket (no such interface), so rank 0
    // waits for a peer that never connects: the rendezvous timeout ends that wait, not the
    // collective timeout (120 s here).
    let timeout = Duration::from_secs(4);
    if let Some(w) = worker() {
        let mut config = DdpConfig::from_env().unwrap().with_timeout(Duration::from_secs(120));
        config = config.with_rendezvous_timeout(timeout);
        if w.rank == 1 {
            config = config.with_gloo_device(GlooDevice::Interfaces(vec!["distill-none0".into()]));
        }
        let start = Instant::now();
        let err = ProcessGroup::new(&config).unwrap_err();
        std::fs::write(w.file("error.txt"), format!("{}\n{err}", start.elapsed().as_millis())).unwrap();
        return;
    }
    let out = scratch("gloo-connect");
    let ranks = run_ranks(
        "gloo_connects_within_the_rendezvous_timeout_not_the_collective_one",
        2,
        &out,
        Duration::from_secs(60),
        |_| vec![],
    );
    harness::assert_all_succeeded(&ranks);
    let read = |rank: usize| {
        let text = std::fs::read_to_string(out.join(format!("rank{rank}-error.txt"))).unwrap();
        let (millis, message) = text.split_once('\n').unwrap();
        (Duration::from_millis(millis.parse().unwrap()), message.to_owned())
    };
    let (elapsed, message) = read(0);
    println!("rank 0 failed after {elapsed:?}: {message}");
    assert!(elapsed < timeout + SLACK, "rank 0 took {elapsed:?}: {message}");
    assert!(elapsed >= timeout - Duration::from_millis(100), "rank 0 failed early, after {elapsed:?}: {message}");
    let (_, message) = read(1);
    assert!(message.starts_with("ProcessGroupGloo failed: "), "{message}");
}

#[test]
fn ranks_started_with_different_world_sizes_say_so() {
    if let Some(w) = worker() {
        let config = DdpConfig::from_env().unwrap().with_rendezvous_timeout(Duration::from_secs(30));
        let err = ProcessGroup::new(&config).unwrap_err();
        assert!(matches!(err, DdpError::RankMismatch(_)), "{err:?}");
        std::fs::write(w.file("error.txt"), err.to_string()).unwrap();
        return;
    }
    // Rank 0 thinks the world is smaller, then larger, than rank 1 does.
    for (world0, world1) in [(2, 3), (3, 2)] {
        let out = scratch(&format!("world-{world0}-{world1}"));
        let ranks =
            run_ranks("ranks_started_with_different_world_sizes_say_so", 2, &out, Duration::from_secs(60), |r| {
                vec![("WORLD_SIZE".to_owned(), if r == 0 { world0 } else { world1 }.to_string())]
            });
        harness::assert_all_succeeded(&ranks);
        let message = |rank: usize| std::fs::read_to_string(out.join(format!("rank{rank}-error.txt"))).unwrap();
        assert_eq!(
            message(0),
            format!(
                "the ranks disagree: rank 1 was started with a world size of {world1}, this rank (0) with {world0}: \
                 every rank must be given the same WORLD_SIZE"
            )
        );
        assert_eq!(
            message(1),
            format!(
                "the ranks disagree: rank 0 was started with a world size of {world0}, this rank (1) with {world1}: \
                 every rank must be given the same WORLD_SIZE"
            )
        );
    }
}
