//! Recovering which channels a channel-pruned layer kept, from the weights alone.
//!
//! A pruned copy of a layer with weight `W` of shape `[O, I, k…]` has the weight
//! `T = W[output][:, input]` of shape `[o, i, k…]`, for some distinct kept output channels `output`
//! and distinct kept input channels `input`, in any order. [`find_conv2d_mapping`] recovers both lists
//! from `W` and `T`; the algorithm is described there.

use std::collections::VecDeque;

use tch::{Device, Kind, Tensor};

use crate::error::{DistillError, Result};

/// Work (slice comparisons and candidates scanned) the search may spend on choices it had to take back
/// before giving up: about a second in a debug build. A search that never backtracks is not limited.
const WASTE_BUDGET: usize = 5_000_000;

/// Which source channel each target channel was taken from.
///
/// For each target output channel `o` and input channel `i`:
/// `target[o][i] ≈ source[output[o]][input[i]]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelMapping {
    /// For each target output channel, the index of the source output channel it was taken from.
    pub output: Vec<i64>,
    /// For each target input channel, the index of the source input channel it was taken from.
    pub input: Vec<i64>,
}

/// How close two weights must be to count as equal: `|t − s| ≤ atol + rtol · |s|`, element by element
/// (`torch.allclose`'s rule, with `s` the source value). Exactly equal values always match, infinities
/// included; NaN never does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance, in `[0, 1)`.
    pub rtol: f64,
}

impl Default for Tolerance {
    /// `atol = 1e-6`, `rtol = 1e-5`: a pruned copy is normally bit-exact; this also accepts copies that
    /// went through another device or a float32 round trip of float64 weights.
    fn default() -> Self {
        Tolerance { atol: 1e-6, rtol: 1e-5 }
    }
}

impl Tolerance {
    /// Bit-exact comparison (`atol = rtol = 0`).
    pub const EXACT: Tolerance = Tolerance { atol: 0.0, rtol: 0.0 };

    /// A tolerance with the given absolute and relative parts.
    pub fn new(atol: f64, rtol: f64) -> Tolerance {
        Tolerance { atol, rtol }
    }

    fn validate(&self) -> Result<()> {
        if !(self.atol.is_finite() && self.atol >= 0.0 && self.rtol.is_finite() && (0.0..1.0).contains(&self.rtol)) {
            return Err(DistillError::InvalidArgument(format!(
                "invalid tolerance {self:?}: atol must be finite and ≥ 0, rtol in [0, 1)"
            )));
        }
        Ok(())
    }

    #[inline]
    fn close(&self, target: f64, source: f64) -> bool {
        target == source || (target - source).abs() <= self.atol + self.rtol * source.abs()
    }
}

