//! Whether student channels can take distinct teacher channels: a bipartite matching in which a class
//! of `n` identical teacher channels can be taken `n` times.

use std::collections::VecDeque;

use super::budget::{Budget, Exhausted};

/// Matches every left vertex (a student channel, given as `(id, candidate classes)`) to one unit of
/// capacity of one of its candidate classes (`capacity[class]` units each), lower classes first.
/// `Ok(Err(id))` names a student channel that cannot be matched; each candidate scanned costs a unit
/// of `budget`.
///
/// Augmenting paths are searched breadth first: `O(V·E)` at worst, `O(E)` when the first free
/// candidates suffice.
pub(super) fn match_all(
    left: &[(usize, &[u32])],
    capacity: &[usize],
    budget: &mut Budget,
) -> Result<Result<(), usize>, Exhausted> {
    const NONE: usize = usize::MAX;
    let rights = capacity.len();
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); rights];
    let mut right_of = vec![NONE; left.len()];
    // `seen_*[x] == u` marks `x` as reached while augmenting from `u` (no reset between rounds).
    let (mut seen_right, mut parent_right) = (vec![NONE; rights], vec![0usize; rights]);
    let mut seen_left = vec![NONE; left.len()];
    let mut queue = VecDeque::new();
    for u in 0..left.len() {
        let candidates = left[u].1;
        budget.spend(candidates.len())?;
        if let Some(&r) = candidates.iter().find(|&&r| holders[r as usize].len() < capacity[r as usize]) {
            holders[r as usize].push(u);
            right_of[u] = r as usize;
            continue;
        }
        queue.clear();
        queue.push_back(u);
        seen_left[u] = u;
        let mut free = None;
        'bfs: while let Some(x) = queue.pop_front() {
            budget.spend(left[x].1.len())?;
            for &r in left[x].1 {
                let r = r as usize;
                if seen_right[r] == u {
                    continue;
                }
                seen_right[r] = u;
                parent_right[r] = x;
                if holders[r].len() < capacity[r] {
                    free = Some(r);
                    break 'bfs;
                }
                budget.spend(holders[r].len())?;
                for &y in &holders[r] {
                    if seen_left[y] != u {
                        seen_left[y] = u;
                        queue.push_back(y);
                    }
                }
            }
        }
        let Some(mut r) = free else { return Ok(Err(left[u].0)) };
        // Each vertex on the path moves to the class that reached it; the last one into the free unit.
        loop {
            let x = parent_right[r];
            let previous = right_of[x];
            if previous != NONE {
                let holder = &mut holders[previous];
                if let Some(position) = holder.iter().position(|&y| y == x) {
                    holder.swap_remove(position);
                }
            }
            holders[r].push(x);
            right_of[x] = r;
            if x == u {
                break;
            }
            r = previous;
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(left: &[&[u32]], capacity: &[usize]) -> Result<(), usize> {
        let left: Vec<(usize, &[u32])> = left.iter().copied().enumerate().map(|(i, c)| (10 + i, c)).collect();
        match_all(&left, capacity, &mut Budget::new(1_000)).unwrap()
    }

    #[test]
    fn augments_within_capacities_and_names_the_unmatched_channel() {
        assert_eq!(run(&[&[0, 1], &[0]], &[1, 1]), Ok(()));
        assert_eq!(run(&[&[0], &[0]], &[1, 1]), Err(11));
        assert_eq!(run(&[&[0], &[0]], &[2]), Ok(()));
        assert_eq!(run(&[&[2, 0], &[0, 1], &[0]], &[1, 1, 1]), Ok(()));
        // Two through class 0 (capacity 2) force the third to move along a path.
        assert_eq!(run(&[&[0, 1], &[0, 1], &[0], &[1]], &[2, 2]), Ok(()));
        assert_eq!(run(&[&[0, 1], &[0, 1], &[0], &[1], &[0]], &[2, 2]), Err(14));
        assert!(match_all(&[(0, &[0, 1][..]), (1, &[0])], &[1, 1], &mut Budget::new(2)).is_err());
    }
}
