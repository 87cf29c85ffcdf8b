//! The checksum's files: written whole or streamed, read, verified in pieces.

use super::*;

#[test]
fn a_streamed_file_is_the_file_write_gives_for_the_same_tensors() {
    let dir = std::env::temp_dir().join(format!("distill-streamed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]).view([3, 2]);
    let b = Tensor::from_slice(&[1i64, 2, 3]);
    let c = Tensor::from_slice(&[4u8, 5, 6, 7, 8]);
    let named =
        vec![("b.first".to_owned(), b.shallow_clone()), ("a".to_owned(), a.shallow_clone()), ("c".to_owned(), c)];
    let metadata = BTreeMap::from([("distill.manifest".to_owned(), "crc32:01234567".to_owned())]);
    write(&dir.join("whole.safetensors"), &named, metadata.clone()).unwrap();
    let specs = named
        .iter()
        .map(|(name, t)| {
            (name.clone(), Dtype::try_from(t.kind()).unwrap(), t.size().iter().map(|&d| d as usize).collect())
        })
        .collect();
    let mut streamed = Streamed::create(&dir.join("streamed.safetensors"), specs, metadata).unwrap();
    // Interleaved appends, in pieces.
    let bytes: Vec<Vec<u8>> = named.iter().map(|(_, t)| tensor_bytes(t).unwrap()).collect();
    streamed.append(1, &bytes[1][..8]).unwrap();
    streamed.append(0, &bytes[0][..8]).unwrap();
    streamed.append(2, &bytes[2]).unwrap();
    streamed.append(1, &bytes[1][8..]).unwrap();
    assert!(streamed.append(2, &[0]).is_err(), "past the tensor's end");
    streamed.append(0, &bytes[0][8..]).unwrap();
    streamed.finish().unwrap();
    assert_eq!(
        std::fs::read(dir.join("streamed.safetensors")).unwrap(),
        std::fs::read(dir.join("whole.safetensors")).unwrap()
    );
    verify(dir.join("streamed.safetensors")).unwrap();
    // Unfinished, nothing is published and the temporary file is gone.
    let mut unfinished =
        Streamed::create(&dir.join("unfinished.safetensors"), vec![("x".into(), Dtype::U8, vec![4])], BTreeMap::new())
            .unwrap();
    unfinished.append(0, &[1, 2]).unwrap();
    drop(unfinished);
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["streamed.safetensors", "whole.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_hashes_tensors_of_dtypes_libtorch_cannot_hold() {
    let path = std::env::temp_dir().join(format!("distill-u16-{}.safetensors", std::process::id()));
    let ids: Vec<u8> = [3u16, 65535, 0, 42].iter().flat_map(|id| id.to_le_bytes()).collect();
    let mut file = Streamed::create(&path, vec![("ids".into(), Dtype::U16, vec![2, 2])], BTreeMap::new()).unwrap();
    file.append(0, &ids).unwrap();
    file.finish().unwrap();
    verify(&path).unwrap();
    let err = read(&path, Missing::Refuse).map(drop).unwrap_err();
    assert!(err.to_string().contains("libtorch cannot hold"), "{err}");
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = verify(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&err, DistillError::Corrupt { reason, .. } if reason.contains("do not match the checksum")),
        "{err}"
    );
}

#[test]
fn a_file_without_a_checksum_reads_only_without_this_librarys_metadata() {
    let path = std::env::temp_dir().join(format!("distill-no-checksum-{}.safetensors", std::process::id()));
    let file_with = |metadata: &str| {
        let header = format!(r#"{{"__metadata__":{metadata},"x":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#);
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&1f32.to_le_bytes());
        std::fs::write(&path, file).unwrap();
    };
    file_with(r#"{"format":"pt"}"#);
    assert_eq!(read(&path, Missing::Accept).unwrap().tensors.len(), 1);
    file_with(r#"{"format":"pt","distill.checkpoint":"training","distill.krc32":"crc32:00000000"}"#);
    let err = read(&path, Missing::Accept).map(drop).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&err, DistillError::Corrupt { reason, .. }
            if reason.contains("no checksum") && reason.contains("`distill.checkpoint`")),
        "{err}"
    );
}

#[test]
fn a_dimension_past_libtorchs_sizes_is_corrupt() {
    // A zero-sized tensor with a dimension of 2^63: a valid safetensors header, no libtorch size.
    let header = br#"{"x":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    let path = std::env::temp_dir().join(format!("distill-huge-dim-{}.safetensors", std::process::id()));
    std::fs::write(&path, file).unwrap();
    let err = read(&path, Missing::Accept).map(drop).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(&err, DistillError::Corrupt { reason, .. } if reason.contains("past libtorch's sizes")), "{err}");
}

/// Rewrites the checksum of the file `path` (written by [`write`]) into the form versions before the
/// metadata was covered wrote: `crc32:` and the CRC of its tensors alone.
fn as_written_before_the_metadata_was_covered(path: &Path) {
    let file = std::fs::read(path).unwrap();
    let parsed = SafeTensors::deserialize(&file).unwrap();
    let (header_len, stored) = SafeTensors::read_metadata(&file).unwrap();
    let mut views = parsed.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let mut crc = FileCrc::default();
    for (name, view) in &views {
        crc.tensor(name, view.dtype(), view.shape());
        crc.update(view.data());
    }
    let tensors_only = format!("crc32:{:08x}", crc.crc32_of_tensors());
    let mut metadata: BTreeMap<String, String> = stored.metadata().clone().unwrap_or_default().into_iter().collect();
    metadata.insert(CHECKSUM_KEY.to_owned(), tensors_only);
    let specs: Vec<(&str, Dtype, &[usize], usize)> =
        views.iter().map(|(name, v)| (name.as_str(), v.dtype(), v.shape(), v.data().len())).collect();
    let (new_header, _) = header(&specs, &metadata).unwrap();
    let mut rewritten = (new_header.len() as u64).to_le_bytes().to_vec();
    rewritten.extend_from_slice(&new_header);
    rewritten.extend_from_slice(&file[8 + header_len..]);
    std::fs::write(path, rewritten).unwrap();
}

/// Flips the lowest bit of the byte `offset` bytes into the first `needle` of the file `path`.
fn flip_at(path: &Path, needle: &[u8], offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the needle is in the file");
    bytes[at + offset] ^= 1;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_in_pieces_agrees_with_the_check_of_the_file_read_whole() {
    let dir = std::env::temp_dir().join(format!("distill-verify-pieces-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tensors = vec![
        ("weight".to_owned(), Tensor::from_slice(&[0.5f32, -1.25, 3.0, 4.5, 5.0, -6.0]).view([2, 3])),
        ("step".to_owned(), Tensor::from(7i64)),
    ];
    let metadata = || {
        BTreeMap::from([
            ("distill.checkpoint".to_owned(), "training".to_owned()),
            ("distill.inputs".to_owned(), "crc32:0badcafe".to_owned()),
        ])
    };
    // Each file, and whether it passes.
    let mut cases: Vec<(&str, bool)> = Vec::new();
    let mut case = |name: &'static str, passes: bool, make: &dyn Fn(&Path)| {
        make(&dir.join(name));
        cases.push((name, passes));
    };
    case("clean", true, &|p| write(p, &tensors, metadata()).unwrap());
    case("tensor-flipped", false, &|p| {
        write(p, &tensors, metadata()).unwrap();
        let mut bytes = std::fs::read(p).unwrap();
        *bytes.last_mut().unwrap() ^= 0x40;
        std::fs::write(p, bytes).unwrap();
    });
    // One hex digit of a metadata value, another hex digit: the header stays valid JSON.
    case("metadata-value-flipped", false, &|p| {
        write(p, &tensors, metadata()).unwrap();
        flip_at(p, b"0badcafe", 1);
    });
    case("metadata-key-flipped", false, &|p| {
        write(p, &tensors, metadata()).unwrap();
        flip_at(p, b"distill.inputs", 9);
    });
    case("checksum-form-flipped", false, &|p| {
        write(p, &tensors, metadata()).unwrap();
        flip_at(p, b"crc32+metadata:", 3);
    });
    case("tensors-only", true, &|p| {
        write(p, &tensors, metadata()).unwrap();
        as_written_before_the_metadata_was_covered(p);
    });
    // What an earlier version's checksum does not cover passes, as it did then.
    case("tensors-only-metadata-flipped", true, &|p| {
        write(p, &tensors, metadata()).unwrap();
        as_written_before_the_metadata_was_covered(p);
        flip_at(p, b"0badcafe", 1);
    });
    case("tensors-only-tensor-flipped", false, &|p| {
        write(p, &tensors, metadata()).unwrap();
        as_written_before_the_metadata_was_covered(p);
        let mut bytes = std::fs::read(p).unwrap();
        *bytes.last_mut().unwrap() ^= 0x40;
        std::fs::write(p, bytes).unwrap();
    });
    case("no-checksum", false, &|p| Tensor::write_safetensors(&tensors, p).unwrap());
    case("truncated", false, &|p| {
        write(p, &tensors, metadata()).unwrap();
        let len = std::fs::metadata(p).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len - 4).unwrap();
    });
    case("not-safetensors", false, &|p| std::fs::write(p, b"not a safetensors file at all").unwrap());
    case("empty", false, &|p| std::fs::write(p, b"").unwrap());
    for (name, passes) in cases {
        let path = dir.join(name);
        let whole = std::fs::read(&path).unwrap();
        let in_memory = checked(&path, &whole, Missing::Refuse).map(drop);
        let pieces = verify(&path);
        assert_eq!(pieces.is_ok(), passes, "{name}: {pieces:?}");
        assert_eq!(in_memory.is_ok(), passes, "{name}: {:?}", in_memory.err());
        if let (Err(pieces), Err(in_memory)) = (pieces, in_memory) {
            let file = path.display().to_string();
            assert!(matches!(&pieces, DistillError::Corrupt { file: f, .. } if *f == file), "{name}: {pieces}");
            assert!(matches!(&in_memory, DistillError::Corrupt { file: f, .. } if *f == file), "{name}: {in_memory}");
            if name.contains("flipped") {
                for error in [pieces.to_string(), in_memory.to_string()] {
                    let metadata_named = error.contains("`distill.checkpoint`, `distill.inputs`");
                    match name {
                        "checksum-form-flipped" => assert!(error.contains("of no form this build knows"), "{error}"),
                        "tensors-only-tensor-flipped" => assert!(error.contains("its tensors do not match"), "{error}"),
                        // The damaged key is named as it now reads.
                        "metadata-key-flipped" => assert!(error.contains("`distill.ioputs`)"), "{error}"),
                        _ => assert!(metadata_named, "{name}: {error}"),
                    }
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_metadata_value_damaged_in_a_file_read_whole_is_refused_before_its_tensors_are_used() {
    let path = std::env::temp_dir().join(format!("distill-read-metadata-{}.safetensors", std::process::id()));
    let tensors = vec![("w".to_owned(), Tensor::from_slice(&[1.0f32, 2.0]))];
    write(&path, &tensors, BTreeMap::from([("distill.record".to_owned(), "prune".to_owned())])).unwrap();
    assert_eq!(read(&path, Missing::Accept).unwrap().tensors.len(), 1);
    flip_at(&path, b"\"prune\"", 2);
    let error = read(&path, Missing::Accept).map(drop).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&error, DistillError::Corrupt { reason, .. }
            if reason.starts_with("its tensors or its metadata (`distill.record`) do not match the checksum")),
        "{error}"
    );
}
