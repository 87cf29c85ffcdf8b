//! The distillation fine-tune from a teacher cache: the teacher's conv outputs and logits are
//! written once (two shards, f16 features, f32 logits, one plain view or several random-crop + flip
//! views per image), then the same `PrunedKd` pairs train from the cache — the teacher never runs
//! again, and epoch `e` sees view `e mod V` of every image, replayed identically for the student.

use std::path::Path;
use std::time::Instant;

use distill::cache::{Augment, CacheWriter, Encoding, Prefetch, TeacherCache, TeacherHash};
use distill::nn::VarStore;
use distill::prelude::*;
use tch::Tensor;

use crate::data::Split;
use crate::kd::PrunedKd;
use crate::model::Net;
use crate::prune::prune_net;
use crate::report::Row;
use crate::train::{ce_and_pairs, sgd, train_with, BatchAt, Schedule, Terms};

/// Batches the prefetching reader gathers ahead of the step.
const PREFETCH_DEPTH: usize = 4;
/// torchvision's `RandomCrop(28, padding=4)` + `RandomHorizontalFlip()`.
const CROP_PADDING: i64 = 4;

/// One cached fine-tune's configuration.
pub struct Setting {
    /// `None`: one view, the image as is (what the live fine-tune sees); `Some(v)`: `v` random-crop
    /// + flip views.
    pub views: Option<usize>,
    pub keep: f64,
    pub seed: i64,
    /// The live distilled fine-tune's wall time, for the report.
    pub live_seconds: f64,
}

impl Setting {
    pub fn describe(&self) -> String {
        match self.views {
            None => "1 plain view".to_owned(),
            Some(v) => format!("{v} crop+flip views"),
        }
    }
}

/// A fine-tuned student and what its cache and fine-tune cost.
pub struct Run {
    pub student: Net,
    _vs: VarStore,
    params: i64,
    write_seconds: f64,
    bytes: u64,
    fine_tune_seconds: f64,
}

impl Run {
    pub fn row(&self, accuracy: f64, setting: &Setting) -> Row {
        Row {
            name: if setting.views.is_none() {
                "fine-tuned with `distill`, teacher cache"
            } else {
                "fine-tuned with `distill`, teacher cache + views"
            },
            params: self.params,
            accuracy,
            reference: None,
            note: format!(
                "same pairs from a 2-shard cache (f16 features, f32 logits, {}; written once in {:.0} s, {:.0} MB); \
                 fine-tune {:.0} s vs {:.0} s live",
                setting.describe(),
                self.write_seconds,
                self.bytes as f64 / 1e6,
                self.fine_tune_seconds,
                setting.live_seconds
            ),
        }
    }
}

/// Writes the cache (under `out/teacher_cache`, replaced) and fine-tunes a fresh pruned student
/// from it, with the same seed and hence the same batch order as the live run.
pub fn fine_tune(
    setting: &Setting,
    out: &Path,
    teacher: &Net,
    hash: &TeacherHash,
    train_set: &Split,
    schedule: &dyn Fn(&str) -> Schedule,
) -> Result<Run, Box<dyn std::error::Error>> {
    let vs = VarStore::new(tch::Device::Cpu);
    let student = prune_net(teacher, &vs.root(), setting.keep)?;
    // Counted before the adapters join the VarStore: the student's own parameters.
    let params = vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>() as i64;
    let (fine_tune_seconds, write_seconds, bytes) = {
        let kd = PrunedKd::new(vs.root() / "kd", &student, teacher)?;
        let dir = out.join("teacher_cache");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let (views, augment) = match setting.views {
            None => (1, Augment::None),
            Some(v) => (v, Augment::crop_flip(CROP_PADDING)),
        };
        let started = Instant::now();
        write(&dir, kd.distillation(), teacher, hash, &train_set.images, views, augment)?;
        let write_seconds = started.elapsed().as_secs_f64();
        let cache = TeacherCache::open(&dir)?;
        cache.check_teacher(hash)?;
        let bytes = cache
            .manifest()
            .shards
            .iter()
            .filter_map(|s| std::fs::metadata(dir.join(&s.file)).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "teacher cache ({}): {} images written in 2 shards in {write_seconds:.0} s, {:.0} MB",
            setting.describe(),
            train_set.len(),
            bytes as f64 / 1e6
        );
        tch::manual_seed(setting.seed + 1);
        let mut opt = sgd(&vs, 0.01, 0.9, 0.0);
        let label = format!("fine-tune cached ({})", setting.describe());
        let history = train_with(train_set, &mut opt, &schedule(&label), None, cached_step(&kd, &cache))?;
        (history.elapsed.as_secs_f64(), write_seconds, bytes)
    };
    Ok(Run { student, _vs: vs, params, write_seconds, bytes, fine_tune_seconds })
}

/// Writes shard 0 of 2, then shard 1 of 2, as two independent writers would (each a separate
/// `CacheWriter`; separate processes or machines work the same way).
fn write(
    dir: &Path,
    distillation: &Distillation<'_>,
    teacher: &Net,
    hash: &TeacherHash,
    images: &Tensor,
    views: usize,
    augment: Augment,
) -> Result<(), DistillError> {
    for shard in 0..2 {
        CacheWriter::new(dir, hash.clone())
            .shards(2)
            .shard(shard)
            .batch_size(500)
            .views(views, augment)
            .seed(1)
            .encoding(Encoding::F16)
            .endpoint_encoding("", Encoding::F32)
            .write(distillation, teacher, images)?;
    }
    Ok(())
}

/// The step of the cached fine-tune: as `kd::kd_step`, the teacher side read from `cache` by a
/// prefetching reader started at each epoch's first batch with the epoch's whole order.
fn cached_step<'a>(
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
        ce_and_pairs(ce, losses.total(), losses.iter())
    }
}
