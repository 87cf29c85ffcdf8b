//! Width and depth pruning of a small random decoder: an identity pruning copies the teacher
//! exactly, a real one equals the teacher with the dropped parts zeroed, the record's adapter
//! selects exactly, a short top-k distillation recovers the teacher, and a saved student resumes
//! bit for bit.

mod common;
mod text_model;

use common::bounds::{compare_tensors, record, sum_depth, U_F32};
use distill::adapter::{linear_selection_adapter, Adapter};
use distill::criterion::{TokenCriterion, TopKKl, TopKTail};
use distill::nn::{Module, OptimizerConfig, VarStore};
use distill::prune::PruneRecord;
use distill::text::prune::{
    hidden_adapter, layer_map, prune_llama, student_config, KeepCounts, LlamaImportance, LlamaKept, ParameterCounts,
};
use distill::text::{self, GgufFile, LlamaConfig, LlamaForCausalLM, LlamaInputs, Tokenizer};
use tch::{Device, Kind, Tensor};

const VOCAB: i64 = 256;

fn config(tied: bool, bias: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: VOCAB,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 1e4,
        tie_word_embeddings: tied,
        attention_bias: bias,
        mlp_bias: bias,
        ..Default::default()
    }
}

/// A random teacher whose every weight matters: embeddings large enough for peaked next-token
/// distributions, norm weights and biases away from their neutral initial values.
fn teacher(config: &LlamaConfig, seed: i64) -> (VarStore, LlamaForCausalLM) {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let model = LlamaForCausalLM::new(vs.root(), config).unwrap();
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    // In name order: the map's own order changes from run to run, and so would the weights drawn.
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut var) in variables {
            if name.contains("embed_tokens") || name.starts_with("lm_head") {
                let _ = var.normal_(0.0, 0.3);
            } else if name.contains("norm") {
                let _ = var.uniform_(0.5, 1.5);
            } else if name.ends_with("bias") {
                let _ = var.uniform_(-0.1, 0.1);
            } else {
                let _ = var.normal_(0.0, 0.1);
            }
        }
    });
    (vs, model)
}

fn ids(batch: i64, len: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(VOCAB, [batch, len], (Kind::Int64, Device::Cpu))
}

fn logits(model: &LlamaForCausalLM, ids: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward(ids)).unwrap()
}

#[test]
fn keeping_everything_copies_the_teacher_bit_for_bit() {
    for (tied, bias) in [(true, false), (false, true)] {
        let config = config(tied, bias);
        let (_tvs, teacher) = teacher(&config, 1);
        let calibration = ids(2, 12, 2);
        let importance = LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&calibration)]).unwrap();
        let kept = importance.keep(&config, &KeepCounts::all(&config)).unwrap();
        assert_eq!(kept, LlamaKept::all(&config), "everything kept, in order");
        let vs = VarStore::new(Device::Cpu);
        let student = prune_llama(vs.root(), &teacher, &kept).unwrap();
        assert_eq!(student.model.config(), &config);
        let xs = ids(3, 10, 3);
        assert!(logits(&student.model, &xs).equal(&logits(&teacher, &xs)), "tied {tied}, bias {bias}");
    }
}

/// The teacher with what `kept` drops zeroed, hidden channels aside: a dropped MLP channel's
/// `down_proj` column, a dropped key-value head's query heads' `o_proj` columns, and a dropped
/// layer's `o_proj` and `down_proj` (the layer then adds nothing: its output is its input).
fn zero_dropped(teacher: &LlamaForCausalLM, kept: &LlamaKept) {
    let config = teacher.config();
    let (groups, d) = (config.num_key_value_groups(), config.head_dim);
    tch::no_grad(|| {
        for (t, layer) in teacher.model.layers.iter().enumerate() {
            let (mut o, mut down) = (layer.self_attn.o_proj.ws.shallow_clone(), layer.mlp.down_proj.ws.shallow_clone());
            let Some(i) = kept.layers.iter().position(|&l| l == t as i64) else {
                let _ = o.zero_();
                let _ = down.zero_();
                for bias in [&layer.self_attn.o_proj.bs, &layer.mlp.down_proj.bs].into_iter().flatten() {
                    let _ = bias.shallow_clone().zero_();
                }
                continue;
            };
            for c in 0..config.intermediate_size {
                if !kept.intermediate[i].contains(&c) {
                    let _ = down.narrow(1, c, 1).zero_();
                }
            }
            for h in 0..config.num_key_value_heads {
                if !kept.kv_heads[i].contains(&h) {
                    let _ = o.narrow(1, h * groups * d, groups * d).zero_();
                }
            }
        }
    });
}

