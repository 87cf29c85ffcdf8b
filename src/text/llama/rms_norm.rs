//! Root-mean-square layer normalisation, as transformers' `LlamaRMSNorm`.

use std::borrow::Borrow;

use tch::nn::{Init, Module, Path};
use tch::{Kind, Tensor};

use crate::__private::Schema;
use crate::capture::{record, TapId};
use crate::module::{Child, Distillable, Recordable};
use crate::StaticSchema;

/// `weight · x / sqrt(mean(x²) + ε)` over the last dimension, computed in f32 whatever the input's
/// kind and cast back before the weight is applied, as transformers' `LlamaRMSNorm`; variable
/// `weight`. A distillation point.
#[derive(Debug)]
pub struct RmsNorm {
    /// The per-feature scale, `[hidden]`.
    pub weight: Tensor,
    /// ε, added to the mean square.
    pub eps: f64,
    tap: TapId,
}

/// An [`RmsNorm`] over `size` features under `p` (variable `weight`, initialised to ones).
pub fn rms_norm<'a, P: Borrow<Path<'a>>>(p: P, size: i64, eps: f64) -> RmsNorm {
    let weight = p.borrow().var("weight", &[size], Init::Const(1.0));
    RmsNorm { weight, eps, tap: TapId::fresh() }
}

impl RmsNorm {
    fn normalise(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        let x32 = xs.to_kind(Kind::Float);
        let mean_square = x32.square().mean_dim(-1, true, Kind::Float);
        let normalised = x32 * (mean_square + self.eps).rsqrt();
        &self.weight * normalised.to_kind(kind)
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| self.normalise(xs))
    }
}

impl Distillable for RmsNorm {
    fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(Child<'a>)) {}
    fn own_tap(&self) -> Option<TapId> {
        Some(self.tap)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl Recordable for RmsNorm {
    fn tap_id(&self) -> TapId {
        self.tap
    }
}

impl StaticSchema for RmsNorm {
    const SCHEMA: Schema = Schema::leaf(true);
}
