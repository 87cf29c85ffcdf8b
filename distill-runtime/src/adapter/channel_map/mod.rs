//! Recovering which channels a channel-pruned layer kept, from the weights alone.
//!
//! A pruned copy of a layer with weight `W` of shape `[O, I, k…]` has the weight
//! `T = W[output][:, input]` of shape `[o, i, k…]`, for some distinct kept output channels `output`
//! and distinct kept input channels `input`, in any order. [`find_conv2d_mapping`] recovers both lists
//! from `W` and `T` when the weights determine them, and says so when they do not; the algorithm is
//! described there.
//!
//! - `index`: classes of identical teacher channels, and the teacher slices each student slice matches;
//! - `search`: candidates, consistency and the depth-first search, written once over an axis;
//! - `matching`: whether the student channels can take distinct teacher channels;
//! - `budget`: the bound on work (and so on time and memory) of one problem;
//! - `tolerance`: when two weights count as equal.

mod budget;
mod index;
mod matching;
mod search;
mod tolerance;

use tch::{Device, Kind, Tensor};

pub use crate::channels::ChannelMapping;
pub use crate::error::ChannelMapError;
use crate::error::Result;
use budget::{Budget, WORK_BUDGET};
use index::{Index, Weights};
use search::{candidates, propagate, search, Assignment, Domains, Stop};
pub use tolerance::Tolerance;

/// The two channel axes of a weight `[out, in, …]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    Output,
    Input,
}

/// Both axes, outputs first.
const AXES: [Axis; 2] = [Axis::Output, Axis::Input];

impl Axis {
    fn index(self) -> usize {
        self as usize
    }

    fn other(self) -> Axis {
        match self {
            Axis::Output => Axis::Input,
            Axis::Input => Axis::Output,
        }
    }

    /// What a channel of this axis is called in messages.
    fn channel(self) -> &'static str {
        match self {
            Axis::Output => "output channel",
            Axis::Input => "input channel",
        }
    }
}