#[test]
fn a_pruned_student_equals_the_teacher_with_the_dropped_parts_zeroed() {
    let config = config(false, true);
    let (_tvs, teacher) = teacher(&config, 4);
    let calibration = ids(4, 16, 5);
    let importance = LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&calibration)]).unwrap();
    let counts = KeepCounts { hidden: 64, intermediate: 48, kv_heads: 1, layers: 3 };
    let kept = importance.keep(&config, &counts).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let student = prune_llama(vs.root(), &teacher, &kept).unwrap();
    let xs = ids(2, 10, 6);
    let before = logits(&teacher, &xs);
    zero_dropped(&teacher, &kept);
    let (got, want) = (logits(&student.model, &xs), logits(&teacher, &xs));
    // Both compute the same sums, the teacher's with extra terms that are exactly zero: they differ
    // only in the order of summation. Every logit is a chain of dot products (at most 128 terms,
    // `sum_depth` roundings each) through 4 layers with about 10 sequential operations each, each
    // adding its rounding relative to the logits' scale (RMSNorm rescales every layer's input, so
    // relative errors add rather than multiply): 40 · sum_depth(128) · u · max|logit|, doubled for
    // the attention softmax's exponentials.
    let bound = 2.0 * 40.0 * sum_depth(128) * U_F32 * want.abs().max().double_value(&[]);
    let comparison = compare_tensors(&got, &want, bound);
    record("pruned vs zeroed teacher", &comparison);
    assert!(comparison.passes(), "{comparison}");
    // The bound rejects a real difference: the unzeroed teacher is far outside it.
    assert!(!compare_tensors(&got, &before, bound).passes(), "the bound must tell the zeroed parts apart");
}

#[test]
fn the_record_gives_an_exact_hidden_adapter_and_the_layer_map() {
    let config = config(true, false);
    let (_tvs, teacher) = teacher(&config, 7);
    let calibration = ids(4, 16, 8);
    let importance = LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&calibration)]).unwrap();
    let counts = KeepCounts { hidden: 40, intermediate: 64, kv_heads: 1, layers: 2 };
    let kept = importance.keep(&config, &counts).unwrap();
    assert_eq!(kept.layers.len(), 2);
    let vs = VarStore::new(Device::Cpu);
    let student = prune_llama(vs.root(), &teacher, &kept).unwrap();
    assert_eq!(layer_map(&student.record).unwrap(), [(0, kept.layers[0] as usize), (1, kept.layers[1] as usize)]);
    let adapter = hidden_adapter(vs.root() / "adapter", &student.record).unwrap();
    let hidden = tch::no_grad(|| teacher.forward_hidden(&LlamaInputs::new(&ids(2, 9, 9)))).unwrap();
    let index = Tensor::from_slice(&kept.hidden);
    for (i, t) in layer_map(&student.record).unwrap() {
        let teacher_out = &hidden.layers[t];
        let selected = tch::no_grad(|| adapter.forward(teacher_out));
        assert!(selected.equal(&teacher_out.index_select(-1, &index)), "student layer {i} ↔ teacher layer {t}");
    }
    assert!(
        adapter.f_adapt(&Tensor::zeros([1, 2, 40], (Kind::Float, Device::Cpu)), false).is_err(),
        "a student-width input"
    );
    // The hidden channels are the same ones everywhere: embeddings, norms, projections' columns.
    let (s, t) = (&student.model.model, &teacher.model);
    assert!(s.embed_tokens.ws.equal(&t.embed_tokens.ws.index_select(1, &index)));
    assert!(s.norm.weight.equal(&t.norm.weight.index_select(0, &index)));
    let (sl, tl) = (&s.layers[1], &t.layers[kept.layers[1] as usize]);
    assert!(sl.post_attention_layernorm.weight.equal(&tl.post_attention_layernorm.weight.index_select(0, &index)));
    let inner = Tensor::from_slice(&kept.intermediate[1]);
    let up = tl.mlp.up_proj.ws.index_select(0, &inner).index_select(1, &index);
    assert!(sl.mlp.up_proj.ws.equal(&up));
    assert!(student.model.lm_head.ws.equal(&s.embed_tokens.ws), "tied: the head reads the pruned embedding");
}

