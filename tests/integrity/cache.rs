//! The teacher cache knows what it holds: checksummed shards, manifests checked for coverage and
//! edits, writers that refuse to mix other inputs or another teacher mode, f16 overflow refused,
//! one writer per shard.

use std::path::{Path, PathBuf};

use distill::cache::{Augment, CacheWriter, Encoding, TeacherCache, TeacherHash};
use distill::prelude::*;
use distill::{DistillError, SideModel};
use serde_json::Value;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// The manifest's file name in a cache directory (the cache's documented layout).
const MANIFEST_FILE: &str = "manifest.json";

use crate::common::Net;
use crate::{flip_bytes, temp_dir};

const SAMPLES: i64 = 10;

/// A teacher, a student and their inputs (also for the other integrity tests of caches).
pub(crate) struct Setup {
    pub(crate) vs: VarStore,
    pub(crate) teacher: Net,
    pub(crate) student: Net,
    pub(crate) inputs: Tensor,
}

pub(crate) fn setup() -> Setup {
    tch::manual_seed(21);
    let vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&vs.root(), &[4, 8, 16], 5);
    let student_vs = VarStore::new(Device::Cpu);
    let student = Net::new(&(student_vs.root() / "s"), &[4, 8, 16], 5);
    let inputs = Tensor::randn([SAMPLES, 1, 12, 12], (Kind::Float, Device::Cpu));
    Setup { vs, teacher, student, inputs }
}

pub(crate) fn mapping<'m, T: SideModel>(student: &'m Net, teacher: &'m T) -> Mapping<'m, &'static str> {
    let mut mapping = Mapping::new(student, teacher);
    mapping.add("features.1.conv", "features.1.conv", "conv").unwrap();
    mapping.add("", "", "logits").unwrap();
    mapping
}

pub(crate) fn writer(dir: &Path, setup: &Setup) -> CacheWriter {
    CacheWriter::new(dir, TeacherHash::of_var_store(&setup.vs).unwrap())
        .shards(2)
        .batch_size(3)
        .views(2, Augment::crop_flip(2))
        .seed(5)
}

