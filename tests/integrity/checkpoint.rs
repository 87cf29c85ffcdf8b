//! Checkpoints survive a process killed mid-save, and damaged ones are refused.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use distill::checkpoint::Owners;
use distill::{checksum, DistillError};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::common::Mlp;
use crate::{flip_bytes, temp_dir};

/// A student of 16.4 M parameters (66 MB): a save takes long enough to be killed in the middle.
fn big_student(vs: &VarStore) -> Mlp {
    Mlp::new(&vs.root(), 100_000, 100)
}

/// Gives every variable of `vs` values that depend on its name's rank only: the same in every
/// process, whatever other tests draw from libtorch's global generator meanwhile.
fn fill(vs: &VarStore) {
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (rank, (_, tensor)) in variables.iter().enumerate() {
            let values =
                Tensor::arange(tensor.numel() as i64, (tch::Kind::Float, Device::Cpu)) * (1e-6 * (rank + 1) as f64);
            tensor.shallow_clone().copy_(&values.view(tensor.size().as_slice()));
        }
    });
}

/// Every variable of `vs`, by name.
fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut variables: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(name, tensor)| (name, tensor.copy())).collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    variables
}

/// The saver, when run by `a_process_killed_mid_save_leaves_the_previous_checkpoint`: saves the same
/// weights at steps 1, 2, 3… into the file, announcing each save on stdout before it starts.
#[test]
fn saver_process() {
    let Some(file) = std::env::var_os("DISTILL_INTEGRITY_SAVER_FILE") else { return };
    let vs = VarStore::new(Device::Cpu);
    let student = big_student(&vs);
    fill(&vs);
    let owners = Owners::new(&vs, &student);
    for step in 1.. {
        println!("saving {step}");
        std::io::stdout().flush().unwrap();
        owners.save_training(Path::new(&file), step).unwrap();
    }
}

