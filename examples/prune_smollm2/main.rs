//! Prunes SmolLM2-135M-Instruct to about half its non-embedding parameters (Minitron-style: width
//! and depth chosen by activation importance on fortunes) and fine-tunes it back twice from the
//! same weights and batches: cross-entropy only, and KD from the teacher's top-k token cache
//! (written once into the output folder, reused by later runs).
//!
//! 1. The teacher's logits checked against transformers' (one line).
//! 2. The pruned shape and its parameter share.
//! 3. The teacher cache: top-64 log-probabilities in f16 + the exact tail, per training token.
//! 4. The two fine-tunes, `--seeds N` times (each seed gives another batch order).
//! 5. Validation perplexity of the teacher, the pruned model and both fine-tunes, each phase's
//!    time and tokens/s (`OUT/results.md`), the loss curves (`OUT/loss_curves.png`) and one greedy
//!    continuation of the same prompt from each of the four models.
//!
//! Run: `scripts/dev example lm [--seeds N] [--config examples/prune_smollm2/lm.toml] [--out DIR]`
//! (provisions the GGUF and the fortunes; or `source scripts/libtorch.sh && source scripts/text.sh
//! && cargo run --release --example prune_smollm2 -- …`).

mod args;
mod cache;
mod check;
mod data;
mod report;
mod train;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use distill::adapter::LinearSelectionAdapter;
use distill::cache::TokenCache;
use distill::text::data::{TokenBatch, TokenDataset};
use distill::text::prune::{hidden_adapter, prune_llama, LlamaImportance, LlamaKept, ParameterCounts, PrunedLlama};
use distill::text::{self, GenerateConfig, GgufFile, LlamaForCausalLM, Tokenizer};
use tch::nn::VarStore;
use tch::Device;

use args::{Args, Settings};
use report::{Perplexities, Phase};
use train::{fine_tune, validation_ce, HiddenPairs, History, Objective};

/// The prompt every model continues.
const PROMPT: &str = "The secret of a happy life is";

/// Everything the fine-tunes share.
struct Setup {
    settings: Settings,
    teacher: LlamaForCausalLM,
    tokenizer: Tokenizer,
    data: TokenDataset,
    kept: LlamaKept,
    validation: Vec<TokenBatch>,
    cache: TokenCache,
    /// `(student layer, teacher layer)` of the hidden-state pairs (4 by default; none when the
    /// settings give them no weight).
    hidden_pairs: Vec<(usize, usize)>,
    /// The teacher's hidden states selected to the student's kept channels, for those pairs (its
    /// variables are never trained: an exact selection); `None` without hidden-state pairs.
    selection: Option<(VarStore, LinearSelectionAdapter)>,
    phases: Vec<Phase>,
    /// Lines for the report: the teacher check, the pruned shape, the cache.
    notes: Vec<String>,
}

/// A fresh pruned copy of the teacher: the same weights every time.
fn student(setup: &Setup) -> Result<(VarStore, PrunedLlama), Box<dyn Error>> {
    let vs = VarStore::new(Device::Cpu);
    let pruned = prune_llama(vs.root(), &setup.teacher, &setup.kept)?;
    Ok((vs, pruned))
}

/// Ranks channels, heads and layers on a few training batches; prints and returns the chosen shape.
fn prune_shape(
    teacher: &LlamaForCausalLM,
    data: &TokenDataset,
    settings: &Settings,
) -> Result<(LlamaKept, String), Box<dyn Error>> {
    let b = settings.train.batch;
    let calibration: Vec<TokenBatch> = (0..settings.prune.calibration_batches)
        .map(|i| data.train().batch(&(i * b..(i + 1) * b).collect::<Vec<_>>(), Device::Cpu))
        .collect::<Result<_, _>>()?;
    let importance = LlamaImportance::from_activations(teacher, calibration.iter().map(data::inputs))?;
    let kept = importance.keep(teacher.config(), &settings.keep_counts())?;
    let config = kept.student_config(teacher.config())?;
    let (before, after) = (ParameterCounts::of(teacher.config()), ParameterCounts::of(&config));
    let t = teacher.config();
    let line = format!(
        "pruned shape: hidden {} of {}, MLP {} of {}, KV groups {} of {}, layers {} of {} (kept {:?}); non-embedding parameters {} → {} ({:.1}%), total {} → {}",
        config.hidden_size,
        t.hidden_size,
        config.intermediate_size,
        t.intermediate_size,
        config.num_key_value_heads,
        t.num_key_value_heads,
        config.num_hidden_layers,
        t.num_hidden_layers,
        kept.layers,
        before.non_embedding,
        after.non_embedding,
        100.0 * after.non_embedding as f64 / before.non_embedding as f64,
        before.total(),
        after.total()
    );
    println!("{line}");
    Ok((kept, line))
}

