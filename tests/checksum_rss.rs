//! `checksum::verify` checks a file larger than the memory it may spend: the tensors are read and
//! hashed in pieces, so resident memory does not grow with the file (reading it whole would grow
//! it by the file's size). One test in its own binary, so that
//! no other test's allocations move this process's RSS.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use distill::cache::{CacheWriter, TeacherHash};
use distill::prelude::*;
use distill::{checksum, DistillError};
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

/// f32 values per sample: 256 KiB; 2048 samples: a shard of 512 MiB.
const WIDTH: i64 = 1 << 16;
const SAMPLES: usize = 2048;

/// Resident set size in bytes (`/proc/self/statm`, second field, in pages), file-backed pages of
/// mappings included.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("resident pages");
    pages * 4096
}

/// The largest RSS seen while `run` runs, sampled every millisecond by another thread.
fn peak_rss_during(run: impl FnOnce()) -> u64 {
    let (done, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(rss())));
    let sampler = {
        let (done, peak) = (Arc::clone(&done), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                peak.fetch_max(rss(), Ordering::AcqRel);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    run();
    peak.fetch_max(rss(), Ordering::AcqRel);
    done.store(true, Ordering::Release);
    sampler.join().unwrap();
    peak.load(Ordering::Acquire)
}

#[test]
fn verifying_a_512_mb_file_keeps_rss_far_below_its_size() {
    if !std::path::Path::new("/proc/self/statm").exists() {
        eprintln!("skipped: no /proc/self/statm on this system");
        return;
    }
    let dir = std::env::temp_dir().join(format!("distill-checksum-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(dir.clone());

    let (student, teacher) = (Identity { _width: 0 }, Identity { _width: 0 });
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("", "", "values").unwrap();
    let kd = distill(&student, &teacher, mapping);
    CacheWriter::new(&dir, TeacherHash::from_text("identity"))
        .batch_size(256)
        .write_with(kd.distillation(), &teacher, SAMPLES, |ids| {
            let ids: Vec<f32> = ids.iter().map(|&id| id as f32).collect();
            Ok(Tensor::from_slice(&ids).unsqueeze(1) + Tensor::arange(WIDTH, (Kind::Float, Device::Cpu)).unsqueeze(0))
        })
        .unwrap();
    let shard = dir.join("shard-00000-of-00001.safetensors");
    let size = std::fs::metadata(&shard).unwrap().len();
    assert!(size >= 512 << 20, "the shard holds {size} bytes");

    let before = rss();
    let peak = peak_rss_during(|| checksum::verify(&shard).unwrap());
    let growth = peak.saturating_sub(before);
    eprintln!(
        "verify: RSS {} MiB before, peak growth {} MiB over a {} MiB file",
        before >> 20,
        growth >> 20,
        size >> 20
    );
    // The pass holds one 32 MiB window of the file and asks the kernel to read the next; a file read
    // whole would add its 512 MiB.
    assert!(growth <= 128 << 20, "verifying grew RSS by {} MiB", growth >> 20);

    // The same pass finds a flipped byte past the first windows.
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&shard).unwrap();
    use std::io::{Read, Seek, SeekFrom, Write};
    let at = size - (100 << 20);
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[byte[0] ^ 0x10]).unwrap();
    drop(file);
    let error = checksum::verify(&shard).unwrap_err();
    assert!(
        matches!(&error, DistillError::Corrupt { file, reason }
            if file == &shard.display().to_string() && reason.contains("do not match the checksum")),
        "{error}"
    );
}
