//! A token cache as the teacher of a distillation: [`TokenCache`] is the teacher a `distill!`
//! declaration or a `Mapping` names (`for LlamaForCausalLM => TokenCache { … }`), and each
//! [`CachedTokens`] batch stands for that teacher in a forward.
//!
//! A token cache stores the teacher's next-token distribution at every token, in one encoding (top-k
//! with its tail, or sampled), and optionally some of its hidden states. Its endpoints are the
//! teacher itself (`teacher` in `distill!`, `""` by path: the distribution, read by the criterion of
//! that encoding at the stored temperature, with the batch's token mask as its labels) and the paths
//! of the stored hidden states (read as they are, over the valid tokens only).

use std::path::Path;

use tch::Tensor;

use super::batch::CachedTokens;
use super::manifest::TokenEncoding;
use super::reader::TokenCache;
use crate::cache::CacheError;
use crate::cache::TeacherBatch;
use crate::captured::Captured;
use crate::criterion::TeacherEncoding;
use crate::endpoint::{Endpoint, ResolvedEndpoint, Target};
use crate::error::{DistillError, Result};
use crate::point::{Port, Side};
use crate::side::{SideModel, SideResolver};

impl SideModel for TokenCache {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        let stored = &self.store.manifest.hidden;
        SideResolver::own(self, move |endpoint| {
            resolve(&self.store.dir, stored.iter().map(|h| h.path.as_str()), side, endpoint)
        })
    }

    fn run(&self, _xs: &Tensor, _train: bool, _endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        Err(CacheError::TokenCacheDoesNotRun.into())
    }

    fn check_encoding(&self, label: &str, endpoint: &ResolvedEndpoint, reads: TeacherEncoding) -> Result<()> {
        check(&self.store.dir, self.store.manifest.encoding, label, endpoint, reads)
    }
}

