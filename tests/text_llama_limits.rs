//! The limits of a LLaMA model's inputs: an empty batch or empty sequences, and the context length
//! (`max_position_embeddings`), which the forwards compute past, as transformers' do, and `generate`
//! does not run past.

use distill::nn::VarStore;
use distill::text::{GenerateConfig, KvCache, LlamaConfig, LlamaForCausalLM, LlamaInputs, ModelError};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

/// A random model of vocabulary 32 whose context is `context` positions.
fn model(context: i64) -> (VarStore, LlamaForCausalLM) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let config = LlamaConfig {
        vocab_size: 32,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 8,
        max_position_embeddings: context,
        ..Default::default()
    };
    let model = LlamaForCausalLM::new(vs.root(), &config).unwrap();
    (vs, model)
}

fn model_error(error: DistillError) -> ModelError {
    match error {
        DistillError::Text(inner) => *inner.downcast::<ModelError>().expect("a ModelError"),
        other => panic!("expected DistillError::Text, got {other:?}"),
    }
}

#[test]
fn empty_batches_and_empty_sequences_are_both_refused() {
    let (_vs, model) = model(16);
    for shape in [[0_i64, 3], [2, 0], [0, 0]] {
        let ids = Tensor::zeros(shape, (Kind::Int64, Device::Cpu));
        let error = model.forward(&ids).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&format!("input_ids {shape:?} hold no token")), "{message}");
        match model_error(error) {
            ModelError::NoTokens { shape: got } => assert_eq!(got, shape),
            other => panic!("{shape:?}: {other:?}"),
        }
        let inputs = LlamaInputs::new(&ids);
        assert!(matches!(model_error(model.forward_hidden(&inputs).unwrap_err()), ModelError::NoTokens { .. }));
        // Refused before the cache is touched: it still takes a batch of any size afterwards.
        let mut cache = KvCache::new();
        let error = tch::no_grad(|| model.forward_cached(&inputs, &mut cache)).unwrap_err();
        assert!(matches!(model_error(error), ModelError::NoTokens { .. }));
        assert_eq!(cache.len(), 0);
        let one = Tensor::from_slice2(&[[1_i64, 2], [3, 4], [5, 6]]);
        let logits = tch::no_grad(|| model.forward_cached(&LlamaInputs::new(&one), &mut cache)).unwrap();
        assert_eq!(logits.size(), [3, 2, 32]);
    }
}

#[test]
fn the_forward_computes_past_the_context_as_transformers_does() {
    // Documented: positions past `max_position_embeddings` are computed, not refused. The first
    // eight positions do not depend on the later ones (causal attention), so they equal the run of
    // the first eight tokens alone up to rounding. Each logit is a chain of about 10 f32 dot
    // products of K ≤ 24 terms (ε = 2⁻²⁴ ≈ 6e-8), whose summation order may differ between the
    // two runs' kernels: at most K·ε ≈ 1.4e-6 of the scale per op, 1.4e-5 over the chain, which the
    // bound of 1e-4 of the largest logit (tests/text_llama.rs's parity bound) covers on any CPU.
    let (_vs, model) = model(8);
    let ids = Tensor::arange(12, (Kind::Int64, Device::Cpu)).view([1, 12]);
    let long = tch::no_grad(|| model.forward(&ids)).unwrap();
    assert_eq!(long.size(), [1, 12, 32]);
    assert!(bool::try_from(long.isfinite().all()).unwrap());
    let short = tch::no_grad(|| model.forward(&ids.narrow(1, 0, 8))).unwrap();
    let scale = short.abs().max().double_value(&[]);
    let difference = (long.narrow(1, 0, 8) - &short).abs().max().double_value(&[]) / scale;
    assert!(scale > 0.0 && difference <= 1e-4, "{difference:e}");
}

