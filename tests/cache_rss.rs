//! A teacher cache larger than the memory a job may spend on it reads with flat resident memory:
//! shards are memory-mapped, and the pages batches touch are released past the resident limit.
//! One test in its own binary, so that no other test's allocations move this process's RSS.

use std::path::PathBuf;

use distill::cache::{CacheWriter, TeacherCache, TeacherHash, DEFAULT_RESIDENT_LIMIT};
use distill::prelude::*;
use tch::{Device, Kind, Tensor};

/// The teacher: its output is its input, so the cache stores the inputs it is given.
#[derive(Debug, Distillable)]
struct Identity {
    #[distill(skip)]
    _width: i64,
}

impl ModuleT for Identity {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.shallow_clone()
    }
}

/// f32 values per sample: 256 KiB.
const WIDTH: i64 = 1 << 16;
/// Samples: 8192 × 256 KiB = 2 GiB of stored values.
const SAMPLES: usize = 8192;
const SHARDS: usize = 8;

/// Sample `id`'s values: `id + j` for `j` in `0..WIDTH`, exact in f32 (below 2²⁴), a row no other
/// sample has.
fn sample_values(ids: &[i64]) -> Tensor {
    let ids: Vec<f32> = ids.iter().map(|&id| id as f32).collect();
    Tensor::from_slice(&ids).unsqueeze(1) + Tensor::arange(WIDTH, (Kind::Float, Device::Cpu)).unsqueeze(0)
}

/// Resident set size in bytes (`/proc/self/statm`, second field, in pages).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
    pages * 4096
}

#[test]
fn reading_every_batch_of_a_2_gb_cache_in_shuffled_order_keeps_rss_flat() {
    if !std::path::Path::new("/proc/self/statm").exists() {
        eprintln!("skipped: no /proc/self/statm on this system");
        return;
    }
    let dir = std::env::temp_dir().join(format!("distill-cache-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(dir.clone());

    let t0 = std::time::Instant::now();
    let (student, teacher) = (Identity { _width: 0 }, Identity { _width: 0 });
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("", "", "values").unwrap();
    let kd = distill(&student, &teacher, mapping);
    let report = CacheWriter::new(&dir, TeacherHash::from_text("identity"))
        .shards(SHARDS)
        .batch_size(256)
        .write_with(kd.distillation(), &teacher, SAMPLES, |ids| Ok(sample_values(ids)))
        .unwrap();
    assert_eq!(report.written.len(), SHARDS);
    let stored: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(stored >= 2 << 30, "the cache holds {stored} bytes");

    let written = t0.elapsed();
    let cache = TeacherCache::open(&dir).unwrap();
    let before = rss();
    // A shuffled epoch (a fixed LCG permutation), batches of 64.
    let mut order: Vec<i64> = (0..SAMPLES as i64).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..order.len()).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    let mut peak = before;
    for (n, ids) in order.chunks(64).enumerate() {
        let batch = cache.batch(&Tensor::from_slice(ids), 0).unwrap();
        let values = batch.endpoint("").unwrap();
        assert_eq!(values.size(), [ids.len() as i64, WIDTH]);
        // One sample of each batch checked whole (all of them in the first batch).
        let checked = if n == 0 { ids.to_vec() } else { vec![ids[n % ids.len()]] };
        for id in checked {
            let row = ids.iter().position(|&i| i == id).unwrap() as i64;
            assert!(values.get(row).equal(&sample_values(&[id]).get(0)), "sample {id}");
        }
        drop(batch);
        peak = peak.max(rss());
    }
    let growth = peak.saturating_sub(before);
    eprintln!(
        "written in {written:.1?}, read in {:.1?}; RSS {} MiB before reading, peak growth {} MiB over {} MiB of \
         shards (resident limit {} MiB)",
        t0.elapsed() - written,
        before >> 20,
        growth >> 20,
        stored >> 20,
        DEFAULT_RESIDENT_LIMIT >> 20
    );
    assert!(growth <= 256 << 20, "reading the cache grew RSS by {} MiB", growth >> 20);
}