#[test]
fn parameter_counts_match_the_variables() {
    for (tied, bias) in [(true, false), (false, true)] {
        let config = config(tied, bias);
        let (tvs, teacher) = teacher(&config, 10);
        let count = |vs: &VarStore, embedding: bool| -> i64 {
            let is_embedding = |name: &str| name.contains("embed_tokens") || name.starts_with("lm_head");
            vs.variables()
                .iter()
                .filter(|(name, _)| is_embedding(name) == embedding)
                .map(|(_, v)| v.numel() as i64)
                .sum()
        };
        let counts = ParameterCounts::of(&config);
        assert_eq!((counts.embedding, counts.non_embedding), (count(&tvs, true), count(&tvs, false)));
        let kept = LlamaImportance::from_weights(&teacher)
            .unwrap()
            .keep(&config, &KeepCounts { hidden: 32, intermediate: 64, kv_heads: 1, layers: 2 })
            .unwrap();
        let vs = VarStore::new(Device::Cpu);
        let student = prune_llama(vs.root(), &teacher, &kept).unwrap();
        let pruned = ParameterCounts::of(student.model.config());
        assert_eq!((pruned.embedding, pruned.non_embedding), (count(&vs, true), count(&vs, false)));
        assert!(pruned.non_embedding < counts.non_embedding / 4);
    }
}

/// One distillation step: top-k KL with the exact tail against the teacher's live logits.
fn kd_loss(student: &LlamaForCausalLM, teacher: &LlamaForCausalLM, xs: &Tensor) -> Tensor {
    let top = TopKTail::f_encode(&logits(teacher, xs), 32, 1.0).unwrap();
    TopKKl::new(1.0).f_loss_masked(&student.forward(xs).unwrap(), &top, None).unwrap()
}

