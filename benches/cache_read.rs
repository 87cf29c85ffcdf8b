//! The teacher cache's memory-mapped reader against the in-memory gather it replaced, pages warm.
//!
//! A cache of `--samples` samples (default 4096) of one teacher endpoint of 22 016 values (86 KiB in
//! f32, about (e)'s 87 848 B per sample), in 8 shards, f32 and f16. Two sources of the same batches:
//!
//! - **in memory**: what `TeacherCache::open` did before — every shard read whole into memory
//!   (`Tensor::read_safetensors`), concatenated, and each batch gathered with
//!   `select(1, view).index_select(0, ids).to_kind(Float)`;
//! - **mapped**: `TeacherCache::batch` on the memory-mapped shards, once with a resident limit above
//!   the cache's size (every page stays mapped once read: the warm steady state), once with the
//!   default limit of 128 MiB below it (pages released and mapped again from the page cache).
//!
//! Timed per batch of shuffled ids (`--batch`, default 8 and 128): the gather alone, and a step —
//! the gather, then a student (a 256 → 64 → 22 016 MLP) trained one SGD step on MSE against the
//! batch. Every source first reads the whole epoch once (pages warm), then the sources alternate
//! batch by batch for `--rounds` epochs; medians per batch and the ratios mapped / in memory.
//!
//! `cargo bench --bench cache_read -- [--samples N] [--batch 8,128] [--rounds N] [--threads N]`.
//! Under `cargo test --all-targets` (no `--bench`) it runs a smoke test: both sources give the same
//! tensors; nothing is timed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use distill::cache::{CacheWriter, Encoding, TeacherCache, TeacherHash};
use distill::nn::ModuleT;
use distill::prelude::Distillable;
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

const WIDTH: i64 = 22_016;
const SHARDS: usize = 8;

struct Args {
    samples: usize,
    batches: Vec<usize>,
    rounds: usize,
    threads: i32,
    bench: bool,
}

