//! Candidates, consistency and the depth-first search of the channel mapping, written once over an
//! axis: student output channels take teacher output classes, student input channels take teacher input
//! classes, and the two must agree on every student slice.

use super::budget::{Budget, Exhausted};
use super::index::Index;
use super::matching::match_all;
use super::{Axis, AXES};

/// Past this many matching cells per class, a student slice's candidates are found by scanning the
/// classes (stopping at the first match) rather than by listing its matches: the weights are then
/// degenerate (e.g. many zeros) and matches are plentiful.
const DENSE_FACTOR: usize = 4;

/// A student channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Var {
    /// Which axis.
    pub axis: Axis,
    /// Its index on the axis.
    pub index: usize,
}

/// Why a step stopped.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stop {
    /// The work budget ran out.
    Budget,
    /// No candidate is left for this student channel.
    Dead(Var),
}

impl From<Exhausted> for Stop {
    fn from(_: Exhausted) -> Stop {
        Stop::Budget
    }
}

/// For each axis, each student channel's candidate classes, ascending.
pub(super) type Domains = [Vec<Vec<u32>>; 2];

/// The class each student channel takes, per axis.
pub(super) type Assignment = [Vec<u32>; 2];

/// The candidate classes of every student channel: for channel `v` of an axis, the classes holding a
/// teacher slice that the student slice `(v, w)` matches, with `w` the channel of the other axis whose
/// slice has the fewest matches (so generic weights give one candidate each). Output channels must
/// also fit the bias.
pub(super) fn candidates(index: &Index, budget: &mut Budget) -> Result<Domains, Stop> {
    let mut domains: Domains = [Vec::new(), Vec::new()];
    for axis in AXES {
        let other = axis.other();
        let dense = DENSE_FACTOR * (index.class_count(axis) + index.class_count(other));
        for v in 0..index.student_count(axis) {
            budget.spend(index.student_count(other))?;
            let Some((count, w)) = (0..index.student_count(other)).map(|w| (index.match_count(axis, v, w), w)).min()
            else {
                return Err(Stop::Dead(Var { axis, index: v }));
            };
            budget.spend(count.min(dense) + 1)?;
            let mut list = if count > dense {
                let mut list = Vec::new();
                for x in 0..index.class_count(axis) as u32 {
                    let classes = index.class_count(other) as u32;
                    if let Some(y) = (0..classes).find(|&y| index.fits(axis, v, x, w, y)) {
                        budget.spend(y as usize + 1)?;
                        list.push(x);
                    } else {
                        budget.spend(classes as usize)?;
                    }
                }
                list
            } else {
                index.classes_matching(axis, v, w)
            };
            if axis == Axis::Output {
                list.retain(|&x| index.bias_fits(v, x));
            }
            if list.is_empty() {
                return Err(Stop::Dead(Var { axis, index: v }));
            }
            domains[axis.index()].push(list);
        }
    }
    Ok(domains)
}

/// Removes every candidate that no candidate of some channel of the other axis agrees with, until
/// none is removed (arc consistency), then checks that each axis can still take distinct teacher
/// channels.
pub(super) fn propagate(index: &Index, domains: &mut Domains, budget: &mut Budget) -> Result<(), Stop> {
    loop {
        let mut changed = false;
        for axis in AXES {
            let other = axis.other().index();
            for v in 0..domains[axis.index()].len() {
                let before = std::mem::take(&mut domains[axis.index()][v]);
                let mut kept = Vec::with_capacity(before.len());
                for &x in &before {
                    if supported(index, &domains[other], Var { axis, index: v }, x, budget)? {
                        kept.push(x);
                    }
                }
                if kept.is_empty() {
                    return Err(Stop::Dead(Var { axis, index: v }));
                }
                changed |= kept.len() != before.len();
                domains[axis.index()][v] = kept;
            }
        }
        if !changed {
            break;
        }
    }
    for axis in AXES {
        let left: Vec<(usize, &[u32])> = domains[axis.index()].iter().map(Vec::as_slice).enumerate().collect();
        let capacity = capacities(index, axis);
        match_all(&left, &capacity, budget)?.map_err(|v| Stop::Dead(Var { axis, index: v }))?;
    }
    Ok(())
}