#[test]
fn a_short_distillation_lowers_the_loss_and_a_saved_student_resumes_bit_for_bit() {
    let config = config(true, false);
    let (_tvs, teacher) = teacher(&config, 11);
    let calibration = ids(8, 16, 12);
    let importance = LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&calibration)]).unwrap();
    let counts = KeepCounts { hidden: 48, intermediate: 64, kv_heads: 1, layers: 3 };
    let kept = importance.keep(&config, &counts).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let student = prune_llama(vs.root(), &teacher, &kept).unwrap();
    let batches: Vec<Tensor> = (0..4).map(|i| ids(8, 16, 100 + i)).collect();
    let mut adam = distill::nn::Adam::default().build(&vs, 3e-3).unwrap();
    let mut losses = Vec::new();
    for step in 0..40 {
        let loss = kd_loss(&student.model, &teacher, &batches[step % batches.len()]);
        losses.push(loss.double_value(&[]));
        adam.backward_step(&loss);
    }
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&losses[..4]), mean(&losses[losses.len() - 4..]));
    eprintln!("top-k KD loss: first 4 steps {first:.4}, last 4 steps {last:.4}");
    assert!(last < 0.7 * first, "the KD loss must fall by a real margin: {first} → {last}");

    // Save the student (weights + prune record), build it fresh from the teacher's config and the
    // record, load: the same model.
    let dir = std::env::temp_dir().join(format!("distill-text-prune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (weights, record_file) = (dir.join("student.safetensors"), dir.join("student.prune.safetensors"));
    vs.save(&weights).unwrap();
    student.record.save(&record_file).unwrap();
    let record = PruneRecord::load(&record_file).unwrap();
    assert_eq!(record, student.record);
    let fresh_config = student_config(teacher.config(), &record).unwrap();
    assert_eq!(&fresh_config, student.model.config());
    let mut fresh_vs = VarStore::new(Device::Cpu);
    let fresh = LlamaForCausalLM::new(fresh_vs.root(), &fresh_config).unwrap();
    fresh_vs.load(&weights).unwrap();
    let xs = ids(2, 11, 13);
    assert!(logits(&fresh, &xs).equal(&logits(&student.model, &xs)), "reloaded logits");
    assert_eq!(LlamaKept::from_record(&record, teacher.config()).unwrap(), kept);

    // One more step each, from fresh optimizers on the same batch: identical weights.
    for (vs, model) in [(&vs, &student.model), (&fresh_vs, &fresh)] {
        let mut adam = distill::nn::Adam::default().build(vs, 3e-3).unwrap();
        adam.backward_step(&kd_loss(model, &teacher, &batches[0]));
    }
    let (a, b) = (vs.variables(), fresh_vs.variables());
    assert_eq!(a.len(), b.len());
    for (name, var) in &a {
        assert!(var.equal(&b[name]), "`{name}` after one more step");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_shapes_are_errors() {
    let config = config(true, false);
    let (_tvs, teacher) = teacher(&config, 14);
    let importance = LlamaImportance::from_weights(&teacher).unwrap();
    let all = KeepCounts::all(&config);
    let message = |counts: KeepCounts| importance.keep(&config, &counts).unwrap_err().to_string();
    assert!(message(KeepCounts { kv_heads: 3, ..all }).contains("cannot keep 3 key-value heads"));
    assert!(message(KeepCounts { layers: 0, ..all }).contains("cannot keep 0 layers"));
    assert!(message(KeepCounts { hidden: 65, ..all }).contains("hidden channels"));
    assert!(message(KeepCounts { intermediate: -1, ..all }).contains("MLP channels"));

    let vs = VarStore::new(Device::Cpu);
    let prune = |kept: &LlamaKept| prune_llama(vs.root() / "s", &teacher, kept).unwrap_err().to_string();
    let base = LlamaKept::all(&config);
    let cases = [
        (LlamaKept { hidden: vec![0, 64], ..base.clone() }, "keeps hidden channel 64"),
        (LlamaKept { hidden: vec![3, 3], ..base.clone() }, "twice"),
        (LlamaKept { hidden: vec![], ..base.clone() }, "zero hidden channels"),
        (LlamaKept { layers: vec![2, 1, 0, 3], ..base.clone() }, "strictly increasing"),
        (LlamaKept { layers: vec![0, 1], ..base.clone() }, "2 layers are kept but 4 lists"),
        (
            LlamaKept { kv_heads: vec![vec![0], vec![0, 1], vec![1], vec![0]], ..base.clone() },
            "as many key-value heads",
        ),
        (LlamaKept { kv_heads: vec![vec![2]; 4], ..base.clone() }, "keeps key-value head 2"),
    ];
    for (kept, expected) in cases {
        let error = prune(&kept);
        assert!(error.contains(expected), "`{error}` does not say `{expected}`");
    }

    // A record is checked against the teacher it is used with.
    let student = prune_llama(vs.root() / "ok", &teacher, &base).unwrap();
    let other = LlamaConfig { intermediate_size: 96, ..config.clone() };
    let error = student_config(&other, &student.record).unwrap_err().to_string();
    assert!(error.contains("model.layers.0.mlp") && error.contains("[96, 64]"), "{error}");
    assert!(hidden_adapter(vs.root() / "a", &PruneRecord::new()).unwrap_err().to_string().contains("no `hidden`"));
    for (source, kept) in [(4, vec![4]), (4, vec![1, 1]), (4, vec![]), (0, vec![0])] {
        assert!(linear_selection_adapter(vs.root() / "b", source, &kept).is_err(), "{kept:?} of {source}");
    }
    let no_data: [LlamaInputs; 0] = [];
    assert!(LlamaImportance::from_activations(&teacher, no_data).is_err(), "importances need data");
    let other_importance = LlamaImportance::from_weights(&teacher).unwrap();
    assert!(other_importance.keep(&other, &KeepCounts::all(&other)).is_err(), "importances of another shape");
}

/// Calibration text: the first fortunes of the system's corpus when installed, else a fixed text.
fn calibration_text() -> (String, &'static str) {
    let dir = "/usr/share/games/fortunes";
    let documents = text::data::fortune_files(dir)
        .and_then(|files| text::data::read_documents(&files, Some("%")))
        .unwrap_or_default();
    if documents.len() >= 64 {
        return (documents.iter().take(200).map(|d| d.text.as_str()).collect::<Vec<_>>().join("\n"), "fortunes");
    }
    let fixed = "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single \
                 step. Knowledge is knowing that a tomato is a fruit; wisdom is not putting it in a fruit salad. ";
    (fixed.repeat(40), "a fixed English text")
}

#[test]
fn smollm2_pruned_to_half_its_non_embedding_parameters() {
    let Some(path) = text_model::smollm2_or_skip("smollm2_pruned_to_half_its_non_embedding_parameters") else {
        return;
    };
    let teacher = text::load_gguf(&path, Device::Cpu).unwrap().model;
    let config = teacher.config().clone();
    // SmolLM2-135M's published shape: 30 layers of hidden 576, 9 query / 3 key-value heads of 64,
    // MLP 1536, vocabulary 49 152, tied. Per layer: q and o 576·576 each, k and v 576·192 each,
    // gate/up/down 576·1536 each, two norms of 576: 3 540 096; ×30 plus the final norm.
    let before = ParameterCounts::of(&config);
    assert_eq!(before.non_embedding, 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576) + 576);
    assert_eq!((before.non_embedding, before.embedding), (106_203_456, 49_152 * 576));

    let tokenizer = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let (text, source) = calibration_text();
    let tokens: Vec<i64> = tokenizer.encode(&text, false).unwrap().into_iter().map(i64::from).collect();
    let (batch, len) = (4_i64, 64_i64);
    assert!(tokens.len() as i64 >= batch * len, "{} calibration tokens", tokens.len());
    let calibration = Tensor::from_slice(&tokens[..(batch * len) as usize]).reshape([batch, len]);
    let importance = LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&calibration)]).unwrap();
    // Minitron's proportions at about half the non-embedding parameters: hidden 576 → 512, MLP
    // 1536 → 1024, 3 → 2 key-value heads (9 → 6 query heads), 30 → 25 layers.
    let counts = KeepCounts { hidden: 512, intermediate: 1024, kv_heads: 2, layers: 25 };
    let kept = importance.keep(&config, &counts).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let student = prune_llama(vs.root(), &teacher, &kept).unwrap();
    let after = ParameterCounts::of(student.model.config());
    let numel = |vs: &VarStore, embedding: bool| -> i64 {
        let variables = vs.variables();
        variables.iter().filter(|(n, _)| n.contains("embed_tokens") == embedding).map(|(_, v)| v.numel() as i64).sum()
    };
    assert_eq!((after.non_embedding, after.embedding), (numel(&vs, false), numel(&vs, true)));
    // Per layer: q and o 512·384 each, k and v 512·128 each, MLP 3·512·1024, norms 2·512.
    assert_eq!(after.non_embedding, 25 * (2 * 512 * 384 + 2 * 512 * 128 + 3 * 512 * 1024 + 2 * 512) + 512);
    let ratio = after.non_embedding as f64 / before.non_embedding as f64;
    assert!((0.45..=0.55).contains(&ratio), "{ratio}");
    let shape = student.model.config();
    let dropped: Vec<i64> = (0..30).filter(|l| !kept.layers.contains(l)).collect();
    eprintln!(
        "SmolLM2 pruned on {} calibration tokens from {source}: {:?} → hidden {}, MLP {}, {} query / {} key-value \
         heads, {} layers (dropped layers {dropped:?}); non-embedding parameters {} → {} ({:.1}%), embedding {} → {}",
        batch * len,
        (config.hidden_size, config.intermediate_size, config.num_attention_heads, config.num_key_value_heads),
        shape.hidden_size,
        shape.intermediate_size,
        shape.num_attention_heads,
        shape.num_key_value_heads,
        shape.num_hidden_layers,
        before.non_embedding,
        after.non_embedding,
        100.0 * ratio,
        before.embedding,
        after.embedding,
    );
    let xs = calibration.narrow(0, 0, 1);
    let top = TopKTail::f_encode(&logits(&teacher, &xs), 64, 1.0).unwrap();
    let kd = TopKKl::new(1.0).f_loss_masked(&logits(&student.model, &xs), &top, None).unwrap().double_value(&[]);
    eprintln!("top-64 KL of the pruned student to its teacher before distillation: {kd:.3}");
    assert!(kd.is_finite() && kd > 0.0);
}

