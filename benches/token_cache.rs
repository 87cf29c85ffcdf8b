//! Benchmark (g): a language-model student's KD step reading its teacher from a token cache,
//! against the cross-entropy-only step of the same student, at T = 256.
//!
//! The student is a small `distill::text::LlamaForCausalLM` with random weights (2 layers, hidden
//! 128, 4 heads, 2 key/value heads, FFN 384) over SmolLM2's vocabulary of 49 152 tokens, so that
//! the vocabulary-sized work of both losses is a real one. The teacher is another random model of
//! the same shape; its top-64 distributions (f16 log-probabilities, 16-bit ids, f32 tails) are
//! written once into a token cache over `--sequences` sequences (default 16) and read back through
//! its memory-mapped shards inside the timed step.
//!
//! - **CE step**: forward, cross-entropy on the next tokens, backward, SGD.
//! - **KD step**: the batch gathered from the cache, forward, cross-entropy + `TopKKl` (T = 1)
//!   against the cached top-k with its exact tail as one fused loss (`TokenKd`: one pass over the
//!   logits for the value and the analytic gradient of both terms), backward, SGD. Both terms count
//!   the tokens whose label is not −100 and that the cache marks valid.
//!
//! The two steps alternate in one process over `--rounds` rounds (default 5) after one untimed step
//! each; medians, tokens per second and their ratio, and the median time of the KD step's cache
//! gather alone. Peak RSS growth of each step, in untimed steps that also alternate: freed heap
//! memory is returned to the system first (`malloc_trim`, since the tuned allocator keeps it), the
//! kernel's high-water mark is reset (`/proc/self/clear_refs`), and the growth is VmHWM − VmRSS
//! before the step; medians. Also printed: the cache's bytes per token, measured from its files.
//!
//! `cargo bench --bench token_cache -- [--batch N] [--tokens N] [--sequences N] [--rounds N]
//! [--threads N]`. Under `cargo test --all-targets` (no `--bench`) it runs a smoke test: a tiny
//! model, the cached step's KD loss equals the live one; nothing is timed.

use std::path::PathBuf;
use std::time::Instant;

use distill::cache::{TeacherHash, TokenCache, TokenCacheSpec, TokenCacheWriter, TokenEncoding};
use distill::criterion::{TokenCriterion, TokenKd, TopKKl, TopKTail};
use distill::text::{LlamaConfig, LlamaForCausalLM};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

struct Args {
    batch: i64,
    tokens: i64,
    sequences: usize,
    rounds: usize,
    threads: i32,
    k: i64,
    bench: bool,
}

fn args() -> Args {
    let mut a = Args { batch: 4, tokens: 256, sequences: 16, rounds: 5, threads: 2, k: 64, bench: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--batch" => a.batch = value().parse().expect("--batch N"),
            "--tokens" => a.tokens = value().parse().expect("--tokens N"),
            "--sequences" => a.sequences = value().parse().expect("--sequences N"),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--threads" => a.threads = value().parse().expect("--threads N"),
            "--k" => a.k = value().parse().expect("--k N"),
            "--bench" => a.bench = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn config(vocab: i64, hidden: i64, layers: i64) -> LlamaConfig {
    LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: 3 * hidden,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: hidden / 4,
        max_position_embeddings: 4096,
        rms_norm_eps: 1e-5,
        rope_theta: 1e4,
        tie_word_embeddings: true,
        ..Default::default()
    }
}

/// The token ids of sequence `id`: fixed pseudo-random tokens.
fn sequence_ids(ids: &[usize], tokens: i64, vocab: i64) -> Tensor {
    let flat: Vec<i64> = ids
        .iter()
        .flat_map(|&id| {
            let mut state = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(id as u64 + 1);
            (0..tokens).map(move |_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) % vocab as u64) as i64
            })
        })
        .collect();
    Tensor::from_slice(&flat).view([ids.len() as i64, tokens])
}

/// Next-token labels: each token's successor, −100 for the last.
fn labels(input_ids: &Tensor) -> Tensor {
    let t = input_ids.size()[1];
    let next = input_ids.narrow(1, 1, t - 1);
    Tensor::cat(&[next, input_ids.narrow(1, 0, 1).full_like(-100)], 1)
}

