//! libtorch's errors keep their message and drop the C++ backtrace libtorch appends, except in the
//! alternate `Debug`.

use distill::DistillError;
use tch::{Device, Kind, Tensor};

#[test]
fn a_libtorch_error_shows_its_message_without_the_cpp_backtrace() {
    let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let error: DistillError = a.f_matmul(&a).unwrap_err().into();
    let full = format!("{error:#?}");
    let shown = error.to_string();
    assert!(shown.contains("cannot be multiplied"), "{shown}");
    assert!(!shown.contains("Exception raised from") && !shown.contains("frame #"), "{shown}");
    // The full text, backtrace included when libtorch gave one, stays in the alternate Debug.
    assert!(full.contains("cannot be multiplied"), "{full}");
    assert!(full.len() >= shown.len());
}
