//! The checksum covers this library's metadata: a cache shard whose recorded inputs CRC or manifest
//! hash was damaged is a damaged shard — for `checksum::verify`, a cache's `verify`, its reads and a
//! writer's rerun — never blamed on the dataset or the manifest. Caches written before the metadata
//! was covered, whose checksums cover their tensors alone, still read.

use std::path::{Path, PathBuf};

use distill::cache::{TeacherCache, TeacherHash, TokenCache, TokenCacheSpec, TokenCacheWriter, TokenEncoding};
use distill::prelude::*;
use distill::{checksum, DistillError};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::cache::{mapping, setup, writer, written};
use crate::temp_dir;

/// The metadata key of a shard's checksum, and the keys of what it records (the documented layout).
const CHECKSUM_KEY: &str = "distill.crc32";
const INPUTS_KEY: &str = "distill.inputs";
const MANIFEST_KEY: &str = "distill.manifest";

/// Changes the last hex digit of the value of `key` in the safetensors header of `file` into
/// another hex digit: one byte, and the header stays valid JSON of the same length.
fn damage_value(file: &Path, key: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let needle = format!("\"{key}\":\"");
    let start = bytes.windows(needle.len()).position(|w| w == needle.as_bytes()).expect("the key") + needle.len();
    let end = start + bytes[start..].iter().position(|&b| b == b'"').unwrap();
    let last = &mut bytes[end - 1];
    assert!(last.is_ascii_hexdigit(), "a hex digit ends the value of `{key}`");
    *last = if *last == b'0' { b'1' } else { b'0' };
    std::fs::write(file, bytes).unwrap();
}

/// Whether `error` is the corruption of the file `file` found by its checksum.
fn damaged(error: &DistillError, file: &Path) -> bool {
    matches!(error, DistillError::Corrupt { file: named, reason }
        if named == &file.display().to_string() && reason.contains("do not match the checksum"))
}

