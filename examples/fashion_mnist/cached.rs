//! The distillation fine-tune from a teacher cache: the teacher's conv outputs and logits are
//! written once (two shards, f16 features, f32 logits, `VIEWS` random-crop + flip views per image),
//! then the same `PrunedKd` pairs train from the cache — the teacher never runs again, and epoch
//! `e` sees view `e mod VIEWS` of every image, replayed identically for the student.

use std::path::Path;
use std::time::Instant;

use distill::cache::{Augment, CacheWriter, Encoding, Prefetch, TeacherCache, TeacherHash};
use distill::engine::Engine;
use distill::prelude::*;
use tch::Tensor;

use crate::kd::PrunedKd;
use crate::model::Net;
use crate::train::{BatchAt, Terms};

/// Batches the prefetching reader gathers ahead of the step.
const PREFETCH_DEPTH: usize = 4;

/// What writing the cache cost.
pub struct Written {
    pub seconds: f64,
    pub bytes: u64,
    pub shards_written: usize,
}

/// Writes the cache of `engine`'s teacher endpoints over `images` into `dir` — shard 0 of 2, then
/// shard 1 of 2, as two independent writers would (a rerun skips complete shards) — and opens it.
pub fn write_and_open(
    dir: &Path,
    engine: &Engine,
    teacher: &Net,
    hash: &TeacherHash,
    images: &Tensor,
    views: usize,
) -> Result<(TeacherCache, Written), DistillError> {
    let started = Instant::now();
    let mut shards_written = 0;
    for shard in 0..2 {
        let report = CacheWriter::new(dir, hash.clone())
            .shards(2)
            .shard(shard)
            .batch_size(500)
            .views(views, Augment::crop_flip(4))
            .seed(1)
            .encoding(Encoding::F16)
            .endpoint_encoding("", Encoding::F32)
            .write(engine, teacher, images)?;
        shards_written += report.written.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let cache = TeacherCache::open(dir)?;
    cache.check_teacher(hash)?;
    let bytes =
        cache.manifest().shards.iter().filter_map(|s| std::fs::metadata(dir.join(&s.file)).ok()).map(|m| m.len()).sum();
    Ok((cache, Written { seconds, bytes, shards_written }))
}

/// The step of the cached fine-tune: as `kd::kd_step`, the teacher side read from `cache` by a
/// prefetching reader started at each epoch's first batch with the epoch's whole order.
pub fn cached_step<'a>(
    kd: &'a PrunedKd<'a>,
    cache: &'a TeacherCache,
) -> impl FnMut(&BatchAt, &Tensor, &Tensor) -> (Tensor, Terms) + 'a {
    let mut reader: Option<Prefetch> = None;
    move |at: &BatchAt, xs: &Tensor, ys: &Tensor| {
        if at.index == 0 {
            reader = Some(cache.prefetch(at.order.split(at.batch_size, 0), at.epoch, PREFETCH_DEPTH));
        }
        let batch = reader
            .as_mut()
            .and_then(Iterator::next)
            .expect("one cached batch per batch of the epoch's order")
            .expect("the batch's ids are in the cache");
        let out = kd.forward_cached(xs, &batch, true).expect("the cache holds every teacher endpoint");
        let ce = out.student_output.cross_entropy_for_logits(ys);
        let losses = out.losses();
        let loss = &ce + losses.total();
        let mut terms: Terms = vec![("loss", loss.double_value(&[])), ("ce", ce.double_value(&[]))];
        terms.extend(losses.iter().map(|(label, value)| (label, value.double_value(&[]))));
        (loss, terms)
    }
}
