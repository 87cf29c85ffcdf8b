//! Options of the vision constructors so large that a width or a weight's element count overflows
//! `i64`: typed errors naming the layer, where they were an overflow panic (or a tch panic).

use distill::nn::VarStore;
use distill::vision::{self, MobileNetV2Config, ResNetConfig, VisionError};
use distill::DistillError;
use tch::Device;

/// The `VisionError` of a constructor's result.
fn vision_error<T>(result: Result<T, DistillError>) -> VisionError {
    match result {
        Err(DistillError::Vision(error)) => error.downcast_ref::<VisionError>().expect("a VisionError").clone(),
        Err(other) => panic!("expected DistillError::Vision, got {other:?}"),
        Ok(_) => panic!("expected an error, the model was built"),
    }
}

fn overflow(layer: &str, what: &'static str) -> VisionError {
    VisionError::SizeOverflow { layer: layer.to_owned(), what }
}

#[test]
fn absurd_mobilenet_options_are_size_overflows() {
    let vs = VarStore::new(Device::Cpu);
    let mobilenet = |num_classes, config| vision_error(vision::mobilenet_v2_with(vs.root(), num_classes, config));
    let options = |width_mult, round_nearest| MobileNetV2Config { width_mult, round_nearest, ..Default::default() };
    // 32 · 1e300 does not fit a width (it was i64::MAX, then + 8 overflowed).
    assert_eq!(mobilenet(10, options(1e300, 8)), overflow("features.0", "width"));
    // 32 · 1e308 is infinite in f64: refused too, not saturated to i64::MAX.
    assert_eq!(mobilenet(10, options(1e308, 8)), overflow("features.0", "width"));
    // 32 · 2⁵⁷ = 2⁶² fits, the stem's weight (2⁶² · 3 · 3 · 3 elements) does not.
    assert_eq!(mobilenet(10, options(2f64.powi(57), 8)), overflow("features.0.0", "weight's element count"));
    // Every width rounds up to i64::MAX.
    assert_eq!(mobilenet(10, options(1.0, i64::MAX)), overflow("features.0.0", "weight's element count"));
    // Widths of 2⁴⁰ fit, a projection of 2⁴⁰ · 2⁴⁰ elements does not.
    assert_eq!(mobilenet(10, options(1.0, 1 << 40)), overflow("features.1.conv.1", "weight's element count"));
    let config = MobileNetV2Config { in_channels: i64::MAX / 2, ..Default::default() };
    assert_eq!(mobilenet(10, config), overflow("features.0.0", "weight's element count"));
    assert_eq!(mobilenet(i64::MAX, MobileNetV2Config::default()), overflow("classifier.1", "weight's element count"));
    let message = mobilenet(10, options(1e300, 8)).to_string();
    assert!(message.contains("the width of `features.0` overflows a 64-bit count"), "{message}");
    assert!(vs.variables().is_empty(), "nothing is allocated before the options are checked");
}

#[test]
fn a_narrow_mobilenet_still_rounds_as_torchvision() {
    // torchvision's `_make_divisible(32 · 0.35 = 11.2, 8)`: int(11.2 + 4) // 8 · 8 = 8, which loses
    // more than 10 % of 11.2, so one more 8: 16 — the branch whose addition is now checked.
    let vs = VarStore::new(Device::Cpu);
    let config = MobileNetV2Config { width_mult: 0.35, ..Default::default() };
    let _model = vision::mobilenet_v2_with(vs.root(), 10, config).unwrap();
    assert_eq!(vs.variables()["features.0.0.weight"].size(), [16, 3, 3, 3]);
}

#[test]
fn absurd_resnet_options_are_size_overflows() {
    let vs = VarStore::new(Device::Cpu);
    let error = vision_error(vision::resnet18(vs.root(), i64::MAX));
    assert_eq!(error, overflow("fc", "weight's element count"));
    let config = ResNetConfig { in_channels: i64::MAX / 64, ..Default::default() };
    let error = vision_error(vision::resnet50_with(vs.root(), 10, config));
    assert_eq!(error, overflow("conv1", "weight's element count"));
    assert!(vs.variables().is_empty());
}
