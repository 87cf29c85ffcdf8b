//! The index of a channel-mapping problem: teacher channels grouped into classes of identical
//! channels, and for each student slice the teacher slices it matches within tolerance.
//!
//! Weights are viewed as grids of *slices*: `W[s][c]` is the kernel (`k` numbers) of teacher output
//! channel `s` and input channel `c`, `T[a][b]` likewise for the student. Two teacher output channels
//! with identical slices over every input channel (and identical biases) compute identical outputs,
//! so they are one *class*: which of them a student channel was taken from cannot be told, and does
//! not matter. Input channels with identical slices over every output channel are one class likewise.
//! The search then works on the grid of classes, where a class of `n` channels can serve `n` student
//! channels.

use super::budget::{Budget, Exhausted};
use super::{Axis, Tolerance};

/// Relative widening of the norm window, so that rounding in the computed L1 norms can never drop a
/// match that the element-wise comparison would accept.
const NORM_ROUNDING_SLACK: f64 = 1e-9;

/// The slice class of teacher slices holding NaN, which match nothing (and are never identical).
const NO_CLASS: u32 = u32::MAX;

/// The weights' values and sizes, as the search sees them.
pub(super) struct Weights<'w> {
    /// Teacher values, `[O][I][kernel]` row-major.
    pub teacher: &'w [f64],
    /// Student values, `[o][i][kernel]` row-major.
    pub student: &'w [f64],
    /// Teacher bias (`O`), when the teacher layer has one: part of what makes output channels identical.
    pub teacher_bias: Option<&'w [f64]>,
    /// Student bias (`o`), when both layers have one: it must match the teacher bias too.
    pub student_bias: Option<&'w [f64]>,
    /// `[O, I]`.
    pub teacher_size: [usize; 2],
    /// `[o, i]`.
    pub student_size: [usize; 2],
    /// Elements per slice (`kh · kw`; 1 for a linear layer).
    pub kernel: usize,
}

/// The problem, indexed. Classes of an axis are numbered `0..class_count(axis)`.
pub(super) struct Index {
    student_size: [usize; 2],
    /// Teacher channels of each class of each axis, ascending.
    members: [Vec<Vec<usize>>; 2],
    /// The slice class at (output class `x`, input class `y`): `reduced[x * classes_in + y]`.
    reduced: Vec<u32>,
    /// The reduced cells `x * classes_in + y` holding slice class `z`: `cells[cell_start[z]..cell_start[z + 1]]`.
    cell_start: Vec<usize>,
    cells: Vec<usize>,
    /// Slice classes matched by student slice `t = a * i + b`, ascending:
    /// `matched[match_start[t]..match_start[t + 1]]`.
    match_start: Vec<usize>,
    matched: Vec<u32>,
    /// For each student output channel, the output classes its bias allows (all when `None`).
    bias_fits: Option<Vec<Vec<bool>>>,
}

