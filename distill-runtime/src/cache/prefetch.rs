//! [`Prefetch`]: gathers the next batches on a background thread while the step computes.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use tch::Tensor;

use super::batch::CachedBatch;
use super::reader::Store;
use crate::error::Result;

/// The batches of one epoch, gathered from a [`TeacherCache`](super::TeacherCache) by a background
/// thread, at most `depth` ahead of the loop that iterates them; from
/// [`TeacherCache::prefetch`](super::TeacherCache::prefetch).
///
/// Iterating yields one `Result<CachedBatch>` per id tensor given, in that order. Dropping it stops
/// the thread after the batch it is gathering.
#[derive(Debug)]
pub struct Prefetch {
    receiver: Option<Receiver<Result<CachedBatch>>>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetch {
    pub(crate) fn start(store: Store, ids: Vec<Tensor>, epoch: usize, depth: usize) -> Prefetch {
        let (sender, receiver) = sync_channel(depth.max(1));
        let thread = std::thread::spawn(move || {
            for batch_ids in ids {
                // A send fails only when the receiver is gone: nobody wants the rest.
                if sender.send(store.batch(&batch_ids, epoch)).is_err() {
                    break;
                }
            }
        });
        Prefetch { receiver: Some(receiver), thread: Some(thread) }
    }
}

impl Iterator for Prefetch {
    type Item = Result<CachedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Closing the channel first lets a thread blocked on a full channel finish.
        self.receiver.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