/// Finds which output and input channels of the conv weight `teacher_weight` (`[O, I, kh, kw]`) the
/// conv weight `student_weight` (`[o, i, kh, kw]`) was sliced from, comparing values with `tolerance`
/// ([`Tolerance::default`] for a copy that is bit-exact or nearly so, [`Tolerance::EXACT`] for none).
///
/// Kept channels may be in any order, and both axes may be pruned. The answer is exact or an error:
/// when more than one selection of teacher channels reproduces the student and they would compute
/// different outputs, that is [`ChannelMapError::Ambiguous`] naming a channel and two of
/// its possible teacher channels — the weights cannot tell, and a guess would silently distill the wrong
/// channels. Teacher channels that are *identical* (equal slices over every channel of the other axis)
/// compute the same thing, so they are interchangeable rather than ambiguous: a student channel taken
/// from one of them gets the lowest unused index of the group. The pruning's own record of the kept
/// channels (`distill::prune`) is always exact; prefer it when you have it.
///
/// # Algorithm
///
/// Each weight is viewed as a grid of *slices*: `W[s][c]` is the `k…` kernel of teacher output channel
/// `s` and input channel `c` (a single number for a 1×1 kernel or a linear layer), `T[a][b]` likewise.
/// A mapping is valid when every student slice is close to its teacher slice:
/// `T[a][b] ≈ W[output[a]][input[b]]`, element by element, within the [`Tolerance`].
///
/// 1. **Index.** Exactly equal teacher slices form slice classes, sorted by L1 norm; teacher output
///    channels with identical slice classes over every input channel form an output class (identical
///    biases too, for a layer with a bias), and input channels likewise. For each student slice, only
///    slice classes whose norm lies in a window around its own can match (the window follows from the
///    tolerance, so it never excludes a match); each is compared element by element.
/// 2. **Candidates.** For each student output channel `a`, the output classes holding a match of
///    `T[a][b]`, with `b` the input channel whose slice has the fewest matches; symmetrically for each
///    student input channel. With generic weights every list has a single entry here.
/// 3. **Consistency.** Candidates are removed until every remaining class `x` of `a` has, for every `b`,
///    a remaining class `y` with `T[a][b] ≈ W[x][y]`, and symmetrically (arc consistency); then a
///    matching checks that each axis can take distinct teacher channels (a class of `n` identical
///    channels serves up to `n` student channels). An empty list is a
///    [`ChannelMapError::NoChannelMapping`] naming the channel.
/// 4. **Search.** Depth-first with forward checking: the unassigned channel with the fewest candidates
///    is assigned next, lowest class first; each choice narrows the other axis to the candidates that
///    agree with it and re-checks the matchings. A dead end takes the choice back.
/// 5. **Uniqueness.** For every candidate other than the one found, a search for a complete mapping
///    that uses it: finding one is [`ChannelMapError::Ambiguous`]; otherwise the candidate
///    is removed and consistency restored.
/// 6. **Verification.** The result is checked once more against every slice of the student.
///
/// With generic weights every list holds one class after step 2 and this costs
/// `O((O·I + o·i)·(k + log(O·I)))`. Identical channels (all-zero filters, say) collapse into classes
/// before the search, so they cost nothing extra. All work after the sort of step 1 is bounded by a
/// budget (about a second in a debug build); exceeding it is [`ChannelMapError::Undecided`].
///
/// # Errors
/// - [`ChannelMapError::UndefinedWeight`] when a weight is an undefined tensor;
/// - [`ChannelMapError::NotConv2d`], [`ChannelMapError::EmptyWeights`],
///   [`ChannelMapError::ComplexWeights`] or [`ChannelMapError::IncompatibleShapes`] when a weight is
///   not 4-D, is empty, is not real-valued, or the kernel sizes differ (the message gives both shapes);
/// - [`ChannelMapError::BiasShape`] when a bias is not one value per output channel;
/// - [`ChannelMapError::StudentWider`] when the student has more output or input channels than the teacher;
/// - [`ChannelMapError::TooManyChannels`] when the teacher has more output × input channels than
///   the search indexes;
/// - [`ChannelMapError::NoChannelMapping`] when no selection of teacher channels reproduces the student;
/// - [`ChannelMapError::Ambiguous`] when several selections that compute different outputs
///   reproduce it;
/// - [`ChannelMapError::Undecided`] when the budget ran out before either was decided;
/// - [`ChannelMapError::InvalidTolerance`] for an invalid tolerance.
pub fn find_conv2d_mapping(
    teacher_weight: &Tensor,
    student_weight: &Tensor,
    tolerance: Tolerance,
) -> Result<ChannelMapping> {
    let teacher_shape = shape_of(teacher_weight, "teacher")?;
    let student_shape = shape_of(student_weight, "student")?;
    if teacher_shape.len() != 4 || student_shape.len() != 4 {
        return Err(ChannelMapError::NotConv2d { teacher_shape, student_shape }.into());
    }
    find_channel_mapping(teacher_weight, student_weight, tolerance)
}

/// [`find_conv2d_mapping`] for weights of any layer laid out `[out, in, …]` with the same trailing
/// sizes: linear (`[out, in]`), conv1d/2d/3d.
///
/// # Errors
/// As [`find_conv2d_mapping`], with [`ChannelMapError::IncompatibleShapes`] for weights of
/// different ranks or trailing sizes.
pub fn find_channel_mapping(
    teacher_weight: &Tensor,
    student_weight: &Tensor,
    tolerance: Tolerance,
) -> Result<ChannelMapping> {
    find_layer_mapping(teacher_weight, None, student_weight, None, tolerance)
}

