//! Gradients reach the student through captured tensors, and the teacher only when asked.

mod common;

use common::Net;
use distill::nn::VarStore;
use distill::{distill, Mapping};
use tch::{Device, Kind, Tensor};

fn setup() -> (VarStore, Net, VarStore, Net, Tensor) {
    tch::manual_seed(11);
    let svs = VarStore::new(Device::Cpu);
    let student = Net::new(&svs.root(), &[4, 8, 8], 3);
    let tvs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&tvs.root(), &[4, 8, 8], 3);
    let xs = Tensor::randn([2, 1, 6, 6], (Kind::Float, Device::Cpu));
    (svs, student, tvs, teacher, xs)
}

fn grad_norm(t: &Tensor) -> Option<f64> {
    let g = t.grad();
    g.defined().then(|| f64::try_from(g.norm()).unwrap())
}

#[test]
fn student_gets_gradients_teacher_does_not_by_default() {
    let (_svs, student, _tvs, teacher, xs) = setup();
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("features.1.conv", "features.1.conv", ()).unwrap();
    let dm = distill(&student, &teacher, mapping);
    let out = dm.forward_t(&xs, true).unwrap();
    let (s, t, _) = out.get(0).unwrap();
    assert!(s.requires_grad());
    assert!(!t.requires_grad(), "teacher ran under no_grad");
    assert!(!out.teacher_output.requires_grad());
    (s.tensor() - t.tensor()).square().mean(Kind::Float).backward();

    // Every student parameter up to the captured point got a non-zero gradient…
    for conv in [&student.stem, &student.features[0].conv, &student.features[1].conv] {
        assert!(grad_norm(&conv.ws).is_some_and(|n| n > 0.0));
    }
    // …the classifier, after it, got none…
    assert!(grad_norm(&student.classifier.ws).is_none());
    // …and the teacher none at all.
    for conv in [&teacher.stem, &teacher.features[1].conv] {
        assert!(grad_norm(&conv.ws).is_none());
    }
}

#[test]
fn teacher_grad_opt_in_lets_gradients_into_the_teacher() {
    let (_svs, student, _tvs, teacher, xs) = setup();
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("features.1.conv", "features.1.conv", ()).unwrap();
    let dm = distill(&student, &teacher, mapping).teacher_grad(true);
    let out = dm.forward_t(&xs, true).unwrap();
    let (s, t, _) = out.get(0).unwrap();
    assert!(t.requires_grad());
    (s.tensor() - t.tensor()).square().mean(Kind::Float).backward();
    assert!(grad_norm(&teacher.features[1].conv.ws).is_some_and(|n| n > 0.0));
    assert!(grad_norm(&student.features[1].conv.ws).is_some_and(|n| n > 0.0));
}
