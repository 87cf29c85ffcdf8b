//! [`Prefetch`]: gathers the next batches on a background thread while the step computes.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use super::batch::CachedBatch;
use crate::cache::CacheError;
use crate::error::Result;

/// The batches of one epoch, gathered from a cache by a background thread, at most `depth` ahead of
/// the loop that iterates them: from [`TeacherCache::prefetch`](super::TeacherCache::prefetch)
/// (batches of [`CachedBatch`]) or [`TokenCache::prefetch`](super::TokenCache::prefetch) (batches
/// of [`CachedTokens`](super::CachedTokens)).
///
/// Iterating yields one `Result` per batch asked for, in that order. Should the thread panic, the
/// batch after the last one it gave is a [`CacheError::PrefetchPanicked`] and iteration ends there:
/// an epoch is never shortened silently. Dropping it stops the thread after the batch it is
/// gathering.
#[derive(Debug)]
pub struct Prefetch<B = CachedBatch> {
    receiver: Option<Receiver<Result<B>>>,
    thread: Option<JoinHandle<()>>,
    /// Batches given so far, for the panic's error.
    delivered: usize,
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
        Prefetch { receiver: Some(receiver), thread: Some(thread), delivered: 0 }
    }
}

impl<B> Iterator for Prefetch<B> {
    type Item = Result<B>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Ok(batch) = self.receiver.as_ref()?.recv() {
            self.delivered += 1;
            return Some(batch);
        }
        // The channel closed: the thread ended, having sent every batch, or panicked. Which one
        // its join tells; a panic is the error of the batch it did not give.
        self.receiver = None;
        let panicked = self.thread.take()?.join().err()?;
        let message = panicked
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panicked.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Some(Err(CacheError::PrefetchPanicked { delivered: self.delivered, message }.into()))
    }
}

impl<B> Drop for Prefetch<B> {
    fn drop(&mut self) {
        // Closing the channel first lets a thread blocked on a full channel finish.
        self.receiver.take();
        if let Some(thread) = self.thread.take() {
            // A panic is reported to whoever iterates; nobody does any more.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_the_prefetching_thread_is_an_error_item_not_a_shorter_epoch() {
        let mut count = 0;
        let prefetch = Prefetch::start(2, move || {
            count += 1;
            match count {
                1 | 2 => Some(Ok(count)),
                3 => panic!("batch {count} could not be gathered"),
                _ => None,
            }
        });
        let items: Vec<Result<i32>> = prefetch.collect();
        assert_eq!(items.len(), 3, "two batches, then the panic");
        assert_eq!(items[0].as_ref().ok(), Some(&1));
        assert_eq!(items[1].as_ref().ok(), Some(&2));
        let error = items[2].as_ref().unwrap_err();
        assert!(
            matches!(error, crate::DistillError::Cache(CacheError::PrefetchPanicked { delivered: 2, message })
                if message == "batch 3 could not be gathered"),
            "{error}"
        );
        // A thread that ends normally ends the iteration with no error.
        let mut left = 2;
        let normal: Vec<Result<i32>> = Prefetch::start(1, move || {
            left -= 1;
            (left >= 0).then_some(Ok(left))
        })
        .collect();
        assert_eq!(normal.into_iter().map(|b| b.unwrap()).collect::<Vec<_>>(), [1, 0]);
    }
}