#[test]
fn a_process_killed_mid_save_leaves_the_previous_checkpoint() {
    let dir = temp_dir("killed-save");
    let file = dir.join("resume.safetensors");
    let vs = VarStore::new(Device::Cpu);
    let student = big_student(&vs);
    fill(&vs);
    let owners = Owners::new(&vs, &student);
    owners.save_training(&file, 0).unwrap();
    let saved = snapshot(&vs);
    // Killed at several points of a save: as it starts, early and late in the writing of 66 MB.
    for delay_ms in [0, 15, 60, 150] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "checkpoint::saver_process", "--nocapture", "--test-threads", "1"])
            .env("DISTILL_INTEGRITY_SAVER_FILE", &file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // "saving 2": the save of step 1 has replaced the file once, the one of step 2 has begun.
        lines.find(|line| line.as_ref().is_ok_and(|line| line == "saving 2")).expect("the saver stopped").unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // The file is one complete checkpoint, of step 1 or later (a save can finish within the
        // delay on a fast disk, and the next one be killed), with the weights that were saved.
        for (_, tensor) in vs.variables() {
            let _ = tch::no_grad(|| tensor.shallow_clone().zero_());
        }
        let resumed = owners.load_training(&file).unwrap_or_else(|e| panic!("killed after {delay_ms} ms: {e}"));
        assert!(resumed.step >= 1, "step {}", resumed.step);
        for ((name, now), (_, before)) in snapshot(&vs).iter().zip(&saved) {
            assert!(now.equal(before), "`{name}` differs after a load");
        }
        checksum::verify(&file).unwrap();
    }
    // The killed savers' temporary files are removed by the next save of the file.
    owners.save_training(&file, 3).unwrap();
    #[cfg(target_os = "linux")]
    assert_eq!(names_in(&dir), ["resume.safetensors"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flipped_bytes_in_a_checkpoint_are_an_error_naming_the_file() {
    let dir = temp_dir("flipped-checkpoint");
    tch::manual_seed(4);
    let vs = VarStore::new(Device::Cpu);
    let student = Mlp::new(&vs.root(), 16, 3);
    let owners = Owners::new(&vs, &student);
    let training = dir.join("resume.safetensors");
    let deployed = dir.join("student.safetensors");
    owners.save_training(&training, 7).unwrap();
    owners.save_student(&deployed).unwrap();
    // Still an ordinary safetensors file: tch reads it, metadata and all.
    let mut fresh = VarStore::new(Device::Cpu);
    let _copy = Mlp::new(&fresh.root(), 16, 3);
    fresh.load(&deployed).unwrap();
    checksum::verify(&deployed).unwrap();

    let before = snapshot(&vs);
    flip_bytes(&training, 40, 4); // inside the last tensor's bytes
    let error = owners.load_training(&training).unwrap_err();
    assert!(matches!(&error, DistillError::Corrupt { file, .. } if file == &training.display().to_string()), "{error}");
    assert!(error.to_string().contains("checksum"), "{error}");
    for ((name, now), (_, then)) in snapshot(&vs).iter().zip(&before) {
        assert!(now.equal(then), "`{name}` was changed by a refused load");
    }
    flip_bytes(&deployed, 10, 1);
    let error = checksum::verify(&deployed).unwrap_err();
    assert!(error.to_string().contains("student.safetensors"), "{error}");

    // A file without a checksum (written by other tools) is read unchecked; `verify` names the lack.
    let foreign = dir.join("foreign.safetensors");
    Tensor::write_safetensors(&[("w", Tensor::from_slice(&[1f32]))], &foreign).unwrap();
    let error = checksum::verify(&foreign).unwrap_err();
    assert!(error.to_string().contains("no checksum"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_prune_record_is_written_atomically_with_a_checksum() {
    use distill::prune::{KeptChannels, PruneRecord};
    let dir = temp_dir("prune-record");
    let file = dir.join("record.safetensors");
    let mut record = PruneRecord::new();
    record.insert("conv", KeptChannels::new(&[8, 3, 3, 3], vec![5, 1], vec![0, 1, 2]).unwrap()).unwrap();
    record.save(&file).unwrap();
    checksum::verify(&file).unwrap();
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["record.safetensors"], "no temporary file is left");
    flip_bytes(&file, 8, 1);
    assert!(matches!(PruneRecord::load(&file), Err(DistillError::Corrupt { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Replaces the first byte of the first `needle` in `file` with `with`.
fn replace_byte(file: &Path, needle: &[u8], with: u8) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.windows(needle.len()).position(|window| window == needle).expect("the needle is in the file");
    bytes[at] = with;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_file_of_this_library_whose_checksum_key_was_damaged_is_refused() {
    use distill::prune::{KeptChannels, PruneRecord};
    let dir = temp_dir("damaged-checksum-key");
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let student = Mlp::new(&vs.root(), 16, 3);
    let owners = Owners::new(&vs, &student);
    let training = dir.join("resume.safetensors");
    let before = snapshot(&vs);
    // One byte of the checksum's key (at its start, or in its last part) and one byte of the data:
    // without the key the checksum would not be checked, and the altered values would load.
    for (key_byte, replacement) in [(&b"distill.crc32"[..], b'x'), (&b"crc32\""[..], b'k')] {
        owners.save_training(&training, 7).unwrap();
        replace_byte(&training, key_byte, replacement);
        flip_bytes(&training, 40, 1);
        let error = owners.load_training(&training).unwrap_err();
        assert!(
            matches!(&error, DistillError::Corrupt { file, .. } if file == &training.display().to_string()),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains("no checksum") && message.contains("this library wrote"), "{message}");
        for ((name, now), (_, then)) in snapshot(&vs).iter().zip(&before) {
            assert!(now.equal(then), "`{name}` was changed by a refused load");
        }
    }

    let record_file = dir.join("record.safetensors");
    let mut record = PruneRecord::new();
    record.insert("conv", KeptChannels::new(&[8, 3, 3, 3], vec![5, 1], vec![0, 1, 2]).unwrap()).unwrap();
    record.save(&record_file).unwrap();
    replace_byte(&record_file, b"distill.crc32", b'x');
    flip_bytes(&record_file, 8, 1); // the low byte of the last `source_shape` entry
    let error = PruneRecord::load(&record_file).unwrap_err();
    assert!(
        matches!(&error, DistillError::Corrupt { file, .. } if file == &record_file.display().to_string()),
        "{error}"
    );
    assert!(error.to_string().contains("this library wrote"), "{error}");

    // Files of other tools, with no metadata of this library's, still read without a checksum.
    let foreign = dir.join("foreign.safetensors");
    let mut tensors = snapshot(&vs);
    tensors.push((distill::checkpoint::STEP_KEY.to_owned(), Tensor::from(3i64)));
    Tensor::write_safetensors(&tensors, &foreign).unwrap();
    assert_eq!(owners.load_training(&foreign).unwrap().step, 3);
    let layer = |part: &str, values: &[i64]| (format!("conv/{part}"), Tensor::from_slice(values));
    let parts = [layer("source_shape", &[8, 3, 3, 3]), layer("kept_output", &[5, 1]), layer("kept_input", &[0, 1, 2])];
    Tensor::write_safetensors(&parts, &foreign).unwrap();
    assert_eq!(PruneRecord::load(&foreign).unwrap(), record);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pid no process can have: above the kernel's largest.
#[cfg(target_os = "linux")]
fn dead_pid() -> u64 {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    max + 1
}

/// The names in `dir`, sorted.
#[cfg(target_os = "linux")]
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[cfg(target_os = "linux")]
#[test]
fn a_save_removes_the_temporary_files_of_killed_saves_of_the_same_file_only() {
    use distill::prune::{KeptChannels, PruneRecord};
    let dir = temp_dir("leftovers");
    let vs = VarStore::new(Device::Cpu);
    let student = Mlp::new(&vs.root(), 16, 3);
    let owners = Owners::new(&vs, &student);
    let (dead, live) = (dead_pid(), std::process::id());
    let kept = [
        // This process's own: a live writer of the same file.
        format!("resume.safetensors.tmp-{live}-999"),
        // Other files' temporary files, and names that are not temporary files.
        format!("other.safetensors.tmp-{dead}-0"),
        format!("resume.safetensors.student.safetensors.tmp-{dead}-0"),
        format!("resume.safetensors.tmp-{dead}"),
        format!("resume.safetensors.tmp-{dead}-0.bak"),
        format!("resume.safetensors.tmp-{dead}-x"),
        format!("resume.safetensors.tmp--{dead}-0"),
        "resume.safetensors.tmp-a-0".to_owned(),
        "resume.safetensors.bak".to_owned(),
    ];
    let removed = [format!("resume.safetensors.tmp-{dead}-0"), format!("resume.safetensors.tmp-{dead}-17")];
    for name in kept.iter().chain(&removed) {
        std::fs::write(dir.join(name), b"partial").unwrap();
    }
    // A dead pid's name whose file a process holds locked: a writer in another pid namespace,
    // whose pid says nothing here.
    let locked_name = format!("resume.safetensors.tmp-{dead}-5");
    let locked = std::fs::File::create(dir.join(&locked_name)).unwrap();
    locked.lock().unwrap();
    owners.save_training(dir.join("resume.safetensors"), 1).unwrap();
    let mut expected: Vec<String> = kept.to_vec();
    expected.extend(["resume.safetensors".to_owned(), locked_name.clone()]);
    expected.sort();
    assert_eq!(names_in(&dir), expected);
    drop(locked);
    owners.save_training(dir.join("resume.safetensors"), 2).unwrap();
    expected.retain(|name| *name != locked_name);
    assert_eq!(names_in(&dir), expected);

    // A student's and a prune record's save clear theirs alike.
    let student_file = "student.safetensors";
    let record_file = "record.safetensors";
    for name in [student_file, record_file] {
        std::fs::write(dir.join(format!("{name}.tmp-{dead}-3")), b"partial").unwrap();
    }
    owners.save_student(dir.join(student_file)).unwrap();
    let mut record = PruneRecord::new();
    record.insert("conv", KeptChannels::new(&[8, 3, 3, 3], vec![5, 1], vec![0, 1, 2]).unwrap()).unwrap();
    record.save(dir.join(record_file)).unwrap();
    expected.extend([student_file.to_owned(), record_file.to_owned()]);
    expected.sort();
    assert_eq!(names_in(&dir), expected);
    let _ = std::fs::remove_dir_all(&dir);
}
