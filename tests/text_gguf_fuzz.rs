//! A truncated, corrupted or hostile GGUF file is an error naming the file and the byte offset: never
//! a panic, an out-of-bounds read, or an allocation sized by a count the file cannot hold.

use std::path::PathBuf;

use distill::text::gguf::{GgufError, GgufFile};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/text").join(name)
}

/// Opens `bytes` and, when that succeeds, reads every tensor: neither may panic.
fn exercise(bytes: Vec<u8>) -> Result<(), GgufError> {
    let gguf = GgufFile::from_bytes("fuzz.gguf", bytes)?;
    for info in gguf.tensor_infos() {
        if info.ggml_type.is_supported() {
            gguf.tensor_values(&info.name)?;
        }
    }
    Ok(())
}

/// The end of the last tensor's bytes: a file cut anywhere before it is incomplete.
fn end_of_data(gguf: &GgufFile) -> u64 {
    gguf.tensor_infos().iter().map(|info| gguf.data_offset() + info.offset + info.byte_size().unwrap()).max().unwrap()
}

#[test]
fn every_truncation_is_a_malformed_file_error() {
    for name in ["value_types.gguf", "tiny.gguf"] {
        let bytes = std::fs::read(data(name)).unwrap();
        let complete = end_of_data(&GgufFile::from_bytes(name, bytes.clone()).unwrap()) as usize;
        for len in 0..bytes.len() {
            let result = exercise(bytes[..len].to_vec());
            if len < complete {
                match result {
                    Err(GgufError::Malformed { offset, path, .. }) => {
                        assert!(offset as usize <= len, "{name} cut at {len}: offset {offset} is past the end");
                        assert_eq!(path, PathBuf::from("fuzz.gguf"));
                    }
                    other => panic!("{name} cut at {len} bytes: {other:?}"),
                }
            } else {
                // Only the padding after the last tensor is missing.
                assert!(result.is_ok(), "{name} cut at {len} bytes (data complete): {result:?}");
            }
        }
    }
}

#[test]
fn a_truncated_file_on_disk_is_an_error_naming_it_and_the_offset() {
    let bytes = std::fs::read(data("tiny.gguf")).unwrap();
    let dir = std::env::temp_dir().join(format!("distill-gguf-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for len in [0, 3, 20, 1000, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.join(format!("cut-{len}.gguf"));
        std::fs::write(&path, &bytes[..len]).unwrap();
        let error = GgufFile::open(&path).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("at byte offset"), "{message}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SplitMix64: a fixed sequence of flips on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn bit_flips_in_the_header_metadata_and_tensor_infos_never_panic() {
    // value_types.gguf: every bit of everything before the data region.
    let bytes = std::fs::read(data("value_types.gguf")).unwrap();
    let region = GgufFile::from_bytes("v", bytes.clone()).unwrap().data_offset() as usize;
    let mut errors = 0;
    for bit in 0..region * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        errors += usize::from(exercise(flipped).is_err());
    }
    assert!(errors > 0, "no flip was detected");

    // tiny.gguf: its 24-byte header bit by bit, then 10 000 seeded flips of one to three bits
    // anywhere before the data region (the tokenizer's metadata, the tensor infos).
    let bytes = std::fs::read(data("tiny.gguf")).unwrap();
    let region = GgufFile::from_bytes("t", bytes.clone()).unwrap().data_offset() as usize;
    for bit in 0..24 * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let _ = exercise(flipped);
    }
    let mut rng = Rng(0x6767_7566);
    let mut flipped = bytes.clone();
    for _ in 0..10_000 {
        flipped.copy_from_slice(&bytes);
        for _ in 0..1 + rng.next() % 3 {
            let bit = (rng.next() % (region as u64 * 8)) as usize;
            flipped[bit / 8] ^= 1 << (bit % 8);
        }
        let _ = exercise(flipped.clone());
    }
}

/// A minimal GGUF header: magic, version 3, tensor count, metadata count.
fn header(tensors: u64, kvs: u64) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(tensors.to_le_bytes());
    bytes.extend(kvs.to_le_bytes());
    bytes
}

fn string(bytes: &mut Vec<u8>, s: &str) {
    bytes.extend((s.len() as u64).to_le_bytes());
    bytes.extend(s.as_bytes());
}