/// Loads, checks and prunes the teacher, tokenizes the corpus and opens (or writes) the cache.
fn prepare(args: &Args, settings: Settings) -> Result<Setup, Box<dyn Error>> {
    let gguf = PathBuf::from(std::env::var("DISTILL_SMOLLM2_GGUF").map_err(|_| {
        "set DISTILL_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (`source scripts/text.sh`, or run `scripts/dev example lm`)"
    })?);
    let started = Instant::now();
    let teacher = text::load_gguf(&gguf, Device::Cpu)?.model;
    let tokenizer = Tokenizer::from_gguf(&GgufFile::open(&gguf)?)?;
    println!("teacher: {} loaded in {:.1} s", gguf.display(), started.elapsed().as_secs_f64());
    let mut notes = vec![check::teacher(&teacher)?];
    let started = Instant::now();
    let data = data::load(&settings, &tokenizer)?;
    let mut phases = vec![Phase {
        name: "tokenize the fortunes".into(),
        seconds: started.elapsed().as_secs_f64(),
        tokens: data.train().token_count() + data.validation().token_count(),
    }];
    let started = Instant::now();
    let (kept, shape) = prune_shape(&teacher, &data, &settings)?;
    notes.push(shape);
    let calibration_tokens = settings.prune.calibration_batches * settings.train.batch * settings.data.seq_len;
    phases.push(Phase {
        name: "importance + pruning".into(),
        seconds: started.elapsed().as_secs_f64(),
        tokens: calibration_tokens,
    });
    std::fs::create_dir_all(&args.out)?;
    let hidden_pairs = settings.hidden_pairs(&kept.layers);
    let dir = args.out.join("teacher-cache");
    let (cache, written, line) = cache::open_or_write(&dir, &gguf, &data, &teacher, &settings, &hidden_pairs)?;
    notes.push(line);
    phases.extend(written);
    let validation = data::validation(&data, &settings)?;
    let selection = match hidden_pairs.is_empty() {
        true => None,
        false => {
            let mut selection_vs = VarStore::new(Device::Cpu);
            let adapter = hidden_adapter(selection_vs.root(), &kept.to_record(teacher.config())?)?;
            // An exact selection, never trained: no gradient reaches it.
            selection_vs.freeze();
            Some((selection_vs, adapter))
        }
    };
    Ok(Setup { settings, teacher, tokenizer, data, kept, validation, cache, hidden_pairs, selection, phases, notes })
}

/// Validation perplexity of `model`, timed as a phase.
fn evaluate(
    phases: &mut Vec<Phase>,
    validation: &[TokenBatch],
    name: &str,
    model: &LlamaForCausalLM,
) -> Result<f64, Box<dyn Error>> {
    let started = Instant::now();
    let perplexity = validation_ce(model, validation)?.exp();
    let tokens = validation.iter().map(|b| b.attention_mask.sum(tch::Kind::Int64).int64_value(&[]) as usize).sum();
    phases.push(Phase { name: format!("validation, {name}"), seconds: started.elapsed().as_secs_f64(), tokens });
    println!("validation perplexity, {name}: {perplexity:.2}");
    Ok(perplexity)
}

/// A fine-tune's record, the student's variables and the student.
type Run = (History, VarStore, PrunedLlama);

/// One seed: both fine-tunes from fresh pruned copies over the same batches.
fn seed_run(setup: &mut Setup, seed: u64) -> Result<[Run; 2], Box<dyn Error>> {
    let order = data::order(&setup.data, &setup.settings, seed)?;
    let hidden = setup.selection.as_ref().map(|(_, adapter)| HiddenPairs { layers: &setup.hidden_pairs, adapter });
    let kd = Objective::Distill {
        cache: &setup.cache,
        weights: setup.settings.kd.clone(),
        temperature: setup.settings.cache.temperature,
        hidden,
    };
    let mut runs = Vec::new();
    for (label, objective) in [("CE only", Objective::CrossEntropy), ("KD (cache)", kd)] {
        let (vs, pruned) = student(setup)?;
        let label = format!("seed {seed}, {label}");
        let history =
            fine_tune(&label, &pruned.model, &vs, &setup.data, &order, &setup.validation, &setup.settings, &objective)?;
        runs.push((history, vs, pruned));
    }
    let [ce, kd]: [_; 2] = runs.try_into().map_err(|_| "two runs")?;
    for (name, run) in [("CE only", &ce), ("KD from the cache", &kd)] {
        let tokens = run.0.tokens;
        setup.phases.push(Phase { name: format!("fine-tune seed {seed}, {name}"), seconds: run.0.seconds, tokens });
    }
    Ok([ce, kd])
}