struct Setup {
    dir: PathBuf,
    cache: TokenCache,
    teacher: LlamaForCausalLM,
    student: LlamaForCausalLM,
    opt: tch::nn::Optimizer,
    _vs: (VarStore, VarStore),
    vocab: i64,
    tokens: i64,
    k: i64,
}

fn setup(a: &Args, vocab: i64, hidden: i64, layers: i64) -> Setup {
    tch::manual_seed(11);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = LlamaForCausalLM::new(teacher_vs.root(), &config(vocab, hidden, layers)).unwrap();
    let student_vs = VarStore::new(Device::Cpu);
    let student = LlamaForCausalLM::new(student_vs.root(), &config(vocab, hidden, layers)).unwrap();
    let opt = tch::nn::Sgd::default().build(&student_vs, 1e-3).unwrap();
    let dir = std::env::temp_dir().join(format!("distill-bench-token-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = TokenCacheSpec {
        teacher: TeacherHash::of_var_store(&teacher_vs).unwrap(),
        tokenizer: TokenCacheSpec::tokenizer_identity(b"random tokens"),
        dataset: format!("random-{}x{}", a.sequences, a.tokens),
        num_sequences: a.sequences,
        seq_len: a.tokens,
        vocab,
        encoding: TokenEncoding::top_k(a.k, 1.0),
    };
    TokenCacheWriter::new(&dir, spec.clone())
        .shards(2)
        .write(4, |ids| {
            let logits = tch::no_grad(|| teacher.forward(&sequence_ids(ids, a.tokens, vocab)))?;
            Ok((logits, None))
        })
        .unwrap();
    let cache = TokenCache::open(&dir).unwrap();
    cache.check(&spec).unwrap();
    Setup { dir, cache, teacher, student, opt, _vs: (teacher_vs, student_vs), vocab, tokens: a.tokens, k: a.k }
}

impl Setup {
    fn ce_step(&mut self, ids: &[usize]) {
        let input_ids = sequence_ids(ids, self.tokens, self.vocab);
        let logits = self.student.forward(&input_ids).unwrap();
        let loss = logits.view([-1, self.vocab]).cross_entropy_for_logits(&labels(&input_ids).view([-1]));
        self.opt.backward_step(&loss);
        let _ = loss.double_value(&[]);
    }

    /// The step, and how long its cache gather took.
    fn kd_step(&mut self, ids: &[usize]) -> f64 {
        let start = Instant::now();
        let batch = self.cache.batch(ids).unwrap();
        let gathered = start.elapsed().as_secs_f64();
        let input_ids = sequence_ids(ids, self.tokens, self.vocab);
        let logits = self.student.forward(&input_ids).unwrap();
        let loss = TokenKd::new(TopKKl::new(1.0), 1.0)
            .f_loss(&logits, batch.top_k().unwrap(), &labels(&input_ids), Some(batch.valid()))
            .unwrap();
        self.opt.backward_step(&loss);
        let _ = loss.double_value(&[]);
        gathered
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn status(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Runs `step` and returns its peak RSS growth (None where the kernel cannot tell): freed heap
/// memory returned to the system first, then the high-water mark reset.
fn peak_growth(step: impl FnOnce()) -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status("VmRSS:");
    step();
    match (reset, before, status("VmHWM:")) {
        (true, Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
        _ => None,
    }
}

fn smoke_test(a: &Args) {
    let a = Args { sequences: 4, tokens: 16, k: 8, ..*a };
    let mut s = setup(&a, 300, 32, 1);
    let ids = [2usize, 0];
    let input_ids = sequence_ids(&ids, s.tokens, s.vocab);
    let live = TopKTail::f_encode(&tch::no_grad(|| s.teacher.forward(&input_ids)).unwrap(), s.k, 1.0).unwrap();
    let batch = s.cache.batch(&ids).unwrap();
    let logits = s.student.forward(&input_ids).unwrap();
    let live_loss = {
        let rounded = TopKTail {
            ids: live.ids.shallow_clone(),
            log_probs: live.log_probs.to_kind(Kind::Half).to_kind(Kind::Float),
            tail: live.tail.shallow_clone(),
            temperature: live.temperature,
        };
        TopKKl::new(1.0).f_loss_masked(&logits, &rounded, None).unwrap()
    };
    let cached_loss = TopKKl::new(1.0).f_loss_masked(&logits, batch.top_k().unwrap(), Some(batch.valid())).unwrap();
    assert!(cached_loss.equal(&live_loss), "the cached KD loss differs from the live one");
    // The fused loss of the timed KD step, from the cache and live: the same.
    let fused = TokenKd::new(TopKKl::new(1.0), 1.0);
    let y = labels(&input_ids);
    let cached_fused = fused.f_loss(&logits, batch.top_k().unwrap(), &y, Some(batch.valid())).unwrap();
    let rounded = TopKTail {
        ids: live.ids.shallow_clone(),
        log_probs: live.log_probs.to_kind(Kind::Half).to_kind(Kind::Float),
        tail: live.tail.shallow_clone(),
        temperature: live.temperature,
    };
    assert!(cached_fused.equal(&fused.f_loss(&logits, &rounded, &y, None).unwrap()), "the fused loss differs");
    assert!(cached_fused.double_value(&[]) > cached_loss.double_value(&[]), "the cross-entropy term is missing");
    s.kd_step(&ids);
    s.ce_step(&ids);
    let _ = peak_growth(|| s.ce_step(&ids));
    std::fs::remove_dir_all(&s.dir).unwrap();
    println!("token_cache smoke test: the cached KD loss equals the live one");
}

fn main() {
    let a = args();
    if !a.bench {
        smoke_test(&a);
        return;
    }
    distill::tune_allocator();
    tch::set_num_threads(a.threads);
    let mut s = setup(&a, 49_152, 128, 2);
    let bytes: u64 = std::fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let tokens_stored = (a.sequences as i64 * a.tokens) as f64;
    println!(
        "token cache: {} sequences × {} tokens, top-{} f16: {bytes} bytes in its shards = {:.2} B per token (headers \
         included; {} B per token of tensors)",
        a.sequences,
        a.tokens,
        a.k,
        bytes as f64 / tokens_stored,
        s.cache.manifest().bytes_per_token()
    );
    let batches: Vec<Vec<usize>> =
        (0..a.sequences).collect::<Vec<_>>().chunks(a.batch as usize).map(<[usize]>::to_vec).collect();
    // Untimed warm-up.
    s.ce_step(&batches[0]);
    s.kd_step(&batches[0]);
    let (mut ce, mut kd, mut gather) = (vec![], vec![], vec![]);
    for round in 0..a.rounds {
        for (n, ids) in batches.iter().enumerate() {
            let kd_first = (round + n) % 2 == 1;
            for which in [kd_first, !kd_first] {
                let start = Instant::now();
                if which {
                    gather.push(s.kd_step(ids));
                    kd.push(start.elapsed().as_secs_f64());
                } else {
                    s.ce_step(ids);
                    ce.push(start.elapsed().as_secs_f64());
                }
            }
        }
    }
    let (mut ce_rss, mut kd_rss) = (vec![], vec![]);
    for ids in batches.iter().take(4) {
        kd_rss.extend(peak_growth(|| {
            s.kd_step(ids);
        }));
        ce_rss.extend(peak_growth(|| s.ce_step(ids)));
    }
    let tokens = (a.batch * a.tokens) as f64;
    let (ce, kd, gather) = (median(ce), median(kd), median(gather));
    let rss = |xs: &[u64]| {
        if xs.is_empty() {
            "n/a".to_owned()
        } else {
            format!("{} MiB", median(xs.iter().map(|&x| x as f64).collect()) as u64 >> 20)
        }
    };
    println!("batch {} × {} tokens, {} thread(s), {} rounds", a.batch, a.tokens, a.threads, a.rounds);
    println!("| step | time | tokens/s | peak RSS growth |");
    println!("|---|---:|---:|---:|");
    println!("| cross-entropy only | {:.1} ms | {:.0} | {} |", ce * 1e3, tokens / ce, rss(&ce_rss));
    println!(
        "| CE + top-{} KD from the token cache | {:.1} ms | {:.0} | {} |",
        a.k,
        kd * 1e3,
        tokens / kd,
        rss(&kd_rss)
    );
    println!(
        "KD / CE time: {:.3}×; the KD step's cache gather: {:.3} ms ({:.2}% of it)",
        kd / ce,
        gather * 1e3,
        100.0 * gather / kd
    );
    std::fs::remove_dir_all(&s.dir).unwrap();
}