/// Finds which output and input channels of the conv weight `source` (`[O, I, kh, kw]`) the conv weight
/// `target` (`[o, i, kh, kw]`) was sliced from, comparing with the default [`Tolerance`].
///
/// Kept channels may be in any order, and both axes may be pruned.
///
/// # Algorithm
///
/// Each weight is viewed as a grid of *slices*: `W[s][c]` is the `k…` kernel of source output channel
/// `s` and input channel `c` (a single number for a 1×1 kernel or a linear layer), `T[a][b]` likewise.
/// A mapping is valid when every target slice is close to its source slice:
/// `T[a][b] ≈ W[output[a]][input[b]]`, element by element, within the [`Tolerance`].
///
/// 1. **Index.** Exactly equal source slices are grouped into classes, sorted by L1 norm. For each
///    target slice with norm `n`, only classes whose norm lies in a window around `n` can match (the
///    window is derived from the tolerance, so it never excludes a match); each is compared element by
///    element. From then on, comparing a target slice with a source slice is a class look-up.
/// 2. **Candidates.** For each target output channel `a`, the candidate source outputs are those that
///    hold a match for `T[a][b]`, with `b` the input channel whose slice has the fewest matches; for
///    each target input channel `b`, symmetrically, from the output channel with the fewest matches. With
///    generic weights every list has a single entry here.
/// 3. **Consistency.** Candidates are pruned until every remaining source output `s` of `a` has, for
///    every `b`, a remaining source input `c` with `T[a][b] ≈ W[s][c]`, and symmetrically (arc
///    consistency). An empty list is a [`DistillError::NoChannelMapping`] naming the channel.
/// 4. **Assignment.** Depth-first search with forward checking: the unassigned channel (of either
///    axis) with the fewest candidates is assigned next, lowest source index first; each choice removes
///    that source from the other candidates of its axis, narrows the other axis to the candidates
///    consistent with it, and checks by bipartite matching that both axes can still take distinct
///    sources. A dead end takes the choice back. With generic weights every choice is forced; with
///    duplicate channels (equal within tolerance) any of the equal sources is a valid answer and the
///    lowest index is taken. Work spent on dead ends has a budget (about a second); exceeding it is
///    [`DistillError::AmbiguousChannelMapping`].
/// 5. **Verification.** The result is checked once more against every slice of the target.
///
/// With generic weights this costs `O((O·I + o·i)·(k + log(O·I)))`; it never compares every
/// target slice with every source slice unless the weights are degenerate (e.g. all zeros).
///
/// # Errors
/// - [`DistillError::InvalidArgument`] when a weight is not 4-D, is empty, is not real-valued, or the
///   kernel sizes differ (the message gives both shapes);
/// - [`DistillError::TargetWider`] when the target has more output or input channels than the source;
/// - [`DistillError::NoChannelMapping`] when no selection of source channels reproduces the target;
/// - [`DistillError::AmbiguousChannelMapping`] when near-identical channels make the search give up.
pub fn find_conv2d_mapping(source_weight: &Tensor, target_weight: &Tensor) -> Result<ChannelMapping> {
    find_conv2d_mapping_with_tolerance(source_weight, target_weight, Tolerance::default())
}

/// [`find_conv2d_mapping`] with an explicit tolerance.
pub fn find_conv2d_mapping_with_tolerance(
    source_weight: &Tensor,
    target_weight: &Tensor,
    tolerance: Tolerance,
) -> Result<ChannelMapping> {
    let source_shape = shape_of(source_weight, "source")?;
    let target_shape = shape_of(target_weight, "target")?;
    if source_shape.len() != 4 || target_shape.len() != 4 {
        return Err(DistillError::InvalidArgument(format!(
            "conv2d weights must be 4-D [out, in, kh, kw]: the source is {source_shape:?}, the target {target_shape:?}"
        )));
    }
    find_channel_mapping_with_tolerance(source_weight, target_weight, tolerance)
}

/// [`find_conv2d_mapping`] for weights of any layer laid out `[out, in, …]` with the same trailing
/// sizes: linear (`[out, in]`), conv1d/2d/3d.
pub fn find_channel_mapping(source_weight: &Tensor, target_weight: &Tensor) -> Result<ChannelMapping> {
    find_channel_mapping_with_tolerance(source_weight, target_weight, Tolerance::default())
}

/// [`find_channel_mapping`] with an explicit tolerance.
pub fn find_channel_mapping_with_tolerance(
    source_weight: &Tensor,
    target_weight: &Tensor,
    tolerance: Tolerance,
) -> Result<ChannelMapping> {
    tolerance.validate()?;
    let source_shape = shape_of(source_weight, "source")?;
    let target_shape = shape_of(target_weight, "target")?;
    if source_shape.len() < 2 || target_shape.len() != source_shape.len() || source_shape[2..] != target_shape[2..] {
        return Err(DistillError::InvalidArgument(format!(
            "cannot map channels between weights of shapes {source_shape:?} (source) and {target_shape:?} (target): \
             both must be [out, in, …] with the same kernel size"
        )));
    }
    if source_shape.contains(&0) || target_shape.contains(&0) {
        return Err(DistillError::InvalidArgument(format!(
            "cannot map channels of empty weights: the source is {source_shape:?}, the target {target_shape:?}"
        )));
    }
    for (axis, what) in [(0, "output channels"), (1, "input channels")] {
        if target_shape[axis] > source_shape[axis] {
            return Err(DistillError::TargetWider {
                what,
                source_size: source_shape[axis],
                target_size: target_shape[axis],
            });
        }
    }
    let problem = Problem::new(
        &values_of(source_weight)?,
        &values_of(target_weight)?,
        [source_shape[0], source_shape[1], target_shape[0], target_shape[1]].map(to_usize),
        source_shape[2..].iter().map(|&d| to_usize(d)).product(),
        tolerance,
    );
    let (output, input) = problem.solve()?;
    Ok(ChannelMapping {
        output: output.into_iter().map(|s| s as i64).collect(),
        input: input.into_iter().map(|c| c as i64).collect(),
    })
}