fn args() -> Args {
    let mut args = Args { samples: 4096, batches: vec![8, 128], rounds: 3, threads: 2, bench: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--samples" => args.samples = value().parse().expect("--samples N"),
            "--batch" => args.batches = value().split(',').map(|b| b.parse().expect("--batch 8,128")).collect(),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--bench" => args.bench = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The teacher: its output is its input.
#[derive(Debug, Distillable)]
struct Identity {
    #[distill(skip)]
    _width: i64,
}

impl ModuleT for Identity {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.shallow_clone()
    }
}

/// Writes the cache: sample `i`'s values are seeded by `i`.
fn write_cache(dir: &Path, samples: usize, encoding: Encoding) {
    let (student, teacher) = (Identity { _width: 0 }, Identity { _width: 0 });
    let mut mapping = distill::Mapping::new(&student, &teacher);
    mapping.add("", "", "values").unwrap();
    let kd = distill::distill(&student, &teacher, mapping);
    CacheWriter::new(dir, TeacherHash::from_text("identity"))
        .shards(SHARDS)
        .batch_size(256)
        .encoding(encoding)
        .write_with(kd.distillation(), &teacher, samples, |ids| {
            let ids = Tensor::from_slice(ids).to_kind(Kind::Float).unsqueeze(1);
            let columns = Tensor::arange(WIDTH, (Kind::Float, Device::Cpu)).unsqueeze(0);
            Ok(((ids * 0.37 + columns * 0.011).sin() * 3.0).contiguous())
        })
        .unwrap();
}

/// The in-memory reader as it was: every shard whole in memory, one gather per batch.
struct InMemory {
    values: Tensor,
}

impl InMemory {
    fn load(dir: &Path, cache: &TeacherCache) -> InMemory {
        let parts: Vec<Tensor> = cache
            .manifest()
            .shards
            .iter()
            .map(|shard| {
                let tensors = Tensor::read_safetensors(dir.join(&shard.file)).unwrap();
                tensors.into_iter().find(|(name, _)| name == "endpoint.0").unwrap().1
            })
            .collect();
        InMemory { values: Tensor::cat(&parts, 0) }
    }

    fn batch(&self, ids: &Tensor) -> Tensor {
        self.values.select(1, 0).index_select(0, ids).to_kind(Kind::Float)
    }
}

/// A student trained against the batch: 256 → 64 → WIDTH, MSE, SGD.
struct Student {
    _vs: VarStore,
    net: tch::nn::Sequential,
    opt: tch::nn::Optimizer,
}

impl Student {
    fn new() -> Student {
        let vs = VarStore::new(Device::Cpu);
        let p = vs.root();
        let net = tch::nn::seq()
            .add(tch::nn::linear(&p / "a", 256, 64, Default::default()))
            .add_fn(|x| x.relu())
            .add(tch::nn::linear(&p / "b", 64, WIDTH, Default::default()));
        let opt = tch::nn::Sgd::default().build(&vs, 1e-3).unwrap();
        Student { _vs: vs, net, opt }
    }

    fn step(&mut self, xs: &Tensor, teacher: &Tensor) {
        let loss = tch::nn::Module::forward(&self.net, xs).mse_loss(teacher, tch::Reduction::Mean);
        self.opt.backward_step(&loss);
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A shuffled order of `0..n` (LCG, fixed seed `round`).
fn shuffled(n: usize, round: u64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut state = 0x853c_49e6_748f_ea9bu64 ^ round;
    for i in (1..n).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    order
}

fn cache_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("distill-bench-cache-read-{}-{name}", std::process::id()))
}

fn smoke_test() {
    let dir = cache_dir("smoke");
    let _ = std::fs::remove_dir_all(&dir);
    write_cache(&dir, 64, Encoding::F16);
    let cache = TeacherCache::open(&dir).unwrap();
    let memory = InMemory::load(&dir, &cache);
    let ids = Tensor::from_slice(&shuffled(64, 1)[..16]);
    let mapped = cache.batch(&ids, 0).unwrap();
    assert!(mapped.endpoint("").unwrap().equal(&memory.batch(&ids)), "the two readers disagree");
    std::fs::remove_dir_all(&dir).unwrap();
    println!("cache_read smoke test: the mapped and in-memory readers give the same batch");
}

fn main() {
    let args = args();
    if !args.bench {
        smoke_test();
        return;
    }
    distill::tune_allocator();
    tch::set_num_threads(args.threads);
    println!(
        "teacher cache reader, {} samples × {} values in {SHARDS} shards, {} thread(s), {} timed epoch(s)",
        args.samples, WIDTH, args.threads, args.rounds
    );
    println!(
        "| values | batch | cache | gather: in memory | mapped, all resident | ratio | mapped, 128 MiB resident | ratio \
         | step: in memory | mapped, all resident | ratio | mapped, 128 MiB resident | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for encoding in [Encoding::F32, Encoding::F16] {
        let dir = cache_dir(&format!("{encoding:?}"));
        let _ = std::fs::remove_dir_all(&dir);
        write_cache(&dir, args.samples, encoding);
        let bytes: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        let memory = InMemory::load(&dir, &TeacherCache::open(&dir).unwrap());
        let resident = TeacherCache::open(&dir).unwrap().with_resident_limit(usize::MAX);
        let limited = TeacherCache::open(&dir).unwrap();
        for &batch in &args.batches {
            let xs = Tensor::randn([batch as i64, 256], (Kind::Float, Device::Cpu));
            let mut student = Student::new();
            // Warm: every source reads the whole epoch once (and verifies its checksums).
            for ids in shuffled(args.samples, 0).chunks(batch) {
                let ids = Tensor::from_slice(ids);
                let _ = memory.batch(&ids);
                let _ = resident.batch(&ids, 0).unwrap();
                let _ = limited.batch(&ids, 0).unwrap();
            }
            let (mut gather, mut step) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
            for round in 0..args.rounds {
                for (n, ids) in shuffled(args.samples, round as u64 + 1).chunks(batch).enumerate() {
                    if ids.len() < batch {
                        continue;
                    }
                    let ids = Tensor::from_slice(ids);
                    // Rotate which source goes first.
                    for k in 0..3 {
                        let source = (k + n) % 3;
                        let start = Instant::now();
                        let teacher = match source {
                            0 => memory.batch(&ids),
                            1 => resident.batch(&ids, 0).unwrap().endpoint("").unwrap().shallow_clone(),
                            _ => limited.batch(&ids, 0).unwrap().endpoint("").unwrap().shallow_clone(),
                        };
                        let gathered = start.elapsed().as_secs_f64();
                        student.step(&xs, &teacher);
                        gather[source].push(gathered);
                        step[source].push(start.elapsed().as_secs_f64());
                    }
                }
            }
            let [g0, g1, g2] = gather.map(median);
            let [s0, s1, s2] = step.map(median);
            let ms = |t: f64| format!("{:.3} ms", t * 1e3);
            println!(
                "| {encoding:?} | {batch} | {} MiB | {} | {} | {:.3}× | {} | {:.3}× | {} | {} | {:.3}× | {} | {:.3}× |",
                bytes >> 20,
                ms(g0),
                ms(g1),
                g1 / g0,
                ms(g2),
                g2 / g0,
                ms(s0),
                ms(s1),
                s1 / s0,
                ms(s2),
                s2 / s0
            );
        }
        drop((memory, resident, limited));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
