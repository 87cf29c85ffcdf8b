//! Arming is per thread: threads distilling different pairs at once get what a serial run gets.

mod common;

use common::Net;
use distill::nn::VarStore;
use distill::{distill, Mapping};
use tch::{Device, Kind, Tensor};

/// Deterministic values without the global RNG, which concurrent threads would share.
fn pattern(shape: &[i64], phase: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + phase).sin().view(shape) * 0.5
}

fn fill(vs: &VarStore) {
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (i, (name, mut var)) in vars.into_iter().enumerate() {
            let values = pattern(&var.size(), i as f64);
            // Variances must stay positive.
            let values = if name.ends_with("running_var") { values.abs() + 0.5 } else { values };
            var.copy_(&values);
        }
    });
}

/// Builds student and teacher with fixed weights and returns each pair's tensors as plain vectors.
fn run(pairs: &[(&str, &str)], rounds: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let svs = VarStore::new(Device::Cpu);
    let student = Net::new(&svs.root(), &[4, 6, 8], 3);
    fill(&svs);
    let tvs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&tvs.root(), &[8, 12, 16], 3);
    fill(&tvs);
    let xs = pattern(&[2, 1, 6, 6], 0.1);
    let mut mapping = Mapping::new(&student, &teacher);
    for (s, t) in pairs {
        mapping.add(*s, *t, ()).unwrap();
    }
    let dm = distill(&student, &teacher, mapping);
    let mut result = Vec::new();
    for _ in 0..rounds {
        let out = dm.forward_t(&xs, false).unwrap();
        result = out
            .pairs()
            .map(|(s, t, _)| {
                (Vec::<f32>::try_from(s.flatten(0, -1)).unwrap(), Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
            })
            .collect();
    }
    result
}

#[test]
fn concurrent_distillations_match_serial_ones() {
    let a: &[(&str, &str)] = &[("features.0.conv", "features.0.conv"), ("classifier", "classifier")];
    let b: &[(&str, &str)] = &[("stem", "features.1.bn"), ("features.1", "head.1")];
    let serial = (run(a, 1), run(b, 1));
    let concurrent = std::thread::scope(|scope| {
        let ha = scope.spawn(|| run(a, 20));
        let hb = scope.spawn(|| run(b, 20));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_eq!(serial, concurrent);
    assert_eq!(serial.0.len(), 2);
    assert_eq!(serial.1[0].0.len(), 2 * 4 * 6 * 6);
}