/// The greedy continuation of [`PROMPT`] by each model, as markdown lines.
fn continuations(setup: &Setup, models: &[(&str, &LlamaForCausalLM)]) -> Result<String, Box<dyn Error>> {
    let prompt: Vec<i64> = setup.tokenizer.encode(PROMPT, false)?.into_iter().map(i64::from).collect();
    let mut config = GenerateConfig::greedy(24);
    if let Some(eos) = setup.tokenizer.eos_id() {
        config = config.stop_at(i64::from(eos));
    }
    let mut md = format!("Greedy continuations of “{PROMPT}”:\n\n");
    for (name, model) in models {
        let out = model.generate(&prompt, &config)?;
        let ids: Vec<u32> = out.tokens.iter().map(|&t| t as u32).collect();
        let text = setup.tokenizer.decode(&ids, true)?.replace('\n', " ⏎ ");
        md += &format!("- {name} ({:.0} tokens/s): {PROMPT}**{text}**\n", out.tokens_per_second);
    }
    Ok(md)
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let tuned = distill::tune_allocator();
    tch::set_num_threads(args.threads);
    let settings = Settings::of(&args)?;
    println!("{} threads, allocator tuned: {tuned}; settings: {settings:?}", args.threads);
    let mut setup = prepare(&args, settings)?;
    let teacher_ppl = evaluate(&mut setup.phases, &setup.validation, "teacher", &setup.teacher)?;
    let (_pruned_vs, pruned) = student(&setup)?;
    let pruned_ppl = evaluate(&mut setup.phases, &setup.validation, "pruned, before fine-tuning", &pruned.model)?;
    let mut perplexities = Perplexities { teacher: teacher_ppl, pruned: pruned_ppl, ce: Vec::new(), kd: Vec::new() };
    let mut first = None;
    for seed in 0..args.seeds.max(1) {
        let [ce, kd] = seed_run(&mut setup, seed)?;
        perplexities.ce.push(ce.0.validation.last().map_or(f64::NAN, |v| v.1.exp()));
        perplexities.kd.push(kd.0.validation.last().map_or(f64::NAN, |v| v.1.exp()));
        first.get_or_insert((ce, kd));
    }
    let (ce, kd) = first.ok_or("no seed ran")?;
    let models = [
        ("teacher", &setup.teacher),
        ("pruned, before fine-tuning", &pruned.model),
        ("CE only (seed 0)", &ce.2.model),
        ("KD from the cache (seed 0)", &kd.2.model),
    ];
    let generated = continuations(&setup, &models)?;
    kd.1.save(args.out.join("student_kd.safetensors"))?;
    kd.2.record.save(args.out.join("student.prune.safetensors"))?;
    write_report(&args, &setup, &perplexities, &ce.0, &kd.0, &generated, started.elapsed().as_secs_f64())
}

fn write_report(
    args: &Args,
    setup: &Setup,
    perplexities: &Perplexities,
    ce: &History,
    kd: &History,
    generated: &str,
    seconds: f64,
) -> Result<(), Box<dyn Error>> {
    let s = &setup.settings;
    let header = format!(
        "SmolLM2-135M-Instruct pruned and fine-tuned on fortunes: {} steps × {} sequences × {} tokens, AdamW lr {}, KD = {} · top-{} KL (T = {}) + {} · CE{}; {} seed(s), {} threads, run time {:.0} s",
        s.train.steps, s.train.batch, s.data.seq_len, s.train.lr, s.kd.top_k_kl, s.cache.k, s.cache.temperature, s.kd.ce,
        if setup.hidden_pairs.is_empty() {
            String::new()
        } else {
            format!(" + {} · cosine distance of the (student, teacher) layer outputs {:?}", s.kd.hidden, setup.hidden_pairs)
        },
        perplexities.ce.len(), args.threads, seconds
    );
    let notes: String = setup.notes.iter().map(|n| format!("- {n}\n")).collect();
    let md = report::markdown(&header, perplexities, &setup.phases) + "\n" + &notes + "\n" + generated;
    let results = args.out.join("results.md");
    std::fs::write(&results, &md)?;
    println!("\n{md}");
    let png = args.out.join("loss_curves.png");
    let text = report::plot(&png, ce, kd)?;
    println!(
        "wrote {}, {}{} and the KD student (student_kd.safetensors + its prune record)",
        results.display(),
        png.display(),
        if text { "" } else { " (no font: no labels)" }
    );
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