impl SideModel for CachedTokens {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideResolver::own(self, move |endpoint| {
            resolve(&self.dir, self.hidden.iter().map(|(path, _)| path.as_str()), side, endpoint)
        })
    }

    /// The stored encoding packed as one tensor ([`CachedTokens::packed`]) as the teacher's output
    /// and the capture of the teacher itself; a stored hidden state for its path.
    fn run(&self, _xs: &Tensor, _train: bool, endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        let packed = self.packed()?;
        let captures = endpoints
            .iter()
            .map(|endpoint| match endpoint.path() {
                "" => Ok(Captured::one(packed.shallow_clone())),
                path => self.hidden(path).map(|tensor| Captured::one(tensor.shallow_clone())).ok_or_else(|| {
                    not_stored(&self.dir, self.hidden.iter().map(|(p, _)| p.as_str()), &format!("`{path}`"))
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((packed, captures))
    }

    fn check_encoding(&self, label: &str, endpoint: &ResolvedEndpoint, reads: TeacherEncoding) -> Result<()> {
        check(&self.dir, self.encoding, label, endpoint, reads)
    }
}

impl TeacherBatch for CachedTokens {
    /// The token ids `xs` as they are, once their `[B, T]` is the batch's.
    fn student_input(&self, xs: &Tensor) -> Result<Tensor> {
        let expected = self.valid().size();
        let shape = xs.size();
        if shape.len() < 2 || shape[..2] != expected[..] {
            return Err(DistillError::CacheMismatch {
                dir: self.dir.display().to_string(),
                what: "the student's token ids".to_owned(),
                cached: format!("a batch of {expected:?} tokens"),
                expected: format!("{shape:?}"),
            });
        }
        Ok(xs.shallow_clone())
    }

    fn token_mask(&self) -> Option<&Tensor> {
        Some(self.valid())
    }

    /// A stored hidden state's pair reads the valid tokens only: `[B, T, …]` becomes `[N, …]`, the
    /// `N` valid tokens in batch order. The distribution's pair is left whole (its criterion reads
    /// the mask as labels).
    fn select_tokens(&self, endpoint: &ResolvedEndpoint, tensor: &Tensor) -> Result<Tensor> {
        if endpoint.path().is_empty() {
            return Ok(tensor.shallow_clone());
        }
        let (mask, shape) = (self.valid(), tensor.size());
        if shape.len() < 2 || shape[..2] != mask.size()[..] {
            let path = endpoint.path().to_owned();
            return Err(CacheError::HiddenPairShape { path, tokens: mask.size(), got: shape }.into());
        }
        let rows = mask.f_reshape([-1])?.f_nonzero()?.f_reshape([-1])?.f_to_device(tensor.device())?;
        let flat: Vec<i64> = [vec![-1], shape[2..].to_vec()].concat();
        Ok(tensor.f_reshape(flat)?.f_index_select(0, &rows)?)
    }
}

/// The teacher itself (its output, the distribution) or a stored hidden state (`stored`: their
/// paths, in shard order); any other endpoint is one the cache does not store.
fn resolve<'a>(
    dir: &Path,
    stored: impl Iterator<Item = &'a str> + Clone,
    side: Side,
    endpoint: &Endpoint<'_>,
) -> Result<ResolvedEndpoint> {
    let resolved = |path: &str, output: usize| ResolvedEndpoint {
        side,
        path: path.to_owned(),
        tap: None,
        container: None,
        output: Some(output),
        port: Port::Output,
        all_calls: false,
    };
    let plain = endpoint.port == Port::Output && !endpoint.all_calls;
    let shown = match &endpoint.target {
        Target::Path(path) if plain && path.is_empty() => return Ok(resolved("", 0)),
        Target::Path(path) if plain => match stored.clone().position(|p| p == path) {
            Some(index) => return Ok(resolved(path, index + 1)),
            None => format!("`{path}`"),
        },
        Target::Path(path) if path.is_empty() => {
            format!("the teacher's {} (all calls: {})", endpoint.port, endpoint.all_calls)
        }
        Target::Path(path) => format!("`{path}` ({}, all calls: {})", endpoint.port, endpoint.all_calls),
        Target::Tap { type_name, .. } => format!("a module of type `{type_name}`"),
        Target::Slot(_) => "a container element".to_owned(),
    };
    Err(not_stored(dir, stored, &shown))
}

/// The error for a teacher endpoint (`shown`) a token cache does not store.
fn not_stored<'a>(dir: &Path, stored: impl Iterator<Item = &'a str>, shown: &str) -> DistillError {
    let hidden: Vec<String> = stored.map(|path| format!("`{path}`")).collect();
    let list = if hidden.is_empty() { "no hidden state".to_owned() } else { hidden.join(", ") };
    DistillError::CacheMismatch {
        dir: dir.display().to_string(),
        what: format!("the teacher endpoint {shown}"),
        cached: format!(
            "not stored: a token cache stores the teacher's next-token distribution (the teacher itself, `teacher` in \
             `distill!`, `\"\"` by path) and the hidden states its writer named ({list}); the output port only"
        ),
        expected: "read by a pair".to_owned(),
    }
}

/// The criterion of the pair `label` reads its teacher `endpoint` as `reads`; the cache stores the
/// distribution as `stored` and hidden states as they are.
fn check(
    dir: &Path,
    stored: TokenEncoding,
    label: &str,
    endpoint: &ResolvedEndpoint,
    reads: TeacherEncoding,
) -> Result<()> {
    let (as_read, cached, what) = match (endpoint.path(), stored) {
        ("", TokenEncoding::TopK { temperature, .. }) => {
            (TeacherEncoding::TopKTail { temperature }, format!("{stored:?}"), "the teacher's distribution".to_owned())
        }
        ("", TokenEncoding::Sampled { temperature, .. }) => {
            (TeacherEncoding::Sampled { temperature }, format!("{stored:?}"), "the teacher's distribution".to_owned())
        }
        (path, _) => (TeacherEncoding::Plain, "a hidden state".to_owned(), format!("the teacher endpoint `{path}`")),
    };
    if as_read == reads {
        return Ok(());
    }
    Err(DistillError::CacheMismatch {
        dir: dir.display().to_string(),
        what: format!("the encoding of {what} read by the pair `{label}`"),
        cached: format!("{as_read} ({cached})"),
        expected: format!("the criterion reads {reads}"),
    })
}
