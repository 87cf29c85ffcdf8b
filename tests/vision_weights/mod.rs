//! The deterministic weights and inputs of the vision reference tests: the closed formula of
//! scripts/gen_vision_reference.py, computed bit for bit the same way, so that no weight file is
//! committed. See that script's docstring for the formula.
#![allow(dead_code)]

use tch::nn::VarStore;
use tch::{Kind, Tensor};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// FNV-1a, 64 bits, of the name's UTF-8 bytes.
fn fnv1a64(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, byte| (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// Output `i` (from 0) of SplitMix64 seeded with `seed`, as an exact f64 in [0, 1) (its top 24 bits).
fn uniform01(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f64 / (1u64 << 24) as f64
}

/// The fill range of a tensor, by its name and shape.
fn bounds(name: &str, shape: &[i64]) -> (f64, f64) {
    if name == "input" {
        (-1.0, 1.0)
    } else if name.ends_with("running_mean") || name.ends_with("bias") {
        (-0.1, 0.1)
    } else if name.ends_with("running_var") || (name.ends_with("weight") && shape.len() == 1) {
        (0.5, 1.5)
    } else if name.ends_with("weight") {
        let fan_in: i64 = shape[1..].iter().product();
        let bound = (3.0 / fan_in as f64).sqrt();
        (-bound, bound)
    } else {
        panic!("no fill rule for {name}")
    }
}

/// The tensor `name` of shape `shape`, filled by the formula (f32).
pub fn filled(name: &str, shape: &[i64]) -> Tensor {
    let (lo, hi) = bounds(name, shape);
    let seed = fnv1a64(name);
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n as u64).map(|i| (lo + (hi - lo) * uniform01(seed, i)) as f32).collect();
    Tensor::from_slice(&values).reshape(shape)
}

/// Fills every variable of `vs` by the formula (its name is the torchvision key) and returns the sum
/// of all values, as the generator computes it (per tensor in f64, then added in name order of the
/// state_dict — the order does not matter to the tolerance the tests use).
pub fn fill(vs: &VarStore) -> f64 {
    let mut total = 0.0;
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            var.copy_(&filled(&name, &var.size()));
            total += var.sum(Kind::Double).double_value(&[]);
        }
    });
    total
}
