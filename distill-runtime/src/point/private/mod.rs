//! The identity of a capture point: glue of the layers' capture, reached by generated code and the
//! facade's layers through `__private`, not public API.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identity of a capture point.
///
/// Identity is not the address: zero-sized layers and first fields share addresses, and moving a
/// model moves them. Ids are drawn from a process-wide counter when a layer is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TapId(NonZeroU64);

impl TapId {
    /// A new id, distinct from every other id of this process.
    pub fn fresh() -> TapId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // The counter starts at 1 and would need 2^64 layers to wrap to 0.
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        TapId(NonZeroU64::new(id).unwrap_or(NonZeroU64::MAX))
    }
}