#[test]
fn generate_never_runs_the_model_past_its_context() {
    let context = 8;
    let (_vs, model) = model(context);
    let prompt = [3_i64, 1, 4, 1, 5];
    // The prompt fills positions 0..5 and the last new token is never fed back: 4 new tokens use
    // positions 0..8, all inside the context (transformers' `generate` warns from one more on).
    let fits = model.generate(&prompt, &GenerateConfig::greedy(4)).unwrap();
    assert_eq!(fits.tokens.len(), 4);
    // Those tokens are the full forward's greedy choices: the bound changes no value.
    let mut sequence = prompt.to_vec();
    for &token in &fits.tokens {
        let ids = Tensor::from_slice(&sequence).view([1, -1]);
        let logits = tch::no_grad(|| model.forward(&ids)).unwrap();
        assert_eq!(logits.get(0).get(-1).argmax(0, false).int64_value(&[]), token);
        sequence.push(token);
    }

    let error = model.generate(&prompt, &GenerateConfig::greedy(5)).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("would run the model at 9 positions, past its context of 8"), "{message}");
    assert!(message.contains("ask for at most 4 new tokens"), "{message}");
    match model_error(error) {
        ModelError::ContextLength { prompt: 5, new_tokens: 5, context: 8 } => {}
        other => panic!("{other:?}"),
    }
    // A prompt that fills the context takes one new token; a longer one takes none.
    assert_eq!(model.generate(&[1; 8], &GenerateConfig::greedy(1)).unwrap().tokens.len(), 1);
    let error = model.generate(&[1; 9], &GenerateConfig::greedy(1)).unwrap_err();
    assert!(error.to_string().contains("a prompt of 9 tokens is longer than the model's context of 8"), "{error}");
    assert!(matches!(model_error(error), ModelError::ContextLength { prompt: 9, new_tokens: 1, context: 8 }));
    // Any number of new tokens is refused as a whole, before any work, sampling included.
    for asked in [6, 1000] {
        let error = model.generate(&prompt, &GenerateConfig::sample(asked, 1.0, 1.0, 0)).unwrap_err();
        assert!(matches!(model_error(error), ModelError::ContextLength { .. }), "{asked}");
    }
    // No new token runs nothing, whatever the prompt's length.
    assert!(model.generate(&[1; 9], &GenerateConfig::greedy(0)).unwrap().tokens.is_empty());
}

#[test]
fn generating_until_a_stop_token_ends_at_the_context() {
    let (_vs, model) = model(8);
    let prompt = [3_i64, 1, 4, 1, 5];
    let bounded = model.generate(&prompt, &GenerateConfig::greedy(4)).unwrap().tokens;
    // `usize::MAX` with no stop token reached: as many tokens as fit (8 + 1 − 5), the same ones.
    let until = model.generate(&prompt, &GenerateConfig::greedy(usize::MAX)).unwrap().tokens;
    assert_eq!(until, bounded);
    // A stop token that comes first still ends it there.
    let until_stop = model.generate(&prompt, &GenerateConfig::greedy(usize::MAX).stop_at(bounded[1])).unwrap();
    let first = bounded.iter().position(|&t| t == bounded[1]).unwrap();
    assert_eq!(until_stop.tokens, bounded[..=first]);
    let error = model.generate(&[1; 9], &GenerateConfig::greedy(usize::MAX)).unwrap_err();
    assert!(matches!(model_error(error), ModelError::ContextLength { prompt: 9, .. }));
}

#[test]
fn a_context_below_one_is_refused_when_the_model_is_built() {
    let vs = VarStore::new(Device::Cpu);
    for context in [0, -4] {
        let config = LlamaConfig {
            vocab_size: 32,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 8,
            max_position_embeddings: context,
            ..Default::default()
        };
        let error = model_error(LlamaForCausalLM::new(vs.root(), &config).unwrap_err());
        assert!(
            matches!(error, ModelError::BelowOne { what: "max_position_embeddings", value } if value == context),
            "{error:?}"
        );
    }
}