fn to_usize(d: i64) -> usize {
    usize::try_from(d).unwrap_or(0)
}

fn shape_of(weight: &Tensor, role: &str) -> Result<Vec<i64>> {
    if !weight.defined() {
        return Err(DistillError::InvalidArgument(format!("the {role} weight is an undefined tensor")));
    }
    Ok(weight.size())
}

/// The weight's values as `f64`, row-major, on the CPU.
fn values_of(weight: &Tensor) -> Result<Vec<f64>> {
    let kind = weight.f_kind()?;
    if matches!(kind, Kind::ComplexHalf | Kind::ComplexFloat | Kind::ComplexDouble) {
        return Err(DistillError::InvalidArgument(format!("cannot map channels of {kind:?} weights")));
    }
    let flat = weight.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?.f_view([-1])?;
    Ok(Vec::<f64>::try_from(&flat)?)
}

/// The mapping problem. Source slices that are exactly equal form a class; each target slice knows
/// the classes it matches within tolerance, so that comparing a target slice with a source slice is a
/// look-up.
struct Problem {
    source_out: usize,
    source_in: usize,
    target_out: usize,
    target_in: usize,
    tolerance: Tolerance,
    /// Class of each source slice `s * source_in + c`; [`NO_CLASS`] for slices holding NaN.
    class_of: Vec<usize>,
    /// Source slices of class `x`: `members[member_start[x]..member_start[x + 1]]`.
    member_start: Vec<usize>,
    members: Vec<usize>,
    /// Classes matched by target slice `t = a * target_in + b`: `matched[match_start[t]..match_start[t + 1]]`.
    match_start: Vec<usize>,
    matched: Vec<usize>,
}

/// The class of source slices holding NaN, which match nothing.
const NO_CLASS: usize = usize::MAX;

/// For each target channel of one axis, the source channels it may have been taken from, ascending.
type Candidates = Vec<Vec<usize>>;

/// What a failed search step blames.
#[derive(Clone, Copy)]
struct Blame {
    what: &'static str,
    channel: usize,
}

