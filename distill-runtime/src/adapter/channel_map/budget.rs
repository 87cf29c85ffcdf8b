//! A bound on the work of one channel-mapping problem, so that degenerate weights end in an error
//! instead of unbounded time or memory.

/// Units of work (a slice comparison, a candidate scanned, a list entry copied) one problem may
/// spend: about a second in a debug build, a tenth of that in a release build. Memory grows with
/// work, so this bounds it too.
pub(super) const WORK_BUDGET: usize = 30_000_000;

/// The work left to a problem.
pub(super) struct Budget {
    left: usize,
}

/// The budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Exhausted;

impl Budget {
    /// A budget of `units`.
    pub(crate) fn new(units: usize) -> Budget {
        Budget { left: units }
    }

    /// Spends `units`, or reports that they are not left.
    #[inline]
    pub(crate) fn spend(&mut self, units: usize) -> Result<(), Exhausted> {
        self.left = self.left.checked_sub(units).ok_or(Exhausted)?;
        Ok(())
    }

    /// Work spent so far out of `total`.
    pub(crate) fn spent(&self, total: usize) -> usize {
        total - self.left
    }
}
