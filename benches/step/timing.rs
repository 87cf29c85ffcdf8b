//! Timing by interleaved rounds: each contender runs in short rounds, in alternation, cycling through
//! every order; each one's median round is its time.

use std::time::Instant;

/// Calibration runs the contender at least this long (and at least [`CALIBRATION_CALLS`] times).
const CALIBRATION_MS: u128 = 50;
const CALIBRATION_CALLS: usize = 3;
/// Untimed calls before calibrating.
const CALIBRATION_WARM_UP: usize = 5;

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Steps per round so that one round lasts about `round_ms`.
pub(crate) fn calibrate(mut f: impl FnMut(), round_ms: u64) -> usize {
    for _ in 0..CALIBRATION_WARM_UP {
        f();
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_millis() < CALIBRATION_MS || n < CALIBRATION_CALLS {
        f();
        n += 1;
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    ((round_ms as f64 / 1e3 / per).round() as usize).max(1)
}

/// Seconds per call over `n` calls, after a few untimed ones: the first calls after another
/// contender's round pay for cold caches and sleeping worker threads, whoever runs them.
pub(crate) fn time_round(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm_up(n) {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() / n as f64
}

/// Untimed calls before each round (the Python server does the same).
fn warm_up(n: usize) -> usize {
    (n / 10).max(2)
}

/// Medians (seconds per call) of interleaved rounds of each contender. The order cycles through
/// every permutation, so each contender follows each other one equally often.
pub(crate) fn interleave(rounds: usize, contenders: &mut [&mut dyn FnMut() -> f64]) -> Vec<f64> {
    let k = contenders.len();
    let orders = permutations(k);
    let mut times = vec![Vec::with_capacity(rounds); k];
    for r in 0..rounds {
        for &i in &orders[r % orders.len()] {
            times[i].push(contenders[i]());
        }
    }
    times.into_iter().map(median).collect()
}

fn permutations(k: usize) -> Vec<Vec<usize>> {
    if k <= 1 {
        return vec![(0..k).collect()];
    }
    let mut out = Vec::new();
    for p in permutations(k - 1) {
        for at in 0..k {
            let mut q = p.clone();
            q.insert(at, k - 1);
            out.push(q);
        }
    }
    out
}

/// Seconds as milliseconds, for the report.
pub(crate) fn fmt_ms(s: f64) -> String {
    format!("{:.3} ms", s * 1e3)
}