impl Problem {
    /// Indexes the slices of `source` (`[O][I][kernel]`) and `target` (`[o][i][kernel]`), flattened;
    /// `sizes` is `[O, I, o, i]`.
    fn new(source: &[f64], target: &[f64], sizes: [usize; 4], kernel: usize, tolerance: Tolerance) -> Problem {
        let [source_out, source_in, target_out, target_in] = sizes;
        let slice = |n: usize| &source[n * kernel..(n + 1) * kernel];
        let source_slices = source_out * source_in;
        let norms: Vec<f64> = (0..source_slices).map(|n| l1(slice(n))).collect();

        // Classes of equal slices, numbered in order of norm: equal slices have equal norms and are
        // adjacent once sorted by norm, then by value (with −0 = +0).
        let mut members: Vec<usize> = (0..source_slices).filter(|&n| !norms[n].is_nan()).collect();
        members.sort_by(|&x, &y| {
            norms[x].total_cmp(&norms[y]).then_with(|| {
                slice(x)
                    .iter()
                    .zip(slice(y))
                    .map(|(p, q)| (p + 0.0).total_cmp(&(q + 0.0)))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        });
        let mut class_of = vec![NO_CLASS; source_slices];
        let mut member_start = Vec::new();
        let mut class_norms = Vec::new();
        for (position, &n) in members.iter().enumerate() {
            let same = position > 0 && slice(members[position - 1]).iter().zip(slice(n)).all(|(p, q)| p == q);
            if !same {
                member_start.push(position);
                class_norms.push(norms[n]);
            }
            class_of[n] = member_start.len() - 1;
        }
        member_start.push(members.len());

        // The classes each target slice matches: candidates by norm window, then element by element.
        let mut match_start = Vec::with_capacity(target_out * target_in + 1);
        let mut matched = Vec::new();
        for t in 0..target_out * target_in {
            match_start.push(matched.len());
            let values = &target[t * kernel..(t + 1) * kernel];
            for class in window(&class_norms, l1(values), kernel, tolerance) {
                let rep = slice(members[member_start[class]]);
                if values.iter().zip(rep).all(|(&t, &w)| tolerance.close(t, w)) {
                    matched.push(class);
                }
            }
        }
        match_start.push(matched.len());
        Problem {
            source_out,
            source_in,
            target_out,
            target_in,
            tolerance,
            class_of,
            member_start,
            members,
            match_start,
            matched,
        }
    }

    /// The classes target slice `(a, b)` matches.
    #[inline]
    fn classes(&self, a: usize, b: usize) -> &[usize] {
        let t = a * self.target_in + b;
        &self.matched[self.match_start[t]..self.match_start[t + 1]]
    }

    /// How many source slices target slice `(a, b)` matches.
    fn match_count(&self, a: usize, b: usize) -> usize {
        self.classes(a, b).iter().map(|&x| self.member_start[x + 1] - self.member_start[x]).sum()
    }

    /// The source slices `(s, c)` target slice `(a, b)` matches.
    fn matching_slices(&self, a: usize, b: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.classes(a, b)
            .iter()
            .flat_map(|&x| &self.members[self.member_start[x]..self.member_start[x + 1]])
            .map(|&n| (n / self.source_in, n % self.source_in))
    }

    /// Whether target slice `(a, b)` matches source slice `(s, c)`.
    #[inline]
    fn matches(&self, a: usize, b: usize, s: usize, c: usize) -> bool {
        self.classes(a, b).contains(&self.class_of[s * self.source_in + c])
    }

    fn no_mapping(&self, blame: Blame) -> DistillError {
        DistillError::NoChannelMapping {
            what: blame.what,
            channel: blame.channel as i64,
            tolerance: self.tolerance.atol,
        }
    }

    fn solve(&self) -> Result<(Vec<usize>, Vec<usize>)> {
        let (mut outputs, mut inputs) = self.candidates()?;
        self.make_consistent(&mut outputs, &mut inputs)?;
        // Distinct channels must be available on both axes.
        matching(&inputs, self.source_in).map_err(|b| self.no_mapping(Blame { what: "input channel", channel: b }))?;
        matching(&outputs, self.source_out)
            .map_err(|a| self.no_mapping(Blame { what: "output channel", channel: a }))?;
        let (output, input) = self.search(outputs, inputs)?;
        for (a, &s) in output.iter().enumerate() {
            if !input.iter().enumerate().all(|(b, &c)| self.matches(a, b, s, c)) {
                return Err(self.no_mapping(Blame { what: "output channel", channel: a }));
            }
        }
        Ok((output, input))
    }

    /// Step 2: candidate source channels for each target output and input channel, each from the
    /// target slice with the fewest matches.
    fn candidates(&self) -> Result<(Candidates, Candidates)> {
        // Past this many matches, scanning channel by channel (stopping at the first match) is cheaper:
        // the weights are degenerate (e.g. many zeros) and matches are plentiful.
        let dense = 4 * (self.source_out + self.source_in);
        let mut outputs = Vec::with_capacity(self.target_out);
        for a in 0..self.target_out {
            let b = (0..self.target_in).min_by_key(|&b| self.match_count(a, b)).unwrap_or(0);
            let list = if self.match_count(a, b) > dense {
                (0..self.source_out).filter(|&s| (0..self.source_in).any(|c| self.matches(a, b, s, c))).collect()
            } else {
                sorted_unique(self.matching_slices(a, b).map(|(s, _)| s))
            };
            if list.is_empty() {
                return Err(self.no_mapping(Blame { what: "output channel", channel: a }));
            }
            outputs.push(list);
        }
        let mut inputs = Vec::with_capacity(self.target_in);
        for b in 0..self.target_in {
            let a = (0..self.target_out).min_by_key(|&a| self.match_count(a, b)).unwrap_or(0);
            let list = if self.match_count(a, b) > dense {
                (0..self.source_in).filter(|&c| (0..self.source_out).any(|s| self.matches(a, b, s, c))).collect()
            } else {
                sorted_unique(self.matching_slices(a, b).map(|(_, c)| c))
            };
            if list.is_empty() {
                return Err(self.no_mapping(Blame { what: "input channel", channel: b }));
            }
            inputs.push(list);
        }
        Ok((outputs, inputs))
    }

    /// Step 3: arc consistency between output and input candidates.
    fn make_consistent(&self, outputs: &mut [Vec<usize>], inputs: &mut [Vec<usize>]) -> Result<()> {
        loop {
            let mut changed = false;
            for (a, list) in outputs.iter_mut().enumerate() {
                let before = list.len();
                list.retain(|&s| inputs.iter().enumerate().all(|(b, cs)| cs.iter().any(|&c| self.matches(a, b, s, c))));
                if list.is_empty() {
                    return Err(self.no_mapping(Blame { what: "output channel", channel: a }));
                }
                changed |= list.len() != before;
            }
            for (b, list) in inputs.iter_mut().enumerate() {
                let before = list.len();
                list.retain(|&c| {
                    outputs.iter().enumerate().all(|(a, ss)| ss.iter().any(|&s| self.matches(a, b, s, c)))
                });
                if list.is_empty() {
                    return Err(self.no_mapping(Blame { what: "input channel", channel: b }));
                }
                changed |= list.len() != before;
            }
            if !changed {
                return Ok(());
            }
        }
    }

    /// Step 4: depth-first assignment with forward checking. The unassigned channel (of either axis)
    /// with the fewest candidates is assigned next, lowest candidate first; each assignment removes the
    /// chosen source channel from the other candidates of its axis, keeps on the other axis only the
    /// candidates consistent with it, and checks that both axes can still be matched to distinct
    /// sources. An empty candidate list or a failed matching takes the choice back.
    fn search(&self, outputs: Candidates, inputs: Candidates) -> Result<(Vec<usize>, Vec<usize>)> {
        let mut state = Search {
            problem: self,
            domains: [outputs, inputs],
            assigned: [vec![None; self.target_out], vec![None; self.target_in]],
            trail: Vec::new(),
            work: 0,
        };
        struct Frame {
            var: Var,
            values: Vec<usize>,
            next: usize,
            mark: usize,
        }
        let mut frames: Vec<Frame> = Vec::new();
        let (mut failed, mut waste) = (0usize, 0usize);
        let mut blame = (0usize, Blame { what: "output channel", channel: 0 });
        let mut descend = true;
        loop {
            if descend {
                let Some(var) = state.select() else {
                    let [output, input] =
                        state.assigned.map(|axis| axis.into_iter().map(Option::unwrap_or_default).collect());
                    return Ok((output, input));
                };
                let values = state.domains[var.axis][var.index].clone();
                frames.push(Frame { var, values, next: 0, mark: state.trail.len() });
            }
            let depth = frames.len();
            let Some(frame) = frames.last_mut() else {
                return Err(self.no_mapping(blame.1));
            };
            state.undo(frame.mark);
            state.assigned[frame.var.axis][frame.var.index] = None;
            descend = false;
            while frame.next < frame.values.len() {
                let value = frame.values[frame.next];
                frame.next += 1;
                state.work = 0;
                match state.assign(frame.var, value) {
                    Ok(()) => {
                        descend = true;
                        break;
                    }
                    Err(culprit) => {
                        failed += 1;
                        waste += state.work + 1;
                        if depth >= blame.0 {
                            blame = (depth, culprit);
                        }
                        state.undo(frame.mark);
                        state.assigned[frame.var.axis][frame.var.index] = None;
                        if waste > WASTE_BUDGET {
                            return Err(DistillError::AmbiguousChannelMapping {
                                steps: failed,
                                tolerance: self.tolerance.atol,
                            });
                        }
                    }
                }
            }
            if !descend {
                frames.pop();
                if frames.is_empty() {
                    return Err(self.no_mapping(blame.1));
                }
            }
        }
    }
}

/// A target channel: axis 0 = output channels, 1 = input channels.
#[derive(Clone, Copy)]
struct Var {
    axis: usize,
    index: usize,
}

const AXIS_NAMES: [&str; 2] = ["output channel", "input channel"];

/// The mutable state of [`Problem::search`]: candidate lists of both axes, assignments, and a trail of
/// replaced candidate lists for undoing.
struct Search<'p> {
    problem: &'p Problem,
    domains: [Candidates; 2],
    assigned: [Vec<Option<usize>>; 2],
    trail: Vec<(Var, Vec<usize>)>,
    /// Slice comparisons made since last reset.
    work: usize,
}

impl Search<'_> {
    /// The unassigned channel with the fewest candidates (input channels first, then lower index).
    fn select(&self) -> Option<Var> {
        [1, 0]
            .into_iter()
            .flat_map(|axis| {
                self.assigned[axis]
                    .iter()
                    .enumerate()
                    .filter(|(_, value)| value.is_none())
                    .map(move |(index, _)| Var { axis, index })
            })
            .min_by_key(|var| self.domains[var.axis][var.index].len())
    }

