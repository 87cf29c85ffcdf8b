//! A TorchScript teacher's forward through `distill` against calling `CModule::forward` directly.
//!
//! Both contenders run the same exported module (`tests/data/jit/features.pt`, a dict of three named
//! outputs) without gradient in evaluation mode, interleaved in short rounds in one process; the
//! `distill` side is a whole distillation step's capture — the engine, the TorchScript side's
//! output check and split, and a student that only passes its input through — so the ratio bounds
//! what naming a TorchScript teacher's outputs costs. Prints the median time of each and their ratio.
//!
//! `cargo bench --bench jit` (or `scripts/dev bench`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use distill::jit;
use distill::nn::{self, ModuleT};
use distill::{distill, Distillable, Mapping};
use tch::{CModule, Device, IValue, Kind, Tensor};

/// A student that costs nothing: it records its input and returns it.
#[derive(Debug, Distillable)]
struct PassThrough {
    id: nn::Identity,
}

impl ModuleT for PassThrough {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.id.forward_t(xs, train)
    }
}

const ROUNDS: usize = 41;
const ROUND: Duration = Duration::from_millis(40);

/// Median seconds per call of `a` and of `b`, measured in alternating rounds.
fn interleaved(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always runs on a warm cache.
        if round % 2 == 0 {
            ta.push(per_call(&mut a));
            tb.push(per_call(&mut b));
        } else {
            tb.push(per_call(&mut b));
            ta.push(per_call(&mut a));
        }
    }
    (median(ta), median(tb))
}

fn per_call(f: &mut dyn FnMut()) -> f64 {
    f(); // untimed warm-up
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < ROUND {
        f();
        calls += 1;
    }
    start.elapsed().as_secs_f64() / f64::from(calls)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    distill::tune_allocator();
    tch::set_num_threads(2);
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jit/features.pt");
    let mut raw = CModule::load_on_device(&file, Device::Cpu)?;
    raw.set_eval();
    let teacher = jit::Module::load(&file, Device::Cpu)?;
    let student = PassThrough { id: nn::identity() };
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("", "logits", ())?;
    mapping.add("id", "block1", ())?;
    let model = distill(&student, &teacher, mapping);

    println!("TorchScript teacher (tests/data/jit/features.pt): distill's capture vs CModule::forward, 2 threads");
    println!("{:>6} {:>14} {:>14} {:>8}", "batch", "CModule (µs)", "distill (µs)", "ratio");
    for batch in [8, 128] {
        tch::manual_seed(0);
        let xs = Tensor::randn([batch, 1, 8, 8], (Kind::Float, Device::Cpu));
        let input = [IValue::Tensor(xs.shallow_clone())];
        let (direct, through) = interleaved(
            || {
                let _out = tch::no_grad(|| raw.forward_is(&input)).expect("the fixture runs");
            },
            || {
                let _out = model.forward_t(&xs, false).expect("the pairs were checked when added");
            },
        );
        println!("{batch:>6} {:>14.1} {:>14.1} {:>7.3}×", direct * 1e6, through * 1e6, through / direct);
    }
    Ok(())
}
