//! Activation layers. tch applies activations as tensor methods; as layers they can be
//! distillation points and children of `Seq`/`Sequential`.

use tch::nn::Module;
use tch::Tensor;

use super::leaf::tappable_leaf;
use crate::nn::capture::{record, TapId};

macro_rules! activation {
    ($(#[$doc:meta])* $ty:ident, $ctor:ident, |$xs:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $ty {
            tap: TapId,
        }

        impl $ty {
            /// A new layer with a fresh tap.
            pub fn new() -> Self {
                Self { tap: TapId::fresh() }
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }

        tappable_leaf!($ty);

        impl Module for $ty {
            fn forward(&self, xs: &Tensor) -> Tensor {
                record(self.tap, xs, |$xs| $body)
            }
        }

        #[doc = concat!("A new [`", stringify!($ty), "`] layer.")]
        pub fn $ctor() -> $ty {
            $ty::new()
        }
    };
}

activation!(
    /// `max(x, 0)`, out of place (an in-place ReLU would invalidate the previous layer's capture).
    ReLU, relu, |xs| xs.relu()
);
activation!(
    /// GELU with the exact (erf) formulation, as `torch.nn.GELU()`.
    Gelu, gelu, |xs| xs.gelu("none")
);
activation!(
    /// `x · sigmoid(x)`, as `torch.nn.SiLU`.
    SiLU, silu, |xs| xs.silu()
);
activation!(
    /// The logistic sigmoid.
    Sigmoid, sigmoid, |xs| xs.sigmoid()
);
activation!(
    /// The hyperbolic tangent.
    Tanh, tanh, |xs| xs.tanh()
);
activation!(
    /// Returns its input: a named distillation point at any place of a model.
    Identity, identity, |xs| xs.shallow_clone()
);