/// A complete two-shard cache of `setup`'s teacher.
pub(crate) fn written(name: &str, setup: &Setup) -> PathBuf {
    let dir = temp_dir(name);
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    writer(&dir, setup).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap();
    dir
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join(MANIFEST_FILE);
    let mut manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

fn open_error(dir: &Path) -> String {
    TeacherCache::open(dir).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn flipped_bytes_in_a_shard_are_an_error_naming_the_shard() {
    let setup = setup();
    let dir = written("flipped-shard", &setup);
    let shard = dir.join("shard-00001-of-00002.safetensors");
    flip_bytes(&shard, 1600, 400);
    let is_the_shard = |error: &DistillError| {
        matches!(error, DistillError::Corrupt { file, .. } if file.ends_with("shard-00001-of-00002.safetensors"))
            && error.to_string().contains("checksum")
    };
    // Opening reads the headers only; the checksum is verified when a batch first reads the shard.
    let cache = TeacherCache::open(&dir).unwrap();
    cache.batch(&Tensor::from_slice(&[0i64, 4]), 0).unwrap();
    let error = cache.batch(&Tensor::from_slice(&[0i64, 7]), 0).unwrap_err();
    assert!(is_the_shard(&error), "{error}");
    // Every later read of the shard fails too, and `verify` checks every shard at once.
    let error = cache.batch(&Tensor::from_slice(&[9i64]), 1).unwrap_err();
    assert!(is_the_shard(&error), "{error}");
    let error = TeacherCache::open(&dir).unwrap().verify().unwrap_err();
    assert!(is_the_shard(&error), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_manifest_whose_shards_do_not_cover_the_samples_exactly_once_is_refused() {
    let setup = setup();
    let dir = written("coverage", &setup);
    let original = std::fs::read(dir.join(MANIFEST_FILE)).unwrap();
    let restore = || std::fs::write(dir.join(MANIFEST_FILE), &original).unwrap();
    TeacherCache::open(&dir).unwrap();

    edit_manifest(&dir, |m| {
        m["shards"].as_array_mut().unwrap().remove(1);
    });
    assert!(open_error(&dir).contains("samples 5..10 are in no shard"), "{}", open_error(&dir));
    restore();
    edit_manifest(&dir, |m| m["num_samples"] = 12.into());
    assert!(open_error(&dir).contains("samples 10..12 are in no shard"), "{}", open_error(&dir));
    restore();
    edit_manifest(&dir, |m| m["shards"][1]["file"] = m["shards"][0]["file"].clone());
    assert!(open_error(&dir).contains("two shard entries name the file"), "{}", open_error(&dir));
    restore();
    edit_manifest(&dir, |m| m["shards"][1]["start"] = 3.into());
    assert!(open_error(&dir).contains("samples 3..5 are in two shards"), "{}", open_error(&dir));
    restore();
    edit_manifest(&dir, |m| {
        m["views"] = 0.into();
        m["shards"] = Value::Array(Vec::new());
    });
    assert!(open_error(&dir).contains("0 views"), "{}", open_error(&dir));
    restore();
    TeacherCache::open(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_manifest_edited_after_its_shards_were_written_is_refused() {
    let setup = setup();
    let dir = written("edited-padding", &setup);
    // The augmentation's padding: views the teacher never saw would be replayed.
    edit_manifest(&dir, |m| m["augment"]["padding"] = 3.into());
    let error = TeacherCache::open(&dir).unwrap_err();
    assert!(matches!(&error, DistillError::Corrupt { file, .. } if file.ends_with(MANIFEST_FILE)), "{error}");
    assert!(error.to_string().contains("edited after the cache was written"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_writer_rerun_over_other_inputs_or_another_teacher_mode_refuses_to_mix() {
    let setup = setup();
    let dir = written("rerun", &setup);
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    // The same inputs: both shards are complete and skipped.
    let report = writer(&dir, &setup).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap();
    assert_eq!((report.written, report.skipped), (vec![], vec![0, 1]));

    let changed = &setup.inputs + 1.0;
    let error = writer(&dir, &setup).write(live.distillation(), &setup.teacher, &changed).unwrap_err();
    assert!(
        matches!(&error, DistillError::CacheMismatch { what, .. } if what.contains("inputs of shard 0")),
        "{error}"
    );
    // Only shard 1 missing, rerun over other inputs: refused before the teacher runs.
    std::fs::remove_file(dir.join("shard-00001-of-00002.safetensors")).unwrap();
    let error = writer(&dir, &setup).write(live.distillation(), &setup.teacher, &changed).unwrap_err();
    assert!(error.to_string().contains("inputs of shard 0"), "{error}");

    let training = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher)).teacher_train(true);
    let error = writer(&dir, &setup).write(training.distillation(), &setup.teacher, &setup.inputs).unwrap_err();
    assert!(matches!(&error, DistillError::CacheMismatch { what, .. } if what == "the teacher's mode"), "{error}");
    assert!(error.to_string().contains("eval") && error.to_string().contains("train"), "{error}");

    let error =
        writer(&dir, &setup).batch_size(4).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap_err();
    assert!(error.to_string().contains("the write batch size"), "{error}");
    let error = writer(&dir, &setup)
        .dataset("cifar10@v2")
        .write(live.distillation(), &setup.teacher, &setup.inputs)
        .unwrap_err();
    assert!(error.to_string().contains("cifar10@v2"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_manifest_records_the_teacher_mode_the_write_batch_size_and_the_dataset() {
    let setup = setup();
    let dir = temp_dir("recorded");
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let report =
        writer(&dir, &setup).dataset("ten-randn").write(live.distillation(), &setup.teacher, &setup.inputs).unwrap();
    assert_eq!(report.manifest.write_batch_size, Some(3));
    assert_eq!(report.manifest.teacher_mode, Some(distill::cache::RunMode::Eval));
    assert_eq!(report.manifest.inputs.as_deref(), Some("ten-randn"));
    assert_eq!(report.manifest.format, 3, "the layout this crate writes");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A teacher whose logits are 1e5 times the usual: beyond f16's range.
#[derive(Debug, distill::Distillable)]
struct Loud {
    net: Net,
}

impl ModuleT for Loud {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.net.forward_t(xs, train) * 1e5 + 1e5
    }
}

#[test]
fn f16_storage_refuses_values_it_would_store_as_infinity_and_bf16_holds_them() {
    let setup = setup();
    let dir = temp_dir("f16-overflow");
    let loud = Loud { net: Net::new(&(setup.vs.root() / "loud"), &[4, 8, 16], 5) };
    // One shard, one view without augmentation, batches of 3: the first batch is samples 0..3 as given.
    let plain = || CacheWriter::new(&dir, TeacherHash::from_text("loud")).batch_size(3);
    let mut pairs = Mapping::new(&setup.student, &loud);
    pairs.add("", "", "logits").unwrap();
    let live = distill(&setup.student, &loud, pairs);
    let error = plain().encoding(Encoding::F16).write(live.distillation(), &loud, &setup.inputs).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("the teacher's own output") && message.contains("65504"), "{message}");
    assert!(message.contains("Encoding::Bf16"), "{message}");
    // The largest value is named: it is the largest magnitude of the first shard's logits.
    let first = loud.forward_t(&setup.inputs.narrow(0, 0, 3), false);
    let largest = first.abs().max().double_value(&[]);
    assert!(message.contains(&format!("{:e}", largest)) || message.contains(&format!("{:e}", -largest)), "{message}");
    assert!(!dir.join("shard-00000-of-00001.safetensors").exists());

    let _ = std::fs::remove_dir_all(&dir);
    plain().encoding(Encoding::Bf16).write(live.distillation(), &loud, &setup.inputs).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    let ids = Tensor::from_slice(&[0i64, 4, 9]);
    let batch = cache.batch(&ids, 0).unwrap();
    let stored = batch.endpoint("").unwrap();
    let expected = loud.forward_t(&setup.inputs.index_select(0, &ids), false);
    assert_eq!(stored.isfinite().all().int64_value(&[]), 1);
    // bf16 keeps 8 significant bits: a relative error of at most 2^-8 per value (round to nearest).
    let bound = expected.abs() * 2f64.powi(-8);
    assert_eq!((stored - &expected).abs().le_tensor(&bound).all().int64_value(&[]), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_writer_of_a_shard_stops_without_touching_the_first_writers_files() {
    let setup = setup();
    let dir = temp_dir("two-writers");
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    // What a first writer holds while it writes shard 0: the lock and its temporary file.
    let lock = std::fs::File::create(dir.join("shard-00000-of-00002.safetensors.lock")).unwrap();
    lock.try_lock().unwrap();
    let live_temporary = dir.join("shard-00000-of-00002.safetensors.tmp-4242-0");
    std::fs::write(&live_temporary, b"being written").unwrap();
    let error = writer(&dir, &setup).shard(0).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap_err();
    assert!(error.to_string().contains("another writer is writing shard 0"), "{error}");
    assert_eq!(std::fs::read(&live_temporary).unwrap(), b"being written");
    // Another shard is free.
    writer(&dir, &setup).shard(1).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap();
    // The first writer dies: the system releases its lock, and its leftover is cleared.
    drop(lock);
    writer(&dir, &setup).shard(0).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap();
    assert!(!live_temporary.exists());
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, [MANIFEST_FILE, "shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"]);
    TeacherCache::open(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_encoding_paths_ids_and_several_teachers_are_named() {
    let setup = setup();
    let dir = written("wrong-arguments", &setup);
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let other = temp_dir("wrong-encoding-path");
    let error = writer(&other, &setup)
        .endpoint_encoding("features.1.cnv", Encoding::F16)
        .write(live.distillation(), &setup.teacher, &setup.inputs)
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("`features.1.cnv`") && message.contains("did you mean `features.1.conv`"), "{message}");

    let cache = TeacherCache::open(&dir).unwrap();
    let error = cache.batch(&Tensor::from_slice(&[0.7f32, 2.0]), 0).unwrap_err();
    assert!(error.to_string().contains("must be integers"), "{error}");
    let error = cache.batch(&Tensor::from_slice(&[0i64, 1, 2, 3]).view([2, 2]), 0).unwrap_err();
    assert!(error.to_string().contains("1-D"), "{error}");

    let second = Net::new(&(setup.vs.root() / "second"), &[4, 8, 16], 5);
    let mut several =
        Mapping::with_teachers(&setup.student, [("a", &setup.teacher as &dyn SideModel), ("b", &second)]).unwrap();
    several.add_from("a", "", "", "kd_a").unwrap();
    several.add_from("b", "", "", "kd_b").unwrap();
    let both = distill_teachers(&setup.student, several);
    let error = writer(&other, &setup).write(both.distillation(), &setup.teacher, &setup.inputs).unwrap_err();
    assert!(error.to_string().contains("2 teachers") && error.to_string().contains("one cache per teacher"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn a_cache_of_layout_version_2_without_checksums_still_reads() {
    let setup = setup();
    let dir = written("version-2", &setup);
    let before = TeacherCache::open(&dir).unwrap();
    let ids = Tensor::from_slice(&[1i64, 6]);
    let expected = before.batch(&ids, 1).unwrap().endpoint("").unwrap().copy();
    // Rewrite as version 2 wrote it: shards without metadata, a manifest without the new fields.
    for shard in ["shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"] {
        let path = dir.join(shard);
        let tensors = Tensor::read_safetensors(&path).unwrap();
        Tensor::write_safetensors(&tensors, &path).unwrap();
    }
    edit_manifest(&dir, |m| {
        m["format"] = 2.into();
        let object = m.as_object_mut().unwrap();
        for field in ["inputs", "teacher_mode", "write_batch_size"] {
            object.remove(field);
        }
    });
    let cache = TeacherCache::open(&dir).unwrap();
    assert_eq!(cache.manifest().format, 2);
    assert!(cache.batch(&ids, 1).unwrap().endpoint("").unwrap().equal(&expected));
    // A newer layout than this build reads is named as such.
    edit_manifest(&dir, |m| m["format"] = 4.into());
    assert!(open_error(&dir).contains("layout version 4"), "{}", open_error(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a batch of the mapped cache says after its shard 1 was changed on disk by `change`.
fn batch_error_after(name: &str, change: impl FnOnce(&Path)) -> DistillError {
    let setup = setup();
    let dir = written(name, &setup);
    let cache = TeacherCache::open(&dir).unwrap();
    let ids = Tensor::from_slice(&[1i64, 8]);
    let before = cache.batch(&ids, 0).unwrap().endpoint("").unwrap().copy();
    change(&dir.join("shard-00001-of-00002.safetensors"));
    // Shard 0 alone still reads; a batch that reads shard 1 is refused.
    cache.batch(&Tensor::from_slice(&[0i64, 2]), 0).unwrap();
    let error = cache.batch(&ids, 0).unwrap_err();
    assert!(
        matches!(&error, DistillError::Corrupt { file, .. } if file.ends_with("shard-00001-of-00002.safetensors")),
        "{error}"
    );
    // Reopened, the cache reads what the directory holds now, or refuses it.
    if let Ok(reopened) = TeacherCache::open(&dir) {
        if let Ok(batch) = reopened.batch(&ids, 0) {
            assert!(batch.endpoint("").unwrap().equal(&before), "a reopened cache read other data");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    error
}

#[test]
fn a_shard_truncated_while_a_job_reads_it_is_an_error_not_a_crash() {
    let error = batch_error_after("truncated-after-open", |shard| {
        let len = std::fs::metadata(shard).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(shard).unwrap().set_len(len / 2).unwrap();
    });
    assert!(error.to_string().contains("length changed"), "{error}");
    // Truncated before opening: the safetensors header no longer accounts for the file.
    let setup = setup();
    let dir = written("truncated-before-open", &setup);
    let shard = dir.join("shard-00000-of-00002.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len - 4).unwrap();
    let error = TeacherCache::open(&dir).unwrap_err();
    assert!(matches!(&error, DistillError::Corrupt { file, .. } if file.ends_with("shard-00000-of-00002.safetensors")));
    assert!(error.to_string().contains("does not match its length"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_shard_rewritten_in_place_while_a_job_reads_it_is_an_error() {
    let error = batch_error_after("rewritten-in-place", |shard| {
        // What `cp other shard` does: the same file, truncated and written again, same length.
        let mut bytes = std::fs::read(shard).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(shard, bytes).unwrap();
    });
    assert!(error.to_string().contains("modified since the cache was opened"), "{error}");
}

#[test]
fn a_shard_replaced_or_removed_while_a_job_reads_it_is_an_error() {
    let error = batch_error_after("replaced", |shard| {
        // What a writer does: a new file renamed over the old one. The job still maps the old one.
        let copy = shard.with_extension("new");
        std::fs::copy(shard, &copy).unwrap();
        std::fs::rename(&copy, shard).unwrap();
    });
    assert!(error.to_string().contains("another file was put in its place"), "{error}");
    let error = batch_error_after("removed", |shard| std::fs::remove_file(shard).unwrap());
    assert!(error.to_string().contains("removed since the cache was opened"), "{error}");
}

#[test]
fn a_manifest_edited_to_declare_an_older_layout_version_is_refused() {
    let setup = setup();
    let dir = written("lowered-version", &setup);
    let original = std::fs::read(dir.join(MANIFEST_FILE)).unwrap();
    // Versions 1 and 2 have no manifest hash to check, but these shards record one: it binds the
    // manifest whatever version it declares, so the edit is found (with another edit or none).
    for format in [1, 2] {
        for padding in [None, Some(3)] {
            edit_manifest(&dir, |m| {
                m["format"] = format.into();
                if let Some(padding) = padding {
                    m["augment"]["padding"] = padding.into();
                }
            });
            let error = TeacherCache::open(&dir).unwrap_err();
            assert!(matches!(&error, DistillError::Corrupt { file, .. } if file.ends_with(MANIFEST_FILE)), "{error}");
            assert!(error.to_string().contains("edited after the cache was written"), "{error}");
            std::fs::write(dir.join(MANIFEST_FILE), &original).unwrap();
        }
    }
    TeacherCache::open(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_checks_every_shard_again_even_after_a_batch_verified_it() {
    let setup = setup();
    let dir = written("verify-again", &setup);
    let cache = TeacherCache::open(&dir).unwrap();
    // A batch of both shards runs their checksum passes; `verify` passes while they are intact.
    cache.batch(&Tensor::from_slice(&[1i64, 8]), 0).unwrap();
    cache.verify().unwrap();
    // Shard 1 is damaged afterwards: `verify` looks at it again and says so.
    flip_bytes(&dir.join("shard-00001-of-00002.safetensors"), 1600, 4);
    let error = cache.verify().unwrap_err();
    assert!(
        matches!(&error, DistillError::Corrupt { file, .. } if file.ends_with("shard-00001-of-00002.safetensors")),
        "{error}"
    );
    // The failure stays: a batch of that shard is refused, one of shard 0 still reads.
    assert!(cache.batch(&Tensor::from_slice(&[8i64]), 0).is_err());
    cache.batch(&Tensor::from_slice(&[1i64]), 0).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_manifest_of_no_samples_or_of_shapes_too_large_to_address_is_refused_not_a_panic() {
    let setup = setup();
    let dir = written("absurd-sizes", &setup);
    let original = std::fs::read(dir.join(MANIFEST_FILE)).unwrap();
    edit_manifest(&dir, |m| {
        m["num_samples"] = 0.into();
        m["shards"] = Value::Array(Vec::new());
    });
    assert!(open_error(&dir).contains("it holds 0 samples"), "{}", open_error(&dir));
    // 2⁴⁰ × 2⁴⁰ values per sample: their byte count overflows, in every layout version.
    for format in [1, 3] {
        std::fs::write(dir.join(MANIFEST_FILE), &original).unwrap();
        edit_manifest(&dir, |m| {
            m["format"] = format.into();
            m["endpoints"][0]["shape"] = serde_json::json!([1u64 << 40, 1u64 << 40]);
        });
        let error = TeacherCache::open(&dir).unwrap_err();
        assert!(
            matches!(&error, DistillError::Cache(distill::cache::CacheError::File { path, .. }) if path.ends_with(MANIFEST_FILE)),
            "{error}"
        );
        assert!(error.to_string().contains("more bytes than this machine can address"), "{error}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_writer_of_another_configuration_never_replaces_a_manifest_published_while_it_ran() {
    let setup = setup();
    let dir = temp_dir("concurrent-configurations");
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    // Writer A (seed 5) looks for a manifest before its teacher runs: there is none. While its
    // teacher runs, writer B (seed 6) starts, finds none either, and writes shard 1 and its manifest.
    let mut b_ran = false;
    let error = writer(&dir, &setup)
        .shard(0)
        .write_with(live.distillation(), &setup.teacher, SAMPLES as usize, |ids| {
            if !b_ran {
                b_ran = true;
                writer(&dir, &setup).seed(6).shard(1).write(live.distillation(), &setup.teacher, &setup.inputs)?;
            }
            Ok(setup.inputs.index_select(0, &Tensor::from_slice(ids)))
        })
        .unwrap_err();
    assert!(b_ran);
    // A stops before writing its shard: B's manifest stands and B's shard is intact.
    assert!(
        matches!(&error, DistillError::CacheMismatch { what, cached, expected, .. }
            if what == "the views' seed" && cached == "6" && expected == "5"),
        "{error}"
    );
    assert!(!dir.join("shard-00000-of-00002.safetensors").exists());
    let published: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(published["seed"], 6);
    // B completes its cache, which opens and reads: nothing of A's is in it.
    let report = writer(&dir, &setup).seed(6).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap();
    assert_eq!((report.written, report.skipped), (vec![0], vec![1]));
    let cache = TeacherCache::open(&dir).unwrap();
    cache.verify().unwrap();
    assert_eq!(cache.manifest().seed, 6);
    let _ = std::fs::remove_dir_all(&dir);
}
