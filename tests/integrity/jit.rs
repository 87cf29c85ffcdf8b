//! TorchScript archives: dict keys hoisted into variables or added in later statements, and zip
//! CRCs checked on load.

use std::path::{Path, PathBuf};

use distill::jit::Module;
use tch::{Device, Kind, Tensor};

use crate::temp_dir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jit").join(name)
}

/// Outputs by name, on `x`.
fn outputs(module: &Module, x: &Tensor) -> Vec<(String, Tensor)> {
    module.outputs().into_iter().zip(module.forward_outputs(x, false).unwrap()).collect()
}

#[test]
fn keys_of_34_characters_or_more_are_read_from_their_variables() {
    let module = Module::load(fixture("long_keys.pt"), Device::Cpu).unwrap();
    let long = ["features_denseblock4_denselayer16_conv2", "features_denseblock4_denselayer15_conv2"];
    assert_eq!(module.outputs(), [long[0], "logits", long[1]]);
    let x = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
    let got = outputs(&module, &x);
    assert!(got[0].1.equal(&(&x * 2)) && got[1].1.equal(&(&x + 1)) && got[2].1.equal(&x));
}

#[test]
fn a_dict_filled_in_several_statements_has_all_its_keys() {
    let x = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
    let set_item = Module::load(fixture("set_item.pt"), Device::Cpu).unwrap();
    assert_eq!(set_item.outputs(), ["a", "b"]);
    let got = outputs(&set_item, &x);
    assert!(got[0].1.equal(&(&x * 2)) && got[1].1.equal(&(&x + 1)));
    let update = Module::load(fixture("update.pt"), Device::Cpu).unwrap();
    assert_eq!(update.outputs(), ["a", "c"]);
    let got = outputs(&update, &x);
    assert!(got[0].1.equal(&(&x * 2)) && got[1].1.equal(&x));
}

/// The offset of the first data byte of the zip entry whose name ends with `suffix`.
fn entry_data(archive: &[u8], suffix: &str) -> usize {
    let mut at = 0;
    while let Some(found) = archive[at..].windows(4).position(|w| w == [0x50, 0x4b, 0x03, 0x04]) {
        let header = at + found;
        let field = |offset: usize| u16::from_le_bytes([archive[header + offset], archive[header + offset + 1]]);
        let (name_len, extra_len) = (field(26) as usize, field(28) as usize);
        let name = std::str::from_utf8(&archive[header + 30..header + 30 + name_len]).unwrap_or_default();
        if name.ends_with(suffix) {
            return header + 30 + name_len + extra_len;
        }
        at = header + 4;
    }
    panic!("no entry `{suffix}`");
}

/// A flipped byte anywhere is the CRC's error naming the entry: in a weight tensor's storage, which
/// libtorch alone would load without a word, and in the first byte of the pickle, which the reader
/// of the outputs' names reads too (the CRCs are checked first, so its error is not a misleading
/// "not a TorchScript module").
#[test]
fn a_flipped_byte_in_a_torchscript_archive_is_refused() {
    let dir = temp_dir("jit-crc");
    for entry in ["data/0", "data.pkl"] {
        let mut archive = std::fs::read(fixture("features.pt")).unwrap();
        let at = entry_data(&archive, entry);
        archive[at] ^= 0x40;
        let damaged = dir.join("features.pt");
        std::fs::write(&damaged, &archive).unwrap();
        for error in [
            Module::load(&damaged, Device::Cpu).map(drop).unwrap_err(),
            Module::load_with_outputs(&damaged, Device::Cpu, &["logits"]).map(drop).unwrap_err(),
        ] {
            let message = error.to_string();
            assert!(
                message.contains("CRC-32") && message.contains(entry) && message.contains("features.pt"),
                "{message}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
