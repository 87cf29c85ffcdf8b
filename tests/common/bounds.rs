//! Error bounds for comparing floating-point results, from the standard rounding model
//! `fl(a ∘ b) = (a ∘ b)(1 + δ)`, `|δ| ≤ u`, with `u` the unit roundoff of the precision.
//!
//! Every parity test states its bound as `depth · u · magnitude`, where `magnitude` is the size of
//! what the computation sums (Σ|terms|, or the input norms), never the size of the result: a result
//! that cancels (a loss near 0, a gradient that is 0 analytically) carries the rounding of its
//! terms, not of itself. [`Comparison`] reports the worst `|got − want| / bound` so that the margin
//! is visible (`≤ 1` passes), and the mutation tests assert that a real mistake gives a ratio `> 1`.

use tch::{Kind, Tensor};

/// Unit roundoff of f32: 2⁻²⁴ (half its machine epsilon).
pub const U_F32: f64 = 5.960_464_477_539_063e-8;
/// Unit roundoff of f64: 2⁻⁵³.
pub const U_F64: f64 = 1.110_223_024_625_156_5e-16;
/// Unit roundoff of f16: 2⁻¹¹.
pub const U_F16: f64 = 4.882_812_5e-4;

/// The unit roundoff of a floating-point kind.
pub fn unit_roundoff(kind: Kind) -> f64 {
    match kind {
        Kind::Float => U_F32,
        Kind::Double => U_F64,
        Kind::Half => U_F16,
        other => panic!("no unit roundoff for {other:?}"),
    }
}

/// Roundings a sum of `n` terms adds on top of its terms', relative to Σ|terms|: `⌈log₂ n⌉` for
/// pairwise / blocked (vectorised) summation, as libtorch's reductions and GEMMs do, plus one for
/// the final combination of the blocks. A recursive (naive) sum would be `n − 1`; libtorch's CPU
/// reductions never sum sequentially over more than a vector's lanes before combining.
pub fn sum_depth(n: usize) -> f64 {
    (n.max(1) as f64).log2().ceil() + 1.0
}

/// The roundings a chain of elementwise operations adds, relative to its operands: each basic
/// operation (±, ×, ÷, √) rounds once (≤ 1 u), each vectorised transcendental (exp, log) is within
/// 4 ulp (SLEEF's and MKL's accuracy classes are 1.0–3.5 ulp), so 16 covers the criteria's longest
/// chains (normalise → similarity → softmax → log → ratio → product → scale).
pub const CHAIN_DEPTH: f64 = 16.0;

/// The worst element of a comparison under a bound.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// `max_i |got_i − want_i| / bound_i` (∞ for a non-finite `got`); ≤ 1 passes.
    pub ratio: f64,
    /// The index of the worst element.
    pub index: usize,
    /// The value computed there.
    pub got: f64,
    /// The reference value there.
    pub want: f64,
    /// The bound there.
    pub bound: f64,
}

impl Comparison {
    /// Whether every element is within its bound.
    pub fn passes(&self) -> bool {
        self.ratio <= 1.0
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}]: got {:e}, want {:e}, |Δ| = {:e}, bound {:e} ({:.3}× the bound)",
            self.index,
            self.got,
            self.want,
            (self.got - self.want).abs(),
            self.bound,
            self.ratio
        )
    }
}

/// Compares `got` with `want` element by element under `bound(i)` (> 0).
pub fn compare(got: &[f64], want: &[f64], bound: impl Fn(usize) -> f64) -> Comparison {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut worst = Comparison { ratio: 0.0, index: 0, got: 0.0, want: 0.0, bound: 0.0 };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let b = bound(i);
        assert!(b > 0.0 && b.is_finite(), "bound {b} at {i}");
        let ratio = if g.is_finite() { (g - w).abs() / b } else { f64::INFINITY };
        if ratio > worst.ratio || i == 0 {
            worst = Comparison { ratio, index: i, got: g, want: w, bound: b };
        }
    }
    worst
}

/// Compares two tensors of the same shape under one absolute bound for every element.
pub fn compare_tensors(got: &Tensor, want: &Tensor, bound: f64) -> Comparison {
    assert_eq!(got.size(), want.size(), "shapes differ");
    compare(&values(got), &values(want), |_| bound)
}

/// The values of a tensor as f64, flattened.
pub fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).reshape([-1])).expect("a float tensor")
}

/// Σ|x| in f64.
pub fn abs_sum(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).abs().sum(Kind::Double).double_value(&[])
}

/// max|x| in f64.
pub fn abs_max(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).abs().max().double_value(&[])
}

/// The Euclidean norm of all elements, in f64.
pub fn norm(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).square().sum(Kind::Double).sqrt().double_value(&[])
}

/// Prints a comparison's margin, for the record of a run (shown with `--nocapture`).
pub fn record(what: &str, comparison: &Comparison) {
    eprintln!("{what}: max |Δ| / bound = {:.3e} {comparison}", comparison.ratio);
}