fn malformed(bytes: Vec<u8>) -> (u64, String) {
    match GgufFile::from_bytes("hostile.gguf", bytes) {
        Err(GgufError::Malformed { offset, reason, .. }) => (offset, reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_counts_are_refused_before_allocating() {
    // Counts far beyond what the remaining bytes can hold, each one at its own offset.
    let (offset, reason) = malformed(header(u64::MAX, 0));
    assert_eq!(offset, 8);
    assert!(reason.contains("tensor count is 18446744073709551615"), "{reason}");
    let (offset, reason) = malformed(header(0, 1 << 40));
    assert_eq!(offset, 16);
    assert!(reason.contains("metadata entry count"), "{reason}");

    let mut bytes = header(0, 1);
    bytes.extend((1u64 << 62).to_le_bytes()); // a key of 2^62 bytes
    bytes.extend([0; 64]);
    let (offset, reason) = malformed(bytes);
    assert_eq!(offset, 24);
    assert!(reason.contains("the length of a metadata key"), "{reason}");

    let mut bytes = header(0, 1);
    string(&mut bytes, "big.array");
    bytes.extend(9u32.to_le_bytes()); // array
    bytes.extend(8u32.to_le_bytes()); // of strings
    bytes.extend((1u64 << 60).to_le_bytes());
    bytes.extend([0; 64]);
    let (offset, reason) = malformed(bytes);
    assert_eq!(offset, 24 + 8 + 9 + 4 + 4);
    assert!(reason.contains("an array's length is 1152921504606846976"), "{reason}");

    // Arrays nested 10 000 deep: refused at the 17th level, not by exhausting the stack.
    let mut bytes = header(0, 1);
    string(&mut bytes, "deep");
    bytes.extend(9u32.to_le_bytes());
    for _ in 0..10_000 {
        bytes.extend(9u32.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
    }
    let (_, reason) = malformed(bytes);
    assert!(reason.contains("nested more than 16 deep"), "{reason}");

    // A tensor whose dimensions multiply past u64, and one reaching past the end of the file.
    let mut bytes = header(1, 0);
    string(&mut bytes, "t");
    bytes.extend(2u32.to_le_bytes());
    bytes.extend((1u64 << 40).to_le_bytes());
    bytes.extend((1u64 << 40).to_le_bytes());
    bytes.extend(0u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    let (_, reason) = malformed(bytes);
    assert!(reason.contains("product overflows"), "{reason}");

    let mut bytes = header(1, 0);
    string(&mut bytes, "t");
    bytes.extend(1u32.to_le_bytes());
    bytes.extend(1024u64.to_le_bytes());
    bytes.extend(0u32.to_le_bytes()); // F32: 4096 bytes
    bytes.extend(0u64.to_le_bytes());
    bytes.resize(bytes.len().div_ceil(32) * 32 + 100, 0);
    let (_, reason) = malformed(bytes);
    assert!(reason.contains("tensor `t` (4096 bytes at data offset 0) ends past the end of the file"), "{reason}");
}

#[test]
fn wrong_magic_version_and_values_are_named() {
    let (offset, reason) = malformed(b"GGML\x03\0\0\0".to_vec());
    assert_eq!(offset, 0);
    assert!(reason.contains("not a GGUF file"), "{reason}");
    let mut bytes = header(0, 0);
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(malformed(bytes).1.contains("GGUF version 1 is not supported"));
    let mut bytes = header(0, 0);
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(malformed(bytes).1.contains("big-endian"));

    let mut bytes = header(0, 1);
    string(&mut bytes, "flag");
    bytes.extend(7u32.to_le_bytes());
    bytes.push(2);
    assert!(malformed(bytes).1.contains("a bool value is 2"));

    let mut bytes = header(0, 2);
    for _ in 0..2 {
        string(&mut bytes, "twice");
        bytes.extend(0u32.to_le_bytes());
        bytes.push(1);
    }
    assert!(malformed(bytes).1.contains("`twice` appears twice"));

    let mut bytes = header(0, 1);
    string(&mut bytes, "general.alignment");
    bytes.extend(4u32.to_le_bytes());
    bytes.extend(48u32.to_le_bytes());
    assert!(malformed(bytes).1.contains("power of two"));

    let mut bytes = header(0, 1);
    bytes.extend(2u64.to_le_bytes());
    bytes.extend([0xff, 0xfe]);
    bytes.extend(0u32.to_le_bytes());
    bytes.push(0);
    let (offset, reason) = malformed(bytes);
    assert_eq!(offset, 32);
    assert!(reason.contains("not valid UTF-8"), "{reason}");

    // Q8_0 needs whole blocks of 32 along the first dimension.
    let mut bytes = header(1, 0);
    string(&mut bytes, "q");
    bytes.extend(1u32.to_le_bytes());
    bytes.extend(20u64.to_le_bytes());
    bytes.extend(8u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    assert!(malformed(bytes).1.contains("blocks hold 32 values, but its first dimension is 20"));
}

#[test]
fn a_dimension_past_i64_is_refused_even_beside_a_zero_one() {
    // The product is 0, so only a check of each dimension catches the second, whose i64 shape
    // would be negative.
    for dims in [[0, 1u64 << 63], [1u64 << 63, 0]] {
        let mut bytes = header(1, 0);
        string(&mut bytes, "t");
        bytes.extend(2u32.to_le_bytes());
        for dim in dims {
            bytes.extend(dim.to_le_bytes());
        }
        bytes.extend(0u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.resize(bytes.len().div_ceil(32) * 32, 0);
        let (offset, reason) = malformed(bytes);
        let at = if dims[0] == 0 { 24 + 9 + 4 + 8 } else { 24 + 9 + 4 };
        assert_eq!(offset, at as u64, "{dims:?}");
        assert!(reason.contains("tensor `t`: dimension 9223372036854775808 does not fit in i64"), "{reason}");
    }
}
