//! Recording module inputs and outputs during a forward pass.
//!
//! tch has no forward hooks, so capture is built into the layers: every `distill::nn` layer (and every
//! child slot of `Seq`/`Sequential`, and `Tap<M>`) owns a [`TapId`] and passes each call through
//! [`record`]. While nothing is armed that costs one thread-local flag read per layer call.
//!
//! [`arm`] arms a set of `(tap, port)` requests on the calling thread only and returns an [`ArmGuard`];
//! dropping the guard — also while unwinding from a panic in forward — disarms and restores whatever
//! was armed before, so arming nests and never leaks into the next forward or into other threads.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use tch::Tensor;

use crate::point::Port;
pub use crate::point::TapId;

/// One thing to record during an armed forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TapRequest {
    /// The capture point.
    pub tap: TapId,
    /// Its input or its output.
    pub port: Port,
}

/// A tensor seen by a capture point, with libtorch's version counter at the time.
#[derive(Debug)]
pub struct Record {
    /// A shallow clone: shares storage and version counter with the tensor the model used.
    pub tensor: Tensor,
    /// `Tensor::internal_version` when recorded; a later change means an in-place edit.
    pub version: i64,
}

impl Record {
    fn of(tensor: &Tensor) -> Record {
        Record { tensor: tensor.shallow_clone(), version: tensor.internal_version() }
    }

    /// The version counter moved since capture: someone edited the tensor in place.
    pub(crate) fn modified_since_capture(&self) -> Option<i64> {
        let now = self.tensor.internal_version();
        (now != self.version).then_some(now)
    }
}

/// Everything recorded for one armed request, in call order.
#[derive(Debug)]
pub struct Recording {
    request: TapRequest,
    /// One record per call of the capture point, in call order.
    pub calls: Vec<Record>,
}

/// Up to this many armed requests are found by a linear scan (a few comparisons per layer call);
/// beyond it, through a hash index, so that a forward with thousands of endpoints stays linear.
const LINEAR_SCAN_LIMIT: usize = 32;

/// What one arming recorded; returned by [`ArmGuard::finish`].
#[derive(Debug, Default)]
pub struct Recordings {
    slots: Vec<Recording>,
    /// Position of each request in `slots`, when there are more than [`LINEAR_SCAN_LIMIT`].
    index: Option<HashMap<TapRequest, usize>>,
}

impl Recordings {
    /// One empty recording per distinct request, in order.
    fn new(requests: impl IntoIterator<Item = TapRequest>) -> Recordings {
        let mut recordings = Recordings::default();
        for request in requests {
            if recordings.position(request).is_some() {
                continue;
            }
            recordings.slots.push(Recording { request, calls: Vec::new() });
            let at = recordings.slots.len() - 1;
            match &mut recordings.index {
                Some(index) => {
                    index.insert(request, at);
                }
                None if recordings.slots.len() > LINEAR_SCAN_LIMIT => {
                    let index = recordings.slots.iter().enumerate().map(|(at, slot)| (slot.request, at)).collect();
                    recordings.index = Some(index);
                }
                None => {}
            }
        }
        recordings
    }

    fn position(&self, request: TapRequest) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&request).copied(),
            None => self.slots.iter().position(|slot| slot.request == request),
        }
    }

    /// The records of `request`; empty when it was not armed or did not run.
    pub fn take(&mut self, request: TapRequest) -> Vec<Record> {
        let slot = self.position(request).and_then(|at| self.slots.get_mut(at));
        slot.map(|slot| std::mem::take(&mut slot.calls)).unwrap_or_default()
    }

    /// The records of `request`, left in place; empty when it was not armed or did not run.
    pub fn get(&self, request: TapRequest) -> &[Record] {
        self.position(request).and_then(|at| self.slots.get(at)).map_or(&[], |slot| slot.calls.as_slice())
    }
}

thread_local! {
    // The hot-path flag: the only thing an idle layer reads.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static ACTIVE: RefCell<Option<Recordings>> = const { RefCell::new(None) };
}

/// Whether any capture is armed on this thread.
#[inline]
pub fn is_armed() -> bool {
    ARMED.with(Cell::get)
}

/// Runs `forward` on `input` as the call of capture point `tap`, recording the input and/or output
/// when they are armed on this thread. Layers call this around their own computation.
#[inline]
pub fn record(tap: TapId, input: &Tensor, forward: impl FnOnce(&Tensor) -> Tensor) -> Tensor {
    if !is_armed() {
        return forward(input);
    }
    note(tap, Port::Input, input);
    let output = forward(input);
    note(tap, Port::Output, &output);
    output
}

