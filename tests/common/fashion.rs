//! The Fashion-MNIST example's teacher and its 25 % pruned copy, for the tests that distil one into
//! the other. The including test declares the example's `model` and `prune` modules at its root (the
//! example's pruning code names `crate::model`).

use distill::nn::VarStore;
use tch::Device;

use crate::model::{Net, WIDTHS};

/// A random teacher (seeded with `seed`) and the student its L1 pruning keeps 25 % of the channels
/// of, each in its own store, on the CPU.
pub fn teacher_and_student(seed: i64) -> (VarStore, Net, VarStore, Net) {
    tch::manual_seed(seed);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&teacher_vs.root(), &WIDTHS);
    let student_vs = VarStore::new(Device::Cpu);
    let student = crate::prune::prune_net(&teacher, &student_vs.root(), 0.25).expect("the example's widths prune");
    (teacher_vs, teacher, student_vs, student)
}
