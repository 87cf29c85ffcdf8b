//! [`Captured`]: what one endpoint recorded in one forward pass.

use std::ops::Deref;

use tch::{Device, Tensor};

/// What one endpoint captured in one forward pass: each call of the module, in call order.
///
/// What it adds to a tensor: [`calls`](Self::calls) keeps every call of a module that ran several
/// times (an endpoint with `all_calls`), and [`tensor`](Self::tensor) / [`into_tensor`](Self::into_tensor)
/// give the one call of an ordinary endpoint. It is never empty: a module that did not run is an
/// error of the forward.
///
/// It derefs to that first call, so `captured.size()` or `&*captured` reads like the tensor it
/// holds; every other method listed below is `Tensor`'s, through that deref.
#[derive(Debug)]
pub struct Captured {
    calls: Vec<Tensor>,
}

impl Captured {
    /// The captured tensor (the first call, for an all-calls endpoint).
    pub fn tensor(&self) -> &Tensor {
        &self.calls[0]
    }

    /// Every call, in call order.
    pub fn calls(&self) -> &[Tensor] {
        &self.calls
    }

    /// The captured tensor, by value.
    pub fn into_tensor(mut self) -> Tensor {
        self.calls.swap_remove(0)
    }

    /// One tensor for a criterion: the one call as is, several (an `all_calls` endpoint)
    /// concatenated along the batch dimension, so that a mean-reduced criterion averages over the
    /// calls.
    ///
    /// # Errors
    /// [`DistillError::Torch`](crate::DistillError::Torch) when the calls' shapes cannot be concatenated.
    pub(crate) fn joined(&self) -> crate::error::Result<Tensor> {
        match self.calls.as_slice() {
            [one] => Ok(one.shallow_clone()),
            calls => Ok(Tensor::f_cat(calls, 0)?),
        }
    }

    /// Every call through `f`.
    pub(crate) fn f_map(&self, f: impl Fn(&Tensor) -> crate::error::Result<Tensor>) -> crate::error::Result<Captured> {
        Ok(Captured { calls: self.calls.iter().map(f).collect::<crate::error::Result<_>>()? })
    }

    pub(crate) fn one(tensor: Tensor) -> Captured {
        Captured { calls: vec![tensor] }
    }

    pub(crate) fn calls_of(calls: Vec<Tensor>) -> Captured {
        debug_assert!(!calls.is_empty());
        Captured { calls }
    }

    pub(crate) fn moved_to(self, device: Device) -> Captured {
        Captured { calls: self.calls.into_iter().map(|t| move_to(t, device)).collect() }
    }
}

impl Deref for Captured {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        self.tensor()
    }
}

/// `tensor` on `device`, as is when it is there already (or undefined: a TorchScript side without a
/// single output has no output tensor).
pub(crate) fn move_to(tensor: Tensor, device: Device) -> Tensor {
    if !tensor.defined() || tensor.device() == device {
        tensor
    } else {
        tensor.to_device(device)
    }
}
