//! Adapters called through `dyn ModuleT` (as `distill!` calls them) report an input they cannot take
//! as an error rather than a panic.
//!
//! tch's `Module::forward` returns a bare tensor, so a layer given a wrong input can only panic. The
//! adapters of this module do too when called directly (their `f_forward` returns the error), but
//! inside [`checked_forward`] they hand the error to it and return an undefined tensor instead.

use std::cell::RefCell;

use tch::Tensor;

use crate::error::{DistillError, Result};

thread_local! {
    /// `Some` inside [`checked_forward`] on this thread, holding the first adapter error.
    static CHECKED: RefCell<Option<Option<DistillError>>> = const { RefCell::new(None) };
}

/// Restores the enclosing [`checked_forward`]'s state when dropped, also while unwinding.
struct Restore(Option<Option<DistillError>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let outer = self.0.take();
        CHECKED.with(|checked| *checked.borrow_mut() = outer);
    }
}

/// Runs `forward` (typically `adapter.forward_t(xs, train)` on a boxed adapter); an adapter of this
/// module that cannot take its input inside it makes this the adapter's error.
pub(crate) fn checked_forward(forward: impl FnOnce() -> Tensor) -> Result<Tensor> {
    let _restore = Restore(CHECKED.with(|checked| checked.replace(Some(None))));
    let output = forward();
    let failure = CHECKED.with(|checked| checked.borrow_mut().as_mut().and_then(Option::take));
    match failure {
        Some(err) => Err(err),
        None => Ok(output),
    }
}

/// What an adapter's `Module::forward` does with the error of its `f_forward`: hands it to the
/// enclosing [`checked_forward`] and returns an undefined tensor, or panics with it outside one.
pub(super) fn fail(err: DistillError) -> Tensor {
    let unhandled = CHECKED.with(|checked| match checked.borrow_mut().as_mut() {
        Some(slot) => {
            slot.get_or_insert(err);
            None
        }
        None => Some(err),
    });
    match unhandled {
        Some(err) => panic!("{err}"),
        None => Tensor::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_inside_are_returned_and_the_state_restored() {
        let err = || DistillError::InvalidArgument("bad input".into());
        let result = checked_forward(|| fail(err()));
        assert!(matches!(result, Err(DistillError::InvalidArgument(msg)) if msg == "bad input"));
        assert!(checked_forward(|| Tensor::from(1.0)).is_ok());
        // Nested: the inner error stays inside; the outer scope sees only its own.
        let outer = checked_forward(|| {
            assert!(checked_forward(|| fail(err())).is_err());
            Tensor::from(2.0)
        });
        assert!(outer.is_ok());
        assert!(std::panic::catch_unwind(|| fail(err())).is_err(), "outside, an adapter panics as tch layers do");
    }
}
