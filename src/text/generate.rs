//! Text generation with a key/value cache: greedy, or sampled with temperature and nucleus (top-p)
//! filtering from a seeded generator.

use std::time::{Duration, Instant};

use distill_runtime::__private::SplitMix64;
use tch::{Device, Kind, Tensor};

use super::ModelError;
use super::{KvCache, LlamaForCausalLM, LlamaInputs};
use crate::error::Result;

/// How the next token is chosen from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (the lowest id among equals), as transformers' `do_sample=False`.
    Greedy,
    /// A draw from `softmax(logits / temperature)` restricted to the most likely tokens whose
    /// probabilities add up to `top_p` (at least one token): the distribution of transformers'
    /// `do_sample=True` with this `temperature` and `top_p` and `top_k=0`. There is no top-k
    /// filter, so it differs from transformers' defaults, which keep only the 50 most likely
    /// tokens. The draws come from a generator seeded with `seed` (not libtorch's global one, so
    /// not the tokens transformers draws), so a generation is reproducible and leaves other random
    /// streams untouched.
    Sample {
        /// Divides the logits (> 0; below 1 sharpens, above 1 flattens).
        temperature: f64,
        /// Probability mass kept, in (0, 1]; 1 keeps every token.
        top_p: f64,
        /// Seed of the generator.
        seed: u64,
    },
}

/// What [`LlamaForCausalLM::generate`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    /// Tokens to generate at most. The model is never run past its context
    /// (`max_position_embeddings`, `C`): the prompt and every generated token but the last are fed
    /// to it, so a prompt of `P ≤ C` tokens takes at most `C + 1 − P` new tokens, and more is
    /// [`ModelError::ContextLength`]. `usize::MAX` generates until a stop token or the end of the
    /// context, whichever comes first.
    pub max_new_tokens: usize,
    /// How each token is chosen.
    pub sampling: Sampling,
    /// Generation stops after any of these (included in the output), e.g. the end-of-sequence token.
    pub stop_tokens: Vec<i64>,
}

impl GenerateConfig {
    /// `max_new_tokens` greedy tokens, no stop token.
    pub fn greedy(max_new_tokens: usize) -> GenerateConfig {
        GenerateConfig { max_new_tokens, sampling: Sampling::Greedy, stop_tokens: Vec::new() }
    }

    /// `max_new_tokens` sampled tokens, no stop token.
    pub fn sample(max_new_tokens: usize, temperature: f64, top_p: f64, seed: u64) -> GenerateConfig {
        GenerateConfig {
            max_new_tokens,
            sampling: Sampling::Sample { temperature, top_p, seed },
            stop_tokens: Vec::new(),
        }
    }

    /// With generation stopping after `token`.
    pub fn stop_at(mut self, token: i64) -> GenerateConfig {
        self.stop_tokens.push(token);
        self
    }
}

/// The result of [`LlamaForCausalLM::generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The generated tokens (without the prompt).
    pub tokens: Vec<i64>,
    /// Wall time of the whole generation, the prompt's forward included.
    pub elapsed: Duration,
    /// Generated tokens per second of `elapsed`.
    pub tokens_per_second: f64,
}

impl LlamaForCausalLM {
    /// Continues `prompt` (token ids) with up to `config.max_new_tokens` tokens, one forward per
    /// token after the prompt's, reusing the keys and values of the tokens before it.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), distill::DistillError> {
    /// use distill::text::{self, GenerateConfig};
    /// let teacher = text::load_pretrained("SmolLM2-135M", tch::Device::Cpu)?;
    /// let out = teacher.model.generate(&[1, 504, 3458], &GenerateConfig::greedy(20))?;
    /// println!("{:?} at {:.1} tokens/s", out.tokens, out.tokens_per_second);
    /// # Ok(()) }
    /// ```
    ///
    /// Unlike the forwards, which compute positions past the context as transformers' forward
    /// does, generation never runs the model past `max_position_embeddings` (where transformers'
    /// `generate` logs a warning and goes on): with no log to warn in, a continuation the model was
    /// never trained to produce is refused before any work, as
    /// [`GenerateConfig::max_new_tokens`] describes.
    ///
    /// # Errors
    /// [`ModelError`](super::ModelError) for an empty prompt, a token outside the vocabulary, a
    /// temperature that is not positive or a `top_p` outside (0, 1];
    /// [`ModelError::ContextLength`](super::ModelError::ContextLength) for a prompt longer than the
    /// context or more new tokens than fit after it.
    pub fn generate(&self, prompt: &[i64], config: &GenerateConfig) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(ModelError::EmptyPrompt.into());
        }
        let max_new_tokens =
            fitting_tokens(prompt.len(), config.max_new_tokens, self.config().max_position_embeddings)?;
        let mut sampler = Sampler::new(config.sampling)?;
        let device = self.lm_head.ws.device();
        let start = Instant::now();
        let mut cache = KvCache::new();
        // `max_new_tokens` may be `usize::MAX` ("until a stop token"): reserve a bounded amount.
        let mut tokens = Vec::with_capacity(max_new_tokens.min(RESERVED_TOKENS));
        let mut next = Tensor::from_slice(prompt).view([1, -1]).to_device(device);
        tch::no_grad(|| -> Result<()> {
            while tokens.len() < max_new_tokens {
                let logits = self.forward_cached(&LlamaInputs::new(&next), &mut cache)?;
                let last = logits.get(0).get(-1);
                let token = sampler.next(&last);
                tokens.push(token);
                if config.stop_tokens.contains(&token) {
                    break;
                }
                next = Tensor::from_slice(&[token]).view([1, 1]).to_device(device);
            }
            Ok(())
        })?;
        let elapsed = start.elapsed();
        let tokens_per_second = tokens.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        Ok(Generation { tokens, elapsed, tokens_per_second })
    }
}