/// The mapping between two layers given by their weights and optional biases (`[out]`). A teacher
/// bias makes output channels with identical weights but different biases distinct; when both have
/// one, the student's must match the teacher's too.
pub(crate) fn find_layer_mapping(
    teacher_weight: &Tensor,
    teacher_bias: Option<&Tensor>,
    student_weight: &Tensor,
    student_bias: Option<&Tensor>,
    tolerance: Tolerance,
) -> Result<ChannelMapping> {
    tolerance.validate()?;
    let teacher_shape = shape_of(teacher_weight, "teacher")?;
    let student_shape = shape_of(student_weight, "student")?;
    if teacher_shape.len() < 2 || student_shape.len() != teacher_shape.len() || teacher_shape[2..] != student_shape[2..]
    {
        return Err(ChannelMapError::IncompatibleShapes { teacher_shape, student_shape }.into());
    }
    if teacher_shape.contains(&0) || student_shape.contains(&0) {
        return Err(ChannelMapError::EmptyWeights { teacher_shape, student_shape }.into());
    }
    for (axis, what) in [(0, "output channels"), (1, "input channels")] {
        if student_shape[axis] > teacher_shape[axis] {
            let (teacher_size, student_size) = (teacher_shape[axis], student_shape[axis]);
            return Err(ChannelMapError::StudentWider { what, teacher_size, student_size }.into());
        }
    }
    let teacher_slices = teacher_shape[0].checked_mul(teacher_shape[1]).filter(|&n| n < i64::from(u32::MAX));
    if teacher_slices.is_none() {
        return Err(ChannelMapError::TooManyChannels { shape: teacher_shape }.into());
    }
    let teacher_bias = bias_values(teacher_bias, teacher_shape[0], "teacher")?;
    // The student's bias only constrains the mapping when the teacher has one to compare with.
    let student_bias = match teacher_bias {
        Some(_) => bias_values(student_bias, student_shape[0], "student")?,
        None => None,
    };
    let (teacher, student) = (values_of(teacher_weight)?, values_of(student_weight)?);
    let weights = Weights {
        teacher: &teacher,
        student: &student,
        teacher_bias: teacher_bias.as_deref(),
        student_bias: student_bias.as_deref(),
        teacher_size: [to_usize(teacher_shape[0]), to_usize(teacher_shape[1])],
        student_size: [to_usize(student_shape[0]), to_usize(student_shape[1])],
        kernel: teacher_shape[2..].iter().map(|&d| to_usize(d)).product(),
    };
    let mut budget = Budget::new(WORK_BUDGET);
    let undecided =
        |budget: &Budget| ChannelMapError::Undecided { work: budget.spent(WORK_BUDGET), tolerance: tolerance.atol };
    let index = Index::build(&weights, tolerance, &mut budget).map_err(|_| undecided(&budget))?;
    drop((teacher, student));
    let assignment = solve(&index, &mut budget).map_err(|failure| match failure {
        Failure::Stop(Stop::Budget) => undecided(&budget),
        Failure::Stop(Stop::Dead(var)) => ChannelMapError::NoChannelMapping {
            what: var.axis.channel(),
            channel: var.index as i64,
            tolerance: tolerance.atol,
        },
        Failure::Ambiguous { axis, channel, first, second } => ChannelMapError::Ambiguous {
            what: axis.channel(),
            channel: channel as i64,
            first: first as i64,
            second: second as i64,
            tolerance: tolerance.atol,
        },
    })?;
    let [output, input] = AXES.map(|axis| channels_of(&index, axis, &assignment[axis.index()]));
    Ok(ChannelMapping { output, input })
}

/// Why [`solve`] found no single answer.
enum Failure {
    Stop(Stop),
    /// Student `channel` of `axis` fits teacher channel `first` (the answer found) and `second`, each
    /// in a complete mapping, and the two are not identical.
    Ambiguous {
        axis: Axis,
        channel: usize,
        first: usize,
        second: usize,
    },
}

impl From<Stop> for Failure {
    fn from(stop: Stop) -> Failure {
        Failure::Stop(stop)
    }
}

impl From<budget::Exhausted> for Failure {
    fn from(_: budget::Exhausted) -> Failure {
        Failure::Stop(Stop::Budget)
    }
}

