//! A language-model teacher's forward, tokens per second: `distill::text::LlamaForCausalLM` against
//! transformers' `LlamaForCausalLM` in eager PyTorch, same shape (SmolLM2-135M: 30 layers, hidden
//! 576, 9 heads, 3 key/value heads, FFN 1536, vocabulary 49 152), same batch, same thread count.
//!
//! Both run f32 without gradient on random ids `[batch, tokens]` (default 4 × 256) and random
//! weights; speed does not depend on the values. The Python model runs in a subprocess
//! (benches/python/text_forward.py) that times one forward per request, so the two sides alternate
//! forward by forward in one run and a machine that slows down affects both alike. Rust runs with
//! the fused attention kernel (the default) and with explicit softmax, in the same rounds. Prints
//! each side's median and the ratios.
//!
//! `source scripts/libtorch.sh && source scripts/text.sh && cargo bench --bench text -- [--rounds N]
//! [--threads N] [--batch N] [--tokens N] [--device cpu|cuda] [--python python3]`. On CUDA both
//! sides synchronise the device before reading the clock.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use distill::text::{AttentionImplementation, LlamaConfig, LlamaForCausalLM};
use tch::{Device, Kind, Tensor};

struct Args {
    /// Set by `cargo bench` (`--bench`); without it, as under `cargo test --all-targets`, the bench
    /// runs the Rust side once at a small shape, as a smoke test that needs no Python.
    bench: bool,
    rounds: usize,
    threads: i32,
    batch: i64,
    tokens: i64,
    device: Device,
    python: String,
}

fn args() -> Args {
    let mut args = Args {
        bench: false,
        rounds: 7,
        threads: 2,
        batch: 4,
        tokens: 256,
        device: Device::Cpu,
        python: "python3".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--tokens" => args.tokens = value().parse().expect("--tokens N"),
            "--python" => args.python = value(),
            "--device" => {
                args.device = match value().as_str() {
                    "cpu" => Device::Cpu,
                    "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
                    "cuda" => panic!("--device cuda: libtorch sees no CUDA device"),
                    other => panic!("--device cpu|cuda, not {other}"),
                }
            }
            "--bench" => args.bench = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn smollm2_shape() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        head_dim: 64,
        max_position_embeddings: 8192,
        rms_norm_eps: 1e-5,
        rope_theta: 1e5,
        tie_word_embeddings: true,
        ..Default::default()
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args = args();
    distill::tune_allocator();
    tch::set_num_threads(args.threads);
    if !args.bench {
        return smoke_test(args.device);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python/text_forward.py");
    let mut child = Command::new(&args.python)
        .arg(&script)
        .args(["--batch", &args.batch.to_string(), "--tokens", &args.tokens.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--device", if args.device.is_cuda() { "cuda" } else { "cpu" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.python));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the Python side's first line");
    assert_eq!(
        line.trim(),
        "ready",
        "the Python side did not start (is transformers on PYTHONPATH? source scripts/text.sh)"
    );
    let mut python = || -> f64 {
        writeln!(stdin, "run").expect("write to the Python side");
        stdin.flush().expect("flush");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the Python side's time");
        line.trim().parse().unwrap_or_else(|_| panic!("not a time: {line:?}"))
    };

    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(args.device);
    let mut model = LlamaForCausalLM::new(vs.root(), &smollm2_shape()).expect("a valid config");
    let ids = Tensor::randint(49152, [args.batch, args.tokens], (Kind::Int64, args.device));
    let mut rust = |implementation| -> f64 {
        model.set_attention_implementation(implementation);
        let start = Instant::now();
        let logits = tch::no_grad(|| model.forward(&ids)).expect("valid ids");
        if args.device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(logits.size(), [args.batch, args.tokens, 49152]);
        elapsed
    };

    // One warm-up forward each (first-touch allocation, kernel selection).
    let _ = (rust(AttentionImplementation::Sdpa), rust(AttentionImplementation::Eager), python());
    let (mut fused, mut explicit, mut torch) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Rotate who goes first, so that none always follows the same neighbour.
        for k in 0..3 {
            match (round + k) % 3 {
                0 => fused.push(rust(AttentionImplementation::Sdpa)),
                1 => explicit.push(rust(AttentionImplementation::Eager)),
                _ => torch.push(python()),
            }
        }
        eprintln!(
            "round {round}: fused {:.3}s explicit {:.3}s transformers {:.3}s",
            fused[round], explicit[round], torch[round]
        );
    }
    drop(stdin);
    let _ = child.wait();
    let tokens = (args.batch * args.tokens) as f64;
    // Forwards of one round ran back to back under about the same load: their ratio is steadier
    // than the ratio of medians when the machine's load moves between rounds.
    let round_ratio = median(fused.iter().zip(&torch).map(|(f, t)| f / t).collect());
    let (fused, explicit, torch) = (median(fused), median(explicit), median(torch));
    println!(
        "teacher forward, SmolLM2-135M shape, batch {} × {} tokens, {:?}, {} threads, median of {} interleaved rounds",
        args.batch, args.tokens, args.device, args.threads, args.rounds
    );
    println!("  distill, fused attention     {:>8.3} s  {:>8.0} tokens/s", fused, tokens / fused);
    println!("  distill, explicit softmax    {:>8.3} s  {:>8.0} tokens/s", explicit, tokens / explicit);
    println!("  transformers (eager PyTorch) {:>8.3} s  {:>8.0} tokens/s", torch, tokens / torch);
    println!(
        "  time ratio distill (fused) / transformers: {:.2}× (median of per-round ratios {round_ratio:.2}×)",
        fused / torch
    );
    println!("  time ratio fused / explicit softmax: {:.2}×", fused / explicit);
}

/// One forward of each attention implementation at 1 × 16 tokens: the bench's code runs, and the
/// two implementations agree (same weights, same ids) to within f32 rounding.
fn smoke_test(device: Device) {
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(device);
    let mut model = LlamaForCausalLM::new(vs.root(), &smollm2_shape()).expect("a valid config");
    let ids = Tensor::randint(49152, [1, 16], (Kind::Int64, device));
    let mut logits = |implementation| {
        model.set_attention_implementation(implementation);
        tch::no_grad(|| model.forward(&ids)).expect("valid ids")
    };
    let (fused, explicit) = (logits(AttentionImplementation::Sdpa), logits(AttentionImplementation::Eager));
    assert_eq!(fused.size(), [1, 16, 49152]);
    let difference = (&fused - &explicit).abs().max().double_value(&[]);
    let scale = explicit.abs().max().double_value(&[]);
    // 30 layers, each a softmax over at most 16 keys and sums over 576–1536 terms: a relative
    // difference of 1e-3 of the largest logit is far above rounding and far below a wrong kernel.
    assert!(difference <= 1e-3 * scale, "fused and explicit attention differ by {difference} (largest logit {scale})");
    println!("text bench smoke test: fused and explicit attention agree to {difference:.2e} (timings: cargo bench --bench text)");
}