/// Whether `var` taking class `x` agrees with some candidate of every channel of the other axis.
fn supported(index: &Index, others: &[Vec<u32>], var: Var, x: u32, budget: &mut Budget) -> Result<bool, Stop> {
    for (w, candidates) in others.iter().enumerate() {
        match candidates.iter().position(|&y| index.fits(var.axis, var.index, x, w, y)) {
            Some(position) => budget.spend(position + 1)?,
            None => {
                budget.spend(candidates.len() + 1)?;
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn capacities(index: &Index, axis: Axis) -> Vec<usize> {
    (0..index.class_count(axis) as u32).map(|x| index.members(axis, x).len()).collect()
}

/// An undoable change of the search state.
enum Undo {
    Domain(Var, Vec<u32>),
    Capacity(Axis, u32),
    Assigned(Var),
}

/// The state of a depth-first search: candidate lists, the capacity left in each class, which
/// channels are assigned, and a trail of changes to take back.
struct Search<'i, 'b> {
    index: &'i Index,
    budget: &'b mut Budget,
    domains: Domains,
    capacity: [Vec<usize>; 2],
    assigned: [Vec<bool>; 2],
    trail: Vec<Undo>,
}

/// A complete assignment consistent with `domains` (which [`propagate`] must have made consistent),
/// or the channel blamed for there being none. Channels with a single candidate are forced; the
/// unassigned channel with the fewest candidates is assigned next, lowest class first; each choice
/// takes a unit of its class's capacity, narrows the other axis to the candidates that agree with
/// it, and checks that both axes can still be matched. A dead end takes the choice back.
pub(super) fn search(index: &Index, domains: Domains, budget: &mut Budget) -> Result<Assignment, Stop> {
    let capacity = [capacities(index, Axis::Output), capacities(index, Axis::Input)];
    let assigned = [vec![false; domains[0].len()], vec![false; domains[1].len()]];
    let mut state = Search { index, budget, domains, capacity, assigned, trail: Vec::new() };
    state.force_singletons()?;

    struct Frame {
        var: Var,
        values: Vec<u32>,
        next: usize,
        mark: usize,
    }
    let mut frames: Vec<Frame> = Vec::new();
    // The channel that ran out of candidates at the greatest depth.
    let mut blame: Option<(usize, Var)> = None;
    let mut descend = true;
    loop {
        if descend {
            let Some(var) = state.select()? else {
                return Ok(state.domains.map(|axis| axis.into_iter().map(|list| list[0]).collect()));
            };
            let values = state.domains[var.axis.index()][var.index].clone();
            frames.push(Frame { var, values, next: 0, mark: state.trail.len() });
        }
        let depth = frames.len();
        let Some(frame) = frames.last_mut() else {
            return Err(Stop::Dead(blame.map_or(Var { axis: Axis::Output, index: 0 }, |b| b.1)));
        };
        state.undo(frame.mark);
        descend = false;
        while frame.next < frame.values.len() {
            let value = frame.values[frame.next];
            frame.next += 1;
            match state.assign(frame.var, value) {
                Ok(()) => {
                    descend = true;
                    break;
                }
                Err(Stop::Dead(culprit)) => {
                    if blame.is_none_or(|(d, _)| depth >= d) {
                        blame = Some((depth, culprit));
                    }
                    state.undo(frame.mark);
                }
                Err(Stop::Budget) => return Err(Stop::Budget),
            }
        }
        if !descend {
            frames.pop();
            if frames.is_empty() {
                return Err(Stop::Dead(blame.map_or(Var { axis: Axis::Output, index: 0 }, |b| b.1)));
            }
        }
    }
}

impl Search<'_, '_> {
    /// Assigns every channel with a single candidate. [`propagate`] made every other candidate agree
    /// with them and checked the capacities, so only the classes they fill need to leave the other
    /// candidate lists.
    fn force_singletons(&mut self) -> Result<(), Stop> {
        for axis in AXES {
            for v in 0..self.domains[axis.index()].len() {
                if let [x] = self.domains[axis.index()][v][..] {
                    self.assigned[axis.index()][v] = true;
                    let left = &mut self.capacity[axis.index()][x as usize];
                    *left = left.checked_sub(1).ok_or(Stop::Dead(Var { axis, index: v }))?;
                }
            }
            for x in 0..self.capacity[axis.index()].len() as u32 {
                if self.capacity[axis.index()][x as usize] == 0 {
                    self.remove_class(axis, x)?;
                }
            }
        }
        self.trail.clear();
        Ok(())
    }

    /// The unassigned channel with the fewest candidates (outputs first, then lower index).
    fn select(&mut self) -> Result<Option<Var>, Stop> {
        self.budget.spend(self.domains[0].len() + self.domains[1].len())?;
        Ok(AXES
            .into_iter()
            .flat_map(|axis| {
                let assigned = &self.assigned[axis.index()];
                (0..assigned.len()).filter(move |&v| !assigned[v]).map(move |index| Var { axis, index })
            })
            .min_by_key(|var| self.domains[var.axis.index()][var.index].len()))
    }

    fn replace(&mut self, var: Var, list: Vec<u32>) {
        let old = std::mem::replace(&mut self.domains[var.axis.index()][var.index], list);
        self.trail.push(Undo::Domain(var, old));
    }

    fn undo(&mut self, mark: usize) {
        while self.trail.len() > mark {
            match self.trail.pop() {
                Some(Undo::Domain(var, list)) => self.domains[var.axis.index()][var.index] = list,
                Some(Undo::Capacity(axis, x)) => self.capacity[axis.index()][x as usize] += 1,
                Some(Undo::Assigned(var)) => self.assigned[var.axis.index()][var.index] = false,
                None => {}
            }
        }
    }

    /// Removes class `x` from the candidates of the unassigned channels of `axis`.
    fn remove_class(&mut self, axis: Axis, x: u32) -> Result<(), Stop> {
        for v in 0..self.domains[axis.index()].len() {
            if self.assigned[axis.index()][v] {
                continue;
            }
            let list = &self.domains[axis.index()][v];
            self.budget.spend(list.len())?;
            if list.contains(&x) {
                let kept: Vec<u32> = list.iter().copied().filter(|&y| y != x).collect();
                if kept.is_empty() {
                    return Err(Stop::Dead(Var { axis, index: v }));
                }
                self.replace(Var { axis, index: v }, kept);
            }
        }
        Ok(())
    }

    /// Assigns class `x` to `var` and propagates; on failure, the channel whose candidates ran out.
    fn assign(&mut self, var: Var, x: u32) -> Result<(), Stop> {
        let (axis, other) = (var.axis, var.axis.other());
        self.assigned[axis.index()][var.index] = true;
        self.trail.push(Undo::Assigned(var));
        self.replace(var, vec![x]);
        self.capacity[axis.index()][x as usize] -= 1;
        self.trail.push(Undo::Capacity(axis, x));
        if self.capacity[axis.index()][x as usize] == 0 {
            self.remove_class(axis, x)?;
        }
        for w in 0..self.domains[other.index()].len() {
            if self.assigned[other.index()][w] {
                continue;
            }
            let list = &self.domains[other.index()][w];
            self.budget.spend(list.len())?;
            let kept: Vec<u32> = list.iter().copied().filter(|&y| self.index.fits(axis, var.index, x, w, y)).collect();
            if kept.is_empty() {
                return Err(Stop::Dead(Var { axis: other, index: w }));
            }
            if kept.len() != self.domains[other.index()][w].len() {
                self.replace(Var { axis: other, index: w }, kept);
            }
        }
        for axis in [other, axis] {
            let left: Vec<(usize, &[u32])> = self.domains[axis.index()]
                .iter()
                .enumerate()
                .filter(|&(v, _)| !self.assigned[axis.index()][v])
                .map(|(v, list)| (v, list.as_slice()))
                .collect();
            match_all(&left, &self.capacity[axis.index()], self.budget)?
                .map_err(|index| Stop::Dead(Var { axis, index }))?;
        }
        Ok(())
    }
}
