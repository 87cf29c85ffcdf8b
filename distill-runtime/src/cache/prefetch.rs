//! [`Prefetch`]: gathers the next batches on a background thread while the step computes.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use super::batch::CachedBatch;
use crate::error::Result;

/// The batches of one epoch, gathered from a cache by a background thread, at most `depth` ahead of
/// the loop that iterates them: from [`TeacherCache::prefetch`](super::TeacherCache::prefetch)
/// (batches of [`CachedBatch`]) or [`TokenCache::prefetch`](super::TokenCache::prefetch) (batches
/// of [`CachedTokens`](super::CachedTokens)).
///
/// Iterating yields one `Result` per batch asked for, in that order. Dropping it stops the thread
/// after the batch it is gathering.
#[derive(Debug)]
pub struct Prefetch<B = CachedBatch> {
    receiver: Option<Receiver<Result<B>>>,
    thread: Option<JoinHandle<()>>,
}

impl<B: Send + 'static> Prefetch<B> {
    /// Runs `next` on a background thread until it returns `None`, keeping at most `depth` results
    /// ahead of the consumer.
    pub(crate) fn start(depth: usize, mut next: impl FnMut() -> Option<Result<B>> + Send + 'static) -> Prefetch<B> {
        let (sender, receiver) = sync_channel(depth.max(1));
        let thread = std::thread::spawn(move || {
            while let Some(batch) = next() {
                // A send fails only when the receiver is gone: nobody wants the rest.
                if sender.send(batch).is_err() {
                    break;
                }
            }
        });
        Prefetch { receiver: Some(receiver), thread: Some(thread) }
    }
}

impl<B> Iterator for Prefetch<B> {
    type Item = Result<B>;

    fn next(&mut self) -> Option<Self::Item> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl<B> Drop for Prefetch<B> {
    fn drop(&mut self) {
        // Closing the channel first lets a thread blocked on a full channel finish.
        self.receiver.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