    fn replace(&mut self, var: Var, list: Vec<usize>) {
        let old = std::mem::replace(&mut self.domains[var.axis][var.index], list);
        self.trail.push((var, old));
    }

    fn undo(&mut self, mark: usize) {
        while self.trail.len() > mark {
            if let Some((var, list)) = self.trail.pop() {
                self.domains[var.axis][var.index] = list;
            }
        }
    }

    /// Whether target channel `var` taking source channel `value` is consistent with `other` (on the
    /// other axis) taking `other_value`.
    fn compatible(&mut self, var: Var, value: usize, other: usize, other_value: usize) -> bool {
        self.work += 1;
        if var.axis == 0 {
            self.problem.matches(var.index, other, value, other_value)
        } else {
            self.problem.matches(other, var.index, other_value, value)
        }
    }

    /// Assigns `value` to `var` and propagates; on failure, the channel whose candidates ran out.
    fn assign(&mut self, var: Var, value: usize) -> std::result::Result<(), Blame> {
        self.assigned[var.axis][var.index] = Some(value);
        self.replace(var, vec![value]);
        let (axis, other_axis) = (var.axis, 1 - var.axis);
        for index in 0..self.domains[axis].len() {
            if index == var.index || self.assigned[axis][index].is_some() {
                continue;
            }
            let list = &self.domains[axis][index];
            if list.contains(&value) {
                let kept: Vec<usize> = list.iter().copied().filter(|&v| v != value).collect();
                if kept.is_empty() {
                    return Err(Blame { what: AXIS_NAMES[axis], channel: index });
                }
                self.replace(Var { axis, index }, kept);
            }
        }
        for other in 0..self.domains[other_axis].len() {
            if self.assigned[other_axis][other].is_some() {
                continue;
            }
            let list = std::mem::take(&mut self.domains[other_axis][other]);
            let kept: Vec<usize> = list.iter().copied().filter(|&w| self.compatible(var, value, other, w)).collect();
            self.domains[other_axis][other] = list;
            if kept.is_empty() {
                return Err(Blame { what: AXIS_NAMES[other_axis], channel: other });
            }
            if kept.len() != self.domains[other_axis][other].len() {
                self.replace(Var { axis: other_axis, index: other }, kept);
            }
        }
        let sizes = [self.problem.source_out, self.problem.source_in];
        for axis in [other_axis, axis] {
            self.work += self.domains[axis].iter().map(Vec::len).sum::<usize>();
            matching(&self.domains[axis], sizes[axis]).map_err(|channel| Blame { what: AXIS_NAMES[axis], channel })?;
        }
        Ok(())
    }
}

