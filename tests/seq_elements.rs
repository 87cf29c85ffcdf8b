//! A forward that walks a `Seq`'s elements itself records them through `elements()` / `forward_at`,
//! exactly as the `Seq`'s own forward would.

use distill::error::CaptureError;
use distill::nn::{self, ModuleT, VarStore};
use distill::{distill, DistillError, Distillable, Mapping};
use tch::{Device, Kind, Tensor};

/// Blocks that take an extra argument (a mask), so the model must call them one by one.
#[derive(Debug, Distillable)]
struct Masked {
    blocks: nn::Seq<nn::Linear>,
    #[distill(skip)]
    by_hand: bool,
}

impl Masked {
    fn new(vs: &VarStore, by_hand: bool) -> Masked {
        let p = vs.root();
        Masked { blocks: (0..3).map(|i| nn::linear(&p / "blocks" / i, 4, 4, Default::default())).collect(), by_hand }
    }

    fn mask() -> Tensor {
        Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.5])
    }
}

impl ModuleT for Masked {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mask = Masked::mask();
        let mut xs = xs.shallow_clone();
        if self.by_hand {
            // What a user writes without `elements()`: unrecorded calls.
            for block in self.blocks.iter() {
                xs = block.forward_t(&xs, train) * &mask;
            }
            return xs;
        }
        for block in self.blocks.elements() {
            xs = block.call(&xs, |linear, xs| linear.forward_t(xs, train) * &mask);
        }
        // forward_at records like an element of `elements()`.
        self.blocks.forward_at(2, &xs, train)
    }
}

fn input() -> Tensor {
    tch::manual_seed(3);
    Tensor::randn([2, 4], (Kind::Float, Device::Cpu))
}

#[test]
fn elements_record_what_each_call_returned() {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = Masked::new(&vs, false);
    let xs = input();
    let mask = Masked::mask();
    let h0 = model.blocks[0].forward_t(&xs, false) * &mask;
    let h1 = model.blocks[1].forward_t(&h0, false) * &mask;

    let mut mapping = Mapping::new(&model, &model);
    mapping.add(model.blocks.slot(1), "blocks.1", ()).unwrap();
    let dm = distill(&model, &model, mapping);
    let out = dm.forward_t(&xs, false).unwrap();
    let (s, t, ()) = out.get(0).unwrap();
    assert_eq!(f64::try_from((&**s - &h1).abs().max()).unwrap(), 0.0);
    assert_eq!(f64::try_from((&**t - &h1).abs().max()).unwrap(), 0.0);
}

#[test]
fn forward_at_records_the_element_call_and_all_calls_sees_both() {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = Masked::new(&vs, false);
    let xs = input();
    let mask = Masked::mask();
    let mut h = xs.shallow_clone();
    for block in model.blocks.iter() {
        h = block.forward_t(&h, false) * &mask;
    }
    let again = model.blocks[2].forward_t(&h, false);

    let mut mapping = Mapping::new(&model, &model);
    mapping.add(distill::Endpoint::path("blocks.2").all_calls(), "", ()).unwrap();
    let dm = distill(&model, &model, mapping);
    let out = dm.forward_t(&xs, false).unwrap();
    let (s, t, ()) = out.get(0).unwrap();
    assert_eq!(s.calls().len(), 2);
    assert_eq!(f64::try_from((&s.calls()[0] - &h).abs().max()).unwrap(), 0.0);
    assert_eq!(f64::try_from((&s.calls()[1] - &again).abs().max()).unwrap(), 0.0);
    assert_eq!(f64::try_from((&**t - &again).abs().max()).unwrap(), 0.0);
}

#[test]
fn elements_called_directly_are_reported_as_not_run() {
    let vs = VarStore::new(Device::Cpu);
    let model = Masked::new(&vs, true);
    let mut mapping = Mapping::new(&model, &model);
    mapping.add("blocks.1", "blocks.1", ()).unwrap();
    let dm = distill(&model, &model, mapping);
    let error = dm.forward_t(&input(), false).unwrap_err();
    assert!(matches!(error, DistillError::Capture(CaptureError::ElementNotRecorded { .. })), "{error}");
    assert!(error.to_string().contains("for block in self.blocks.elements()"), "{error}");
}

#[test]
fn element_out_of_range_is_none() {
    let vs = VarStore::new(Device::Cpu);
    let model = Masked::new(&vs, false);
    assert!(model.blocks.element(3).is_none());
    assert_eq!(model.blocks.element(2).map(|e| e.index()), Some(2));
    assert_eq!(model.blocks.elements().len(), 3);
}
