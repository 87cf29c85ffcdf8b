//! What goes wrong when the endpoints of a model are captured during its forward pass.

use super::text::named_or;
use crate::point::{Port, Side};

/// A mapped module whose output or input could not be captured as asked during a forward pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// A mapped module did not run during the forward pass.
    #[error("the {side} module `{path}` did not run during the forward pass, so its {port} could not be captured")]
    NotCalled {
        /// The model that ran.
        side: Side,
        /// Path of the module.
        path: String,
        /// What was to be captured.
        port: Port,
    },
    /// A mapped element of a `Seq` or a `Sequential` was not recorded: the container was not called
    /// as a whole, so its elements either did not run or were called one by one, which records
    /// nothing.
    #[error(
        "the {side} module `{path}` was not recorded during the forward pass: it is an element of {}, whose \
         elements are recorded when the container itself runs (`seq.forward_t(xs, train)`) or when the forward calls \
         them through it (`for block in {}.elements() {{ xs = block.forward_t(&xs, train) }}`, `forward_at(i, …)`); \
         a forward that calls the elements directly (`for element in &{}`) runs them unrecorded",
        container_name(container),
        container_expr(container),
        container_expr(container)
    )]
    ElementNotRecorded {
        /// The model that ran.
        side: Side,
        /// Path of the element.
        path: String,
        /// Path of its container.
        container: String,
    },
    /// A mapped module ran more than once and the endpoint asked for a single call.
    #[error(
        "the {side} module `{path}` ran {calls} times in one forward pass; ask for all calls \
         (`Endpoint::all_calls`, or `all_calls` in `distill!`) to receive each one"
    )]
    CalledMoreThanOnce {
        /// The model that ran.
        side: Side,
        /// Path of the module.
        path: String,
        /// How many times it ran.
        calls: usize,
    },
    /// A captured tensor was changed in place after it was captured.
    #[error(
        "the {port} of the {side} module `{path}` was modified in place after it was captured \
         (version {captured} became {now}), e.g. by `relu_()`: use the out-of-place operation"
    )]
    ModifiedInPlace {
        /// The model that ran.
        side: Side,
        /// Path of the module.
        path: String,
        /// Which tensor was captured.
        port: Port,
        /// libtorch version counter at capture time.
        captured: i64,
        /// libtorch version counter after the forward pass.
        now: i64,
    },
    /// A model's forward panicked during a dry run (tch's `forward_t` cannot return an error, so a
    /// mistake such as inputs with the wrong number of channels panics inside it): the dry run
    /// reports it instead of ending the program.
    #[error("the {side}'s forward panicked during the dry run: {message}")]
    ForwardPanicked {
        /// The model whose forward panicked.
        side: Side,
        /// The panic's message (its first line: libtorch's errors go on with a C++ backtrace).
        message: String,
    },
    /// A student endpoint that only the student's own forward gives (a TorchScript student's named
    /// output), in a forward whose student is run by the caller.
    #[error(
        "the {side} endpoint `{path}` is an output of the model's own forward: a forward that runs the student by \
         the caller's call captures the student's `distill::nn` modules and its output only"
    )]
    NotTapped {
        /// The side of the endpoint.
        side: Side,
        /// The endpoint's path.
        path: String,
    },
}

/// A container's path in a message: `` `features` ``, or the model itself.
fn container_name(path: &str) -> String {
    named_or(path, "the model itself", "`", "`")
}

/// A container's path as the Rust expression a forward would iterate over.
fn container_expr(path: &str) -> String {
    named_or(path, "self", "self.", "")
}