impl Index {
    /// Indexes `weights`; the element-wise comparisons and recorded matches are charged to `budget`.
    pub(crate) fn build(weights: &Weights<'_>, tolerance: Tolerance, budget: &mut Budget) -> Result<Index, Exhausted> {
        let [teacher_out, teacher_in] = weights.teacher_size;
        let kernel = weights.kernel;
        let slice = |n: usize| &weights.teacher[n * kernel..(n + 1) * kernel];
        let (slice_class, class_reps, class_norms) = slice_classes(weights.teacher, teacher_out * teacher_in, kernel);

        // Output channels: identical rows of slice classes (and identical biases); input channels:
        // identical columns. NaN slices make a channel identical to no other.
        let row = |s: usize| &slice_class[s * teacher_in..(s + 1) * teacher_in];
        let out_members = group(teacher_out, row, weights.teacher_bias);
        let transposed: Vec<u32> = (0..teacher_in)
            .flat_map(|c| (0..teacher_out).map(move |s| (c, s)))
            .map(|(c, s)| slice_class[s * teacher_in + c])
            .collect();
        let column = |c: usize| &transposed[c * teacher_out..(c + 1) * teacher_out];
        let in_members = group(teacher_in, column, None);
        drop(transposed);

        let classes_in = in_members.len();
        let mut reduced = Vec::with_capacity(out_members.len() * classes_in);
        for rows in &out_members {
            reduced.extend(in_members.iter().map(|columns| slice_class[rows[0] * teacher_in + columns[0]]));
        }
        let (cell_start, cells) = cells_by_class(&reduced, class_reps.len());

        let [student_out, student_in] = weights.student_size;
        let mut match_start = Vec::with_capacity(student_out * student_in + 1);
        let mut matched = Vec::new();
        for t in 0..student_out * student_in {
            match_start.push(matched.len());
            let values = &weights.student[t * kernel..(t + 1) * kernel];
            let candidates = window(&class_norms, l1(values), kernel, tolerance);
            budget.spend(candidates.len() * kernel + 1)?;
            for class in candidates {
                if values.iter().zip(slice(class_reps[class])).all(|(&t, &w)| tolerance.close(t, w)) {
                    matched.push(class as u32);
                }
            }
        }
        match_start.push(matched.len());

        let bias_fits = match (weights.teacher_bias, weights.student_bias) {
            (Some(teacher), Some(student)) => Some(
                student
                    .iter()
                    .map(|&t| out_members.iter().map(|rows| tolerance.close(t, teacher[rows[0]])).collect())
                    .collect(),
            ),
            _ => None,
        };
        Ok(Index {
            student_size: weights.student_size,
            members: [out_members, in_members],
            reduced,
            cell_start,
            cells,
            match_start,
            matched,
            bias_fits,
        })
    }

    /// How many student channels the axis has.
    pub(crate) fn student_count(&self, axis: Axis) -> usize {
        self.student_size[axis.index()]
    }

    /// How many classes of teacher channels the axis has.
    pub(crate) fn class_count(&self, axis: Axis) -> usize {
        self.members[axis.index()].len()
    }

    /// The teacher channels of class `class` of `axis`, ascending.
    pub(crate) fn members(&self, axis: Axis, class: u32) -> &[usize] {
        &self.members[axis.index()][class as usize]
    }

    /// The slice classes student slice `(a, b)` matches, ascending.
    fn matched(&self, a: usize, b: usize) -> &[u32] {
        let t = a * self.student_size[1] + b;
        &self.matched[self.match_start[t]..self.match_start[t + 1]]
    }

    /// The slice classes matched by the student slice of channel `v` of `axis` and channel `w` of the
    /// other axis.
    fn matched_on(&self, axis: Axis, v: usize, w: usize) -> &[u32] {
        match axis {
            Axis::Output => self.matched(v, w),
            Axis::Input => self.matched(w, v),
        }
    }

    /// Whether student channel `v` of `axis` taking class `x`, and student channel `w` of the other axis
    /// taking class `y`, agree: the student slice at `(v, w)` matches the teacher slices at `(x, y)`.
    #[inline]
    pub(crate) fn fits(&self, axis: Axis, v: usize, x: u32, w: usize, y: u32) -> bool {
        let (output, input) = match axis {
            Axis::Output => (x, y),
            Axis::Input => (y, x),
        };
        let cell = self.reduced[output as usize * self.members[1].len() + input as usize];
        cell != NO_CLASS && self.matched_on(axis, v, w).binary_search(&cell).is_ok()
    }

    /// Whether student output channel `a`'s bias allows output class `x`.
    pub(crate) fn bias_fits(&self, a: usize, x: u32) -> bool {
        self.bias_fits.as_ref().is_none_or(|fits| fits[a][x as usize])
    }

    /// How many reduced cells the student slice at `(v, w)` matches.
    pub(crate) fn match_count(&self, axis: Axis, v: usize, w: usize) -> usize {
        self.matched_on(axis, v, w).iter().map(|&z| self.cell_start[z as usize + 1] - self.cell_start[z as usize]).sum()
    }

    /// The classes of `axis` holding a teacher slice that the student slice at `(v, w)` matches,
    /// ascending, without repeats.
    pub(crate) fn classes_matching(&self, axis: Axis, v: usize, w: usize) -> Vec<u32> {
        let classes_in = self.members[1].len();
        let mut classes: Vec<u32> = self
            .matched_on(axis, v, w)
            .iter()
            .flat_map(|&z| &self.cells[self.cell_start[z as usize]..self.cell_start[z as usize + 1]])
            .map(|&cell| match axis {
                Axis::Output => (cell / classes_in) as u32,
                Axis::Input => (cell % classes_in) as u32,
            })
            .collect();
        classes.sort_unstable();
        classes.dedup();
        classes
    }
}