#[cold]
fn note(tap: TapId, port: Port, tensor: &Tensor) {
    let request = TapRequest { tap, port };
    ACTIVE.with(|active| {
        if let Some(recordings) = active.borrow_mut().as_mut() {
            if let Some(slot) = recordings.position(request).and_then(|at| recordings.slots.get_mut(at)) {
                slot.calls.push(Record::of(tensor));
            }
        }
    });
}

/// Arms `requests` on the calling thread until the returned guard is finished or dropped.
///
/// Arming nests: an inner arming replaces the outer one until its guard ends, then the outer one is
/// restored with what it had recorded.
pub fn arm(requests: impl IntoIterator<Item = TapRequest>) -> ArmGuard {
    let recordings = Recordings::new(requests);
    let armed = !recordings.slots.is_empty();
    let previous = ACTIVE.with(|active| active.replace(Some(recordings)));
    let previous_flag = ARMED.with(|flag| flag.replace(armed));
    ArmGuard { previous: Some(previous), previous_flag }
}

/// Keeps an arming alive; see [`arm`].
#[must_use = "dropping the guard disarms at once"]
#[derive(Debug)]
pub struct ArmGuard {
    previous: Option<Option<Recordings>>,
    previous_flag: bool,
}

impl ArmGuard {
    /// Disarms and returns what was recorded.
    pub fn finish(mut self) -> Recordings {
        self.restore().unwrap_or_default()
    }

    fn restore(&mut self) -> Option<Recordings> {
        let previous = self.previous.take()?;
        ARMED.with(|flag| flag.set(self.previous_flag));
        ACTIVE.with(|active| active.replace(previous))
    }
}

impl Drop for ArmGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(tap: TapId) -> TapRequest {
        TapRequest { tap, port: Port::Output }
    }

    #[test]
    fn records_only_armed_taps_and_disarms() {
        let (a, b) = (TapId::fresh(), TapId::fresh());
        let x = Tensor::from_slice(&[1.0f32, 2.0]);
        let guard = arm([out(a)]);
        assert!(is_armed());
        let y = record(a, &x, |x| x * 2);
        let _ = record(b, &y, |y| y + 1);
        let mut recs = guard.finish();
        assert!(!is_armed());
        let calls = recs.take(out(a));
        assert_eq!(calls.len(), 1);
        assert_eq!(Vec::<f32>::try_from(&calls[0].tensor).unwrap(), vec![2.0, 4.0]);
        assert!(recs.take(out(b)).is_empty());
    }

    #[test]
    fn nested_arming_restores_outer() {
        let (a, b) = (TapId::fresh(), TapId::fresh());
        let x = Tensor::from_slice(&[1.0f32]);
        let outer = arm([out(a)]);
        {
            let inner = arm([out(b)]);
            let _ = record(a, &x, |x| x + 1);
            let _ = record(b, &x, |x| x + 2);
            let mut recs = inner.finish();
            assert_eq!(recs.take(out(b)).len(), 1);
            assert!(recs.take(out(a)).is_empty());
        }
        assert!(is_armed());
        let _ = record(a, &x, |x| x + 1);
        assert_eq!(outer.finish().take(out(a)).len(), 1);
        assert!(!is_armed());
    }

    #[test]
    fn many_requests_are_found_through_the_index() {
        let taps: Vec<TapId> = (0..3 * LINEAR_SCAN_LIMIT).map(|_| TapId::fresh()).collect();
        let x = Tensor::from_slice(&[1.0f32]);
        // Every tap armed twice: duplicates are one request.
        let guard = arm(taps.iter().chain(&taps).map(|&tap| out(tap)));
        for (i, &tap) in taps.iter().enumerate().rev() {
            let _ = record(tap, &x, |x| x + i as f64);
        }
        let recs = guard.finish();
        assert!(recs.index.is_some());
        assert_eq!(recs.slots.len(), taps.len());
        for (i, &tap) in taps.iter().enumerate() {
            let calls = recs.get(out(tap));
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].tensor.double_value(&[0]), 1.0 + i as f64);
        }
        assert!(recs.get(out(TapId::fresh())).is_empty());
    }

    #[test]
    fn detects_in_place_edit() {
        let tap = TapId::fresh();
        let x = Tensor::from_slice(&[-1.0f32, 1.0]);
        let guard = arm([out(tap)]);
        let mut y = record(tap, &x, |x| x * 1);
        let _ = y.relu_();
        let recs = guard.finish();
        let call = &recs.get(out(tap))[0];
        assert!(call.modified_since_capture().is_some());
    }
}