/// The classes (by ascending `norms`) whose norm allows a match with a slice of L1 norm `norm`:
/// `|n_t − n_s| ≤ Σ|t − s| ≤ k·atol + rtol·n_s` bounds the source norm `n_s`, widened by a relative
/// 1e-9 so that rounding in the norms can never drop a match. NaN matches nothing.
fn window(norms: &[f64], norm: f64, kernel: usize, tolerance: Tolerance) -> std::ops::Range<usize> {
    if norm.is_nan() {
        return 0..0;
    }
    let slack = kernel as f64 * tolerance.atol;
    let lo = (norm - slack) / (1.0 + tolerance.rtol);
    let hi = (norm + slack) / (1.0 - tolerance.rtol);
    let lo = if lo.is_finite() { lo - lo.abs() * 1e-9 - f64::MIN_POSITIVE } else { lo };
    let hi = if hi.is_finite() { hi + hi.abs() * 1e-9 + f64::MIN_POSITIVE } else { hi };
    let start = norms.partition_point(|&n| n < lo);
    let end = norms.partition_point(|&n| n <= hi).max(start);
    start..end
}

fn l1(values: &[f64]) -> f64 {
    values.iter().map(|v| v.abs()).sum()
}

fn sorted_unique(items: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut list: Vec<usize> = items.collect();
    list.sort_unstable();
    list.dedup();
    list
}