/// Groups `count` teacher slices of `kernel` values into classes of exactly equal slices (`−0 = +0`;
/// slices holding NaN get [`NO_CLASS`]). Returns each slice's class, each class's representative
/// slice and its L1 norm; classes are numbered in ascending order of norm.
fn slice_classes(values: &[f64], count: usize, kernel: usize) -> (Vec<u32>, Vec<usize>, Vec<f64>) {
    let slice = |n: usize| &values[n * kernel..(n + 1) * kernel];
    let norms: Vec<f64> = (0..count).map(|n| l1(slice(n))).collect();
    // Sorted by norm, then first value: a cheap key that separates nearly all distinct slices.
    let keys: Vec<(u64, u64)> = (0..count).map(|n| (ordered(norms[n]), ordered(slice(n)[0]))).collect();
    let mut order: Vec<usize> = (0..count).filter(|&n| !norms[n].is_nan()).collect();
    order.sort_unstable_by_key(|&n| keys[n]);
    // Slices with equal keys that still differ are sorted by all their values, so that equal slices
    // are adjacent.
    let mut start = 0;
    while start < order.len() {
        let key = keys[order[start]];
        let end = start + order[start..].iter().take_while(|&&n| keys[n] == key).count();
        let run = &mut order[start..end];
        if kernel > 1 && run.iter().any(|&n| !same(slice(n), slice(run[0]))) {
            run.sort_unstable_by(|&x, &y| {
                let ordered_values = |n: usize| slice(n).iter().map(|&v| ordered(v));
                ordered_values(x).cmp(ordered_values(y))
            });
        }
        start = end;
    }
    let mut class_of = vec![NO_CLASS; count];
    let (mut reps, mut class_norms) = (Vec::new(), Vec::new());
    for (position, &n) in order.iter().enumerate() {
        if position == 0 || !same(slice(order[position - 1]), slice(n)) {
            reps.push(n);
            class_norms.push(norms[n]);
        }
        class_of[n] = (reps.len() - 1) as u32;
    }
    (class_of, reps, class_norms)
}

/// Whether two slices hold equal values (`−0 = +0`).
fn same(x: &[f64], y: &[f64]) -> bool {
    x.iter().zip(y).all(|(p, q)| p == q)
}

/// A key whose unsigned order is `f64::total_cmp`'s order of `value + 0.0` (so `−0` and `+0` are one).
fn ordered(value: f64) -> u64 {
    let bits = (value + 0.0).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// Groups `count` channels into classes of identical keys (and identical `extra` values, when
/// given); a key holding [`NO_CLASS`] or a NaN extra value makes its channel a class of its own.
/// Returns each class's channels, ascending; classes are numbered by their lowest channel.
fn group<'k>(count: usize, key: impl Fn(usize) -> &'k [u32], extra: Option<&[f64]>) -> Vec<Vec<usize>> {
    let unique = |n: usize| key(n).contains(&NO_CLASS) || extra.is_some_and(|e| e[n].is_nan());
    let extra_of = |n: usize| extra.map_or(0.0, |e| e[n] + 0.0);
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by(|&x, &y| {
        unique(x)
            .cmp(&unique(y))
            .then_with(|| key(x).cmp(key(y)))
            .then_with(|| extra_of(x).total_cmp(&extra_of(y)))
            .then(x.cmp(&y))
    });
    // Runs of equal keys, then numbered by their lowest channel.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for (position, &n) in order.iter().enumerate() {
        let previous = position.checked_sub(1).map(|p| order[p]);
        let same = previous.is_some_and(|p| !unique(p) && !unique(n) && key(p) == key(n) && extra_of(p) == extra_of(n));
        match runs.last_mut() {
            Some(run) if same => run.push(n),
            _ => runs.push(vec![n]),
        }
    }
    runs.sort_unstable_by_key(|run| run[0]);
    runs
}