/// Steps 2–6: the one assignment of classes to student channels, or why there is none or more.
fn solve(index: &Index, budget: &mut Budget) -> std::result::Result<Assignment, Failure> {
    let mut domains = candidates(index, budget)?;
    propagate(index, &mut domains, budget)?;
    let found = search(index, domains.clone(), budget)?;
    for axis in AXES {
        for v in 0..index.student_count(axis) {
            let chosen = found[axis.index()][v];
            let others: Vec<u32> = domains[axis.index()][v].iter().copied().filter(|&x| x != chosen).collect();
            for x in others {
                let mut trial: Domains = domains.clone();
                budget.spend(trial.iter().flatten().map(Vec::len).sum())?;
                trial[axis.index()][v] = vec![x];
                let alternative = propagate(index, &mut trial, budget).and_then(|()| search(index, trial, budget));
                match alternative {
                    Ok(_) => {
                        let (first, second) = (index.members(axis, chosen)[0], index.members(axis, x)[0]);
                        return Err(Failure::Ambiguous { axis, channel: v, first, second });
                    }
                    Err(Stop::Dead(_)) => {
                        domains[axis.index()][v].retain(|&y| y != x);
                        propagate(index, &mut domains, budget)?;
                    }
                    Err(Stop::Budget) => return Err(Failure::Stop(Stop::Budget)),
                }
            }
        }
    }
    verify(index, &found, budget)?;
    Ok(found)
}

/// Step 6: every student slice matches the teacher slice the assignment gives it.
fn verify(index: &Index, found: &Assignment, budget: &mut Budget) -> std::result::Result<(), Failure> {
    let [outputs, inputs] = found;
    budget.spend(outputs.len() * inputs.len())?;
    for (a, &x) in outputs.iter().enumerate() {
        if inputs.iter().enumerate().any(|(b, &y)| !index.fits(Axis::Output, a, x, b, y)) {
            return Err(Failure::Stop(Stop::Dead(search::Var { axis: Axis::Output, index: a })));
        }
    }
    Ok(())
}

/// The teacher channel of each student channel of `axis`: the student channels of a class take its
/// members in ascending order.
fn channels_of(index: &Index, axis: Axis, classes: &[u32]) -> Vec<i64> {
    let mut used = vec![0usize; index.class_count(axis)];
    classes
        .iter()
        .map(|&x| {
            let members = index.members(axis, x);
            let taken = &mut used[x as usize];
            // The matching gave each class at most as many student channels as it has members.
            let channel = members.get(*taken).or(members.last()).copied().unwrap_or_default();
            *taken += 1;
            channel as i64
        })
        .collect()
}

fn to_usize(d: i64) -> usize {
    usize::try_from(d).unwrap_or(0)
}

fn shape_of(weight: &Tensor, role: &'static str) -> Result<Vec<i64>> {
    if !weight.defined() {
        return Err(ChannelMapError::UndefinedWeight { role }.into());
    }
    Ok(weight.size())
}

/// A bias's values, checked to be `[channels]`; `None` for no (or an undefined) bias.
fn bias_values(bias: Option<&Tensor>, channels: i64, role: &'static str) -> Result<Option<Vec<f64>>> {
    let Some(bias) = bias.filter(|b| b.defined()) else { return Ok(None) };
    if bias.size() != [channels] {
        return Err(ChannelMapError::BiasShape { role, shape: bias.size(), channels }.into());
    }
    values_of(bias).map(Some)
}

/// A tensor's values as `f64`, row-major, on the CPU.
fn values_of(weight: &Tensor) -> Result<Vec<f64>> {
    let kind = weight.f_kind()?;
    if matches!(kind, Kind::ComplexHalf | Kind::ComplexFloat | Kind::ComplexDouble) {
        return Err(ChannelMapError::ComplexWeights { kind }.into());
    }
    let flat = weight.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?.f_view([-1])?;
    Ok(Vec::<f64>::try_from(&flat)?)
}