/// A matching of every left vertex `u` to a distinct right vertex in `candidates[u]` (each list
/// ascending, lower ones preferred), or a left vertex that cannot be matched. Augmenting paths are
/// searched breadth first; `O(V·E)` at worst, `O(E)` when the first free candidates suffice.
fn matching(candidates: &[Vec<usize>], right: usize) -> std::result::Result<Vec<usize>, usize> {
    let mut left_of: Vec<Option<usize>> = vec![None; right];
    let mut right_of: Vec<usize> = vec![0; candidates.len()];
    let mut parent: Vec<usize> = vec![0; right];
    // `seen[r] == round` marks right vertex `r` as reached in the current round (no reset needed).
    let mut seen: Vec<usize> = vec![usize::MAX; right];
    let mut queue = VecDeque::new();
    for (u, direct) in candidates.iter().enumerate() {
        // Fast path: a free candidate of `u` itself.
        if let Some(&r) = direct.iter().find(|&&r| r < right && left_of[r].is_none()) {
            left_of[r] = Some(u);
            right_of[u] = r;
            continue;
        }
        queue.clear();
        queue.push_back(u);
        let mut free = None;
        'bfs: while let Some(x) = queue.pop_front() {
            for &r in &candidates[x] {
                if r >= right || seen[r] == u {
                    continue;
                }
                seen[r] = u;
                parent[r] = x;
                match left_of[r] {
                    None => {
                        free = Some(r);
                        break 'bfs;
                    }
                    Some(y) => queue.push_back(y),
                }
            }
        }
        let Some(mut r) = free else { return Err(u) };
        loop {
            let x = parent[r];
            let previous = right_of[x];
            left_of[r] = Some(x);
            right_of[x] = r;
            if x == u {
                break;
            }
            r = previous;
        }
    }
    Ok(right_of)
}

#[cfg(test)]
mod tests {
    use super::matching;

    #[test]
    fn matching_augments_and_reports_the_unmatched_vertex() {
        assert_eq!(matching(&[vec![0, 1], vec![0]], 2), Ok(vec![1, 0]));
        assert_eq!(matching(&[vec![0], vec![0]], 2), Err(1));
        assert_eq!(matching(&[vec![2, 0], vec![0, 1], vec![0]], 3), Ok(vec![2, 1, 0]));
    }
}