/// The reduced cells of each slice class, as a compressed list: cells of class `z` are
/// `cells[start[z]..start[z + 1]]`.
fn cells_by_class(reduced: &[u32], classes: usize) -> (Vec<usize>, Vec<usize>) {
    let mut start = vec![0usize; classes + 1];
    for &z in reduced.iter().filter(|&&z| z != NO_CLASS) {
        start[z as usize + 1] += 1;
    }
    for z in 0..classes {
        start[z + 1] += start[z];
    }
    let mut next = start.clone();
    let mut cells = vec![0usize; start[classes]];
    for (cell, &z) in reduced.iter().enumerate().filter(|(_, &z)| z != NO_CLASS) {
        cells[next[z as usize]] = cell;
        next[z as usize] += 1;
    }
    (start, cells)
}

/// The classes (by ascending `norms`) whose norm allows a match with a slice of L1 norm `norm`:
/// `|n_t − n_s| ≤ Σ|t − s| ≤ k·atol + rtol·n_s` bounds the teacher norm `n_s`, widened by
/// [`NORM_ROUNDING_SLACK`]. NaN matches nothing.
///
/// A norm that overflowed to infinity still bounds the teacher norm from below: its exact value is
/// at least about `f64::MAX`, so the lower bound is taken from `f64::MAX`, not from infinity (which
/// would drop every finite teacher norm within tolerance of it).
fn window(norms: &[f64], norm: f64, kernel: usize, tolerance: Tolerance) -> std::ops::Range<usize> {
    if norm.is_nan() {
        return 0..0;
    }
    let slack = kernel as f64 * tolerance.atol;
    let lo = (norm.min(f64::MAX) - slack) / (1.0 + tolerance.rtol);
    let hi = (norm + slack) / (1.0 - tolerance.rtol);
    let lo = if lo.is_finite() { lo - lo.abs() * NORM_ROUNDING_SLACK - f64::MIN_POSITIVE } else { lo };
    let hi = if hi.is_finite() { hi + hi.abs() * NORM_ROUNDING_SLACK + f64::MIN_POSITIVE } else { hi };
    let start = norms.partition_point(|&n| n < lo);
    let end = norms.partition_point(|&n| n <= hi).max(start);
    start..end
}

fn l1(values: &[f64]) -> f64 {
    values.iter().map(|v| v.abs()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflowed_norm_still_reaches_finite_norms_within_tolerance() {
        // Four values of 0.45e308 overflow in f64 (exact sum 1.8e308 > f64::MAX ≈ 1.798e308), while
        // a slice of four 0.4494e308 (0.13% smaller each) has a finite norm of 1.7976e308, within
        // a 1% relative tolerance of the student's.
        let student = [0.45e308; 4];
        let teacher = [0.4494e308; 4];
        let norms = [1.0, l1(&teacher), f64::INFINITY];
        assert!(l1(&student).is_infinite() && norms[1].is_finite());
        let tolerance = Tolerance::new(0.0, 1e-2);
        assert!(student.iter().zip(&teacher).all(|(&s, &t)| tolerance.close(s, t)));
        assert_eq!(window(&norms, l1(&student), 4, tolerance), 1..3);
    }

    #[test]
    fn identical_channels_form_one_class() {
        // Rows 0 and 2 identical; row 1 has a NaN; columns 0 and 1 identical.
        let slices = [1, 1, 5, NO_CLASS, NO_CLASS, 4, 1, 1, 5];
        assert_eq!(group(3, |s| &slices[s * 3..s * 3 + 3], None), [vec![0, 2], vec![1]]);
        // Different biases split identical rows; a NaN bias is identical to nothing.
        assert_eq!(group(3, |s| &slices[s * 3..s * 3 + 3], Some(&[0.5, 0.0, -0.5])), [vec![0], vec![1], vec![2]]);
        let columns = [1, 1, 1, 1];
        assert_eq!(group(2, |c| &columns[c * 2..c * 2 + 2], Some(&[f64::NAN, f64::NAN])), [vec![0], vec![1]]);
        assert_eq!(cells_by_class(&[2, 0, 2, NO_CLASS], 3), (vec![0, 1, 1, 3], vec![1, 0, 2]));
    }
}