#[test]
fn a_damaged_inputs_crc_in_an_image_cache_shard_is_a_damaged_shard_not_another_dataset() {
    let setup = setup();
    let dir = written("damaged-inputs-crc", &setup);
    let shard = dir.join("shard-00000-of-00002.safetensors");
    checksum::verify(&shard).unwrap();
    TeacherCache::open(&dir).unwrap().verify().unwrap();

    damage_value(&shard, INPUTS_KEY);
    let error = checksum::verify(&shard).unwrap_err();
    assert!(damaged(&error, &shard), "{error}");
    assert!(error.to_string().contains(&format!("`{INPUTS_KEY}`")), "the metadata is named: {error}");
    // The manifest hash is intact, so the cache opens; its checksum pass finds the shard.
    let cache = TeacherCache::open(&dir).unwrap();
    let error = cache.verify().unwrap_err();
    assert!(damaged(&error, &shard), "{error}");
    let error = cache.batch(&Tensor::from_slice(&[1i64, 3]), 0).unwrap_err();
    assert!(damaged(&error, &shard), "{error}");
    let error = TeacherCache::open(&dir).unwrap().batch(&Tensor::from_slice(&[2i64]), 1).unwrap_err();
    assert!(damaged(&error, &shard), "{error}");
    // A rerun without a dataset identity compares the skipped shards' inputs with their record: the
    // same inputs, so the damaged record is the shard's fault, not another dataset's.
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let error = writer(&dir, &setup).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap_err();
    assert!(damaged(&error, &shard), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_manifest_hash_in_an_image_cache_shard_names_the_shard_not_the_manifest() {
    let setup = setup();
    let dir = written("damaged-manifest-hash", &setup);
    let shard = dir.join("shard-00001-of-00002.safetensors");
    damage_value(&shard, MANIFEST_KEY);
    let error = checksum::verify(&shard).unwrap_err();
    assert!(damaged(&error, &shard) && error.to_string().contains(&format!("`{MANIFEST_KEY}`")), "{error}");
    let error = TeacherCache::open(&dir).map(drop).unwrap_err();
    assert!(damaged(&error, &shard), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A two-shard token cache of 6 sequences of 5 tokens over 50, top-4 at temperature 1.
fn token_cache(name: &str) -> (PathBuf, TokenCacheWriter) {
    let dir = temp_dir(name);
    let spec = TokenCacheSpec {
        teacher: TeacherHash::from_text("sha256:a-teacher"),
        tokenizer: TokenCacheSpec::tokenizer_identity(b"a tokenizer"),
        dataset: "a dataset".to_owned(),
        num_sequences: 6,
        seq_len: 5,
        vocab: 50,
        encoding: TokenEncoding::top_k(4, 1.0),
    };
    let writer = TokenCacheWriter::new(&dir, spec).shards(2);
    write_tokens(&writer).unwrap();
    (dir, writer)
}

fn write_tokens(writer: &TokenCacheWriter) -> distill::Result<distill::cache::TokenWriteReport> {
    writer.write(2, |ids| {
        let first = ids[0] as f64;
        let logits = Tensor::arange(ids.len() as i64 * 5 * 50, (Kind::Float, Device::Cpu)).view([-1, 5, 50]);
        Ok(((logits + first * 7.0).sin() * 3.0, None))
    })
}

#[test]
fn a_damaged_manifest_hash_in_a_token_cache_shard_names_the_shard_for_readers_and_writers() {
    let (dir, writer) = token_cache("damaged-token-manifest-hash");
    let shard = dir.join("shard-00001-of-00002.safetensors");
    TokenCache::open(&dir).unwrap().verify().unwrap();
    damage_value(&shard, MANIFEST_KEY);
    let error = checksum::verify(&shard).unwrap_err();
    assert!(damaged(&error, &shard) && error.to_string().contains(&format!("`{MANIFEST_KEY}`")), "{error}");
    let error = TokenCache::open(&dir).map(drop).unwrap_err();
    assert!(damaged(&error, &shard), "{error}");
    // A rerun takes the shard for complete, and finds its record damaged, not another cache's.
    let error = write_tokens(&writer).map(drop).unwrap_err();
    assert!(damaged(&error, &shard), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rewrites the checksum of the shard `file` into the form versions before the metadata was covered
/// wrote: `crc32:` and the CRC-32 of its tensors alone, each in name order as its name's length (u64
/// little-endian) and bytes, its dtype's name, its rank and dimensions (u64), and its bytes.
fn as_written_before_the_metadata_was_covered(file: &Path) {
    let bytes = std::fs::read(file).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut names: Vec<String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    names.sort();
    let mut crc = flate2::Crc::new();
    for name in &names {
        let info = &header[name.as_str()];
        let shape: Vec<u64> = info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        let offsets: Vec<usize> =
            info["data_offsets"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        crc.update(&(name.len() as u64).to_le_bytes());
        crc.update(name.as_bytes());
        crc.update(info["dtype"].as_str().unwrap().as_bytes());
        crc.update(&(shape.len() as u64).to_le_bytes());
        for dim in shape {
            crc.update(&dim.to_le_bytes());
        }
        crc.update(&data[offsets[0]..offsets[1]]);
    }
    header["__metadata__"][CHECKSUM_KEY] = Value::String(format!("crc32:{:08x}", crc.sum()));
    let mut new_header = serde_json::to_vec(&header).unwrap();
    new_header.resize(new_header.len().div_ceil(8) * 8, b' ');
    let mut rewritten = (new_header.len() as u64).to_le_bytes().to_vec();
    rewritten.extend_from_slice(&new_header);
    rewritten.extend_from_slice(data);
    std::fs::write(file, rewritten).unwrap();
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "safetensors"))
        .collect();
    shards.sort();
    shards
}

#[test]
fn caches_written_before_the_metadata_was_covered_still_read_and_their_tensors_are_still_checked() {
    let setup = setup();
    let dir = written("tensors-only-checksums", &setup);
    let ids = Tensor::from_slice(&[7i64, 0, 4]);
    let before = TeacherCache::open(&dir).unwrap().batch(&ids, 1).unwrap().endpoint("").unwrap().copy();
    for shard in shards(&dir) {
        as_written_before_the_metadata_was_covered(&shard);
        let stored = distill::checksum::verify(&shard);
        assert!(stored.is_ok(), "{stored:?}");
    }
    let cache = TeacherCache::open(&dir).unwrap();
    cache.verify().unwrap();
    assert!(cache.batch(&ids, 1).unwrap().endpoint("").unwrap().equal(&before));
    let shard = dir.join("shard-00001-of-00002.safetensors");
    crate::flip_bytes(&shard, 4, 1);
    assert!(damaged(&checksum::verify(&shard).unwrap_err(), &shard));
    assert!(damaged(&TeacherCache::open(&dir).unwrap().verify().unwrap_err(), &shard));
    let _ = std::fs::remove_dir_all(&dir);

    let (dir, _) = token_cache("tensors-only-token-checksums");
    let before = TokenCache::open(&dir).unwrap().batch(&[5, 1]).unwrap().top_k().unwrap().log_probs.copy();
    for shard in shards(&dir) {
        as_written_before_the_metadata_was_covered(&shard);
        checksum::verify(&shard).unwrap();
    }
    let cache = TokenCache::open(&dir).unwrap();
    cache.verify().unwrap();
    assert!(cache.batch(&[5, 1]).unwrap().top_k().unwrap().log_probs.equal(&before));
    let shard = dir.join("shard-00000-of-00002.safetensors");
    crate::flip_bytes(&shard, 1, 1);
    assert!(damaged(&TokenCache::open(&dir).unwrap().verify().unwrap_err(), &shard));
    let _ = std::fs::remove_dir_all(&dir);
}