/// The scores by kind: hidden channels, MLP channels, key-value heads, layers.
fn scores(importance: &LlamaImportance) -> [Vec<f64>; 4] {
    [
        importance.hidden.clone(),
        importance.intermediate.concat(),
        importance.kv_heads.concat(),
        importance.layers.clone(),
    ]
}

/// The worst ratio to the bound over the kinds of scores, each bound relative to the largest score
/// of its kind.
fn worst(got: &LlamaImportance, want: &LlamaImportance, relative: f64) -> common::bounds::Comparison {
    let comparisons = scores(got).into_iter().zip(scores(want)).map(|(g, w)| {
        let scale = w.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        common::bounds::compare(&g, &w, |_| relative * scale)
    });
    comparisons.max_by(|a, b| a.ratio.total_cmp(&b.ratio)).unwrap()
}

#[test]
fn padding_is_left_out_of_the_importances() {
    let config = config(false, false);
    let (_tvs, teacher) = teacher(&config, 15);
    let (long, short) = (ids(1, 12, 16), ids(1, 8, 17));
    let padded = Tensor::cat(
        &[long.shallow_clone(), Tensor::cat(&[&short, &Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu))], 1)],
        0,
    );
    let mask = Tensor::cat(
        &[
            Tensor::ones([1, 12], (Kind::Int64, Device::Cpu)),
            Tensor::cat(
                &[Tensor::ones([1, 8], (Kind::Int64, Device::Cpu)), Tensor::zeros([1, 4], (Kind::Int64, Device::Cpu))],
                1,
            ),
        ],
        0,
    );
    let masked =
        LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&padded).attention_mask(&mask)]).unwrap();
    let separate =
        LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&long), LlamaInputs::new(&short)]).unwrap();
    let unmasked = LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&padded)]).unwrap();
    // The same tokens' activations, computed in another batch and through another mask: they differ
    // by f32 rounding only — sums of at most 128 terms (`sum_depth` roundings each) chained through
    // 4 layers of about 10 operations, each rounding relative to the activations' scale (RMSNorm
    // rescales every layer's input) — and a mean of absolute values or norms of them moves by as
    // much relative to the largest score of its kind. Doubled for the softmax's exponentials.
    let relative = 2.0 * 40.0 * sum_depth(128) * U_F32;
    let comparison = worst(&masked, &separate, relative);
    record("masked vs separate importances", &comparison);
    assert!(comparison.passes(), "{comparison}");
    // Counting the padding (no mask) moves the scores far outside the bound.
    let unmasked = worst(&unmasked, &separate, relative);
    assert!(!unmasked.passes(), "{unmasked}");
}