/// How many tokens a generation of `asked` new tokens after a prompt of `prompt` tokens may make in
/// a context of `context` positions: `asked`, or for `usize::MAX` ("until a stop token") what fits.
///
/// The prompt fills positions `0..P` and new token `k` (from 1) is fed at position `P + k − 1`,
/// except the last, which is never fed: `N` new tokens run positions `0..P + N − 1`, which must all
/// be below `C` (transformers' `generate` warns from the same point on).
fn fitting_tokens(prompt: usize, asked: usize, context: i64) -> Result<usize> {
    if asked == 0 {
        return Ok(0);
    }
    let refuse = || Err(ModelError::ContextLength { prompt, new_tokens: asked, context }.into());
    // `context ≥ 1` (the config is validated); u128 holds `C + 1` and any usize.
    let (c, p) = (u128::try_from(context).unwrap_or(0), prompt as u128);
    if p > c {
        return refuse();
    }
    let room = c + 1 - p;
    if asked == usize::MAX {
        return Ok(usize::try_from(room).unwrap_or(usize::MAX));
    }
    if asked as u128 > room {
        return refuse();
    }
    Ok(asked)
}

/// The generated tokens reserved for up front; more grow the vector as usual.
const RESERVED_TOKENS: usize = 1024;

/// Chooses tokens from logits.
struct Sampler {
    sampling: Sampling,
    rng: SplitMix64,
}

impl Sampler {
    fn new(sampling: Sampling) -> Result<Sampler> {
        let seed = match sampling {
            Sampling::Greedy => 0,
            Sampling::Sample { temperature, top_p, seed } => {
                if !(temperature.is_finite() && temperature > 0.0) {
                    return Err(ModelError::NotPositive { what: "temperature", value: temperature }.into());
                }
                if !(top_p > 0.0 && top_p <= 1.0) {
                    return Err(ModelError::TopP { top_p }.into());
                }
                seed
            }
        };
        Ok(Sampler { sampling, rng: SplitMix64::new(seed) })
    }

    /// The next token for the logits `[V]` of the last position.
    fn next(&mut self, logits: &Tensor) -> i64 {
        match self.sampling {
            Sampling::Greedy => logits.argmax(0, false).int64_value(&[]),
            Sampling::Sample { temperature, top_p, .. } => {
                let probs = (logits.to_kind(Kind::Float) / temperature).softmax(0, Kind::Float);
                let (sorted, order) = probs.sort(0, true);
                // Keep the shortest prefix of the sorted tokens whose mass reaches top_p.
                let cumulative = sorted.cumsum(0, Kind::Float);
                let below = cumulative.lt(top_p).sum(Kind::Int64).int64_value(&[]);
                let keep = (below + 1).min(sorted.size()[0]);
                let kept: Vec<f32> =
                    Vec::try_from(sorted.narrow(0, 0, keep).to_device(Device::Cpu)).unwrap_or_default();
                let total: f64 = kept.iter().map(|&p| f64::from(p)).sum();
                let target = self.rng.next_f64() * total;
                let mut acc = 0.0;
                let mut chosen = kept.len().saturating_sub(1);
                for (i, &p) in kept.iter().enumerate() {
                    acc += f64::from(p);
                    if target < acc {
                        chosen = i;
                        break;
                    }
                }
                order.int64_value(&[chosen as i64])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fitting_tokens;
    use crate::text::ModelError;
    use crate::DistillError;

    fn refused(prompt: usize, asked: usize, context: i64) -> bool {
        match fitting_tokens(prompt, asked, context) {
            Err(DistillError::Text(error)) => {
                matches!(error.downcast_ref::<ModelError>(), Some(ModelError::ContextLength { .. }))
            }
            _ => false,
        }
    }

    #[test]
    fn counts_near_the_integer_limits_neither_overflow_nor_pass() {
        // `prompt + asked` past usize::MAX, and a context past any usize on a 32-bit target.
        assert!(refused(5, usize::MAX - 1, 8));
        assert!(refused(usize::MAX, 1, 8));
        assert_eq!(fitting_tokens(5, 1 << 30, i64::MAX).unwrap(), 1 << 30);
        assert_eq!(fitting_tokens(1, usize::MAX, i64::MAX).unwrap(), usize::try_from(i64::MAX).unwrap_or(usize::MAX));
        // The boundary: positions 0..P + N − 1 must lie below C.
        assert_eq!(fitting_tokens(5, 4, 8).unwrap(), 4);
        assert!(refused(5, 5, 8));
        assert_eq!(fitting_tokens(5, usize::MAX, 8).unwrap(), 4);
        assert_eq!(fitting_tokens(8, usize::MAX, 8).unwrap(), 1);
        assert_eq!(fitting_tokens(9, 0, 8).unwrap(), 0);
    }
}
