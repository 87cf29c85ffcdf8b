//! What a file's checksum covers, and how it is checked.
//!
//! The checksum is one CRC-32 (IEEE) over, first, every tensor in name order — its name, dtype,
//! shape and bytes — then this library's metadata entries: every key that starts with `distill.`
//! (the manifest hash and inputs CRC of a cache shard, the kind of a checkpoint, the marker of a
//! prune record…), in key order, with its value; the checksum's own entry excepted. A damaged
//! metadata value is then found like a damaged tensor: a cache writer's rerun does not blame the
//! dataset for a shard whose recorded inputs CRC was damaged, and a shard whose recorded manifest
//! hash was damaged is not taken for an edited manifest.
//!
//! The stored value says what it covers, so files written before the metadata was covered still
//! read, with the check they were written with:
//!
//! | stored under `distill.crc32`   | covers                              |
//! |--------------------------------|-------------------------------------|
//! | `crc32+metadata:<8 hex digits>` | the tensors and the metadata (now)  |
//! | `crc32:<8 hex digits>`          | the tensors only (earlier versions) |
//!
//! A damaged file cannot pass for an earlier one: the two forms differ in length, so no flipped byte
//! turns one into the other, and the CRC a current file stores is of its tensors and metadata, which
//! a check of the tensors alone does not reproduce (but with probability 2⁻³²). A value of neither
//! form is refused.

use std::collections::HashMap;

use safetensors::tensor::Dtype;

use super::{CHECKSUM_KEY, OWN_KEY_PREFIX};

/// The stored form of a checksum of the tensors and this library's metadata.
pub(crate) const WITH_METADATA: &str = "crc32+metadata:";

/// Whether the checksum stored as `stored` covers the file's metadata (a current file's does).
pub(crate) fn covers_metadata(stored: &str) -> bool {
    stored.starts_with(WITH_METADATA)
}

/// The stored form of a checksum of the tensors alone, as versions before the metadata was covered
/// wrote it (read, never written).
const TENSORS_ONLY: &str = "crc32:";

/// The checksum of one file, fed its tensors in name order: for each, [`tensor`](Self::tensor)
/// then its bytes ([`update`](Self::update), in pieces as they come, or [`combine`](Self::combine)
/// with their CRC computed apart).
#[derive(Clone, Default)]
pub(crate) struct FileCrc {
    crc: crc32fast::Hasher,
}

impl FileCrc {
    /// Starts the tensor `name`: hashes its name, dtype and shape (what the checksum hashes of a
    /// tensor before its bytes).
    pub(crate) fn tensor(&mut self, name: &str, dtype: Dtype, shape: &[usize]) {
        self.crc.update(&(name.len() as u64).to_le_bytes());
        self.crc.update(name.as_bytes());
        self.crc.update(format!("{dtype:?}").as_bytes());
        self.crc.update(&(shape.len() as u64).to_le_bytes());
        for dim in shape {
            self.crc.update(&(*dim as u64).to_le_bytes());
        }
    }

    /// Hashes bytes of the tensor started last.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
    }

    /// Hashes the bytes of the tensor started last, given as their own CRC.
    pub(crate) fn combine(&mut self, bytes: &crc32fast::Hasher) {
        self.crc.combine(bytes);
    }

    /// The CRC of the tensors alone, as versions before the metadata was covered stored it.
    #[cfg(test)]
    pub(crate) fn crc32_of_tensors(self) -> u32 {
        self.crc.finalize()
    }

    /// The value to store under [`CHECKSUM_KEY`] in a file of these tensors and `metadata` (any
    /// entry of the checksum's own key in it is left out).
    pub(crate) fn finish<'a>(self, metadata: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
        let entries = covered(metadata);
        format!("{WITH_METADATA}{:08x}", with_metadata(self.crc, &entries))
    }

    /// Checks `stored`, the value under [`CHECKSUM_KEY`] of the file whose tensors this hashed and
    /// whose metadata is `metadata`: `Err` with the reason when they do not match, or when `stored` is
    /// of no form this build knows.
    pub(crate) fn check(self, stored: &str, metadata: &HashMap<String, String>) -> Result<(), String> {
        let (computed, what) = if stored.starts_with(WITH_METADATA) {
            let entries = covered(metadata);
            let keys: Vec<String> = entries.iter().map(|(key, _)| format!("`{key}`")).collect();
            let what = if keys.is_empty() {
                "its tensors".to_owned()
            } else {
                format!("its tensors or its metadata ({})", keys.join(", "))
            };
            (format!("{WITH_METADATA}{:08x}", with_metadata(self.crc, &entries)), what)
        } else if stored.starts_with(TENSORS_ONLY) {
            (format!("{TENSORS_ONLY}{:08x}", self.crc.finalize()), "its tensors".to_owned())
        } else {
            // The value may be anything a damaged header holds: show its start only.
            let shown: String = stored.chars().take(40).collect();
            return Err(format!(
                "its checksum (`{CHECKSUM_KEY}` in its metadata) is `{shown}`, of no form this build knows \
                 (`{WITH_METADATA}` or `{TENSORS_ONLY}` and 8 hex digits): the value was damaged, or a newer version \
                 of this library wrote the file"
            ));
        };
        if computed == stored {
            return Ok(());
        }
        Err(format!(
            "{what} do not match the checksum it was written with ({stored}, now {computed}): the file was damaged or \
             changed after it was written"
        ))
    }
}

/// This library's entries of `metadata` but the checksum's own, in key order.
fn covered<'a>(metadata: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<(&'a str, &'a str)> {
    let mut entries: Vec<(&str, &str)> = metadata
        .into_iter()
        .filter(|(key, _)| key.starts_with(OWN_KEY_PREFIX) && key.as_str() != CHECKSUM_KEY)
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    entries.sort_unstable();
    entries
}

/// The CRC of the tensors hashed into `crc`, followed by the metadata `entries`: their count, then
/// each key and value with its length (so that no two lists of entries hash the same bytes).
fn with_metadata(mut crc: crc32fast::Hasher, entries: &[(&str, &str)]) -> u32 {
    crc.update(b"metadata");
    crc.update(&(entries.len() as u64).to_le_bytes());
    for (key, value) in entries {
        crc.update(&(key.len() as u64).to_le_bytes());
        crc.update(key.as_bytes());
        crc.update(&(value.len() as u64).to_le_bytes());
        crc.update(value.as_bytes());
    }
    crc.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum of tensors `(name, dtype, shape, bytes)` given in any order, with `metadata`.
    fn stored(tensors: &[(&str, Dtype, &[usize], &[u8])], metadata: &[(&str, &str)]) -> String {
        let mut sorted = tensors.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut crc = FileCrc::default();
        for (name, dtype, shape, data) in sorted {
            crc.tensor(name, dtype, shape);
            crc.update(data);
        }
        let metadata: Vec<(String, String)> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        crc.finish(metadata.iter().map(|(k, v)| (k, v)))
    }

    #[test]
    fn the_checksum_covers_names_shapes_bytes_and_own_metadata_in_any_order() {
        let a: &[u8] = &[1, 2, 3, 4];
        let own = [("distill.inputs", "crc32:01234567"), ("distill.manifest", "crc32:89abcdef")];
        let base = stored(&[("a", Dtype::F32, &[1], a), ("b", Dtype::U8, &[0], &[])], &own);
        assert!(base.starts_with(WITH_METADATA) && base.len() == WITH_METADATA.len() + 8, "{base}");
        let reordered = stored(&[("b", Dtype::U8, &[0], &[]), ("a", Dtype::F32, &[1], a)], &[own[1], own[0]]);
        assert_eq!(base, reordered);
        // Neither the checksum's own entry nor other tools' keys are covered.
        let with_others = [own[0], own[1], (CHECKSUM_KEY, "crc32+metadata:00000000"), ("format", "pt")];
        assert_eq!(base, stored(&[("a", Dtype::F32, &[1], a), ("b", Dtype::U8, &[0], &[])], &with_others));
        let tensors = [("a", Dtype::F32, &[1usize][..], a), ("b", Dtype::U8, &[0usize][..], &[][..])];
        let others = [
            stored(&[("c", Dtype::F32, &[1], a), tensors[1]], &own),
            stored(&[("a", Dtype::F32, &[1, 1], a), tensors[1]], &own),
            stored(&[("a", Dtype::F32, &[1], &[1, 2, 3, 5]), tensors[1]], &own),
            stored(&tensors, &[own[0], ("distill.manifest", "crc32:89abcdee")]),
            stored(&tensors, &[own[0], ("distill.manifesu", "crc32:89abcdef")]),
            stored(&tensors, &[own[0]]),
            stored(&tensors, &[own[0], own[1], ("distill.extra", "")]),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_checksum_of_the_tensors_alone_still_checks_and_other_forms_are_refused() {
        let mut crc = FileCrc::default();
        crc.tensor("x", Dtype::U8, &[2]);
        crc.update(&[7, 9]);
        let tensors_only = format!("{TENSORS_ONLY}{:08x}", crc.clone().crc32_of_tensors());
        let metadata = HashMap::from([("distill.checkpoint".to_owned(), "training".to_owned())]);
        crc.clone().check(&tensors_only, &metadata).unwrap();
        let current = crc.clone().finish(&metadata);
        crc.clone().check(&current, &metadata).unwrap();
        // A current checksum is not one of the tensors alone, so it cannot be passed off as one.
        let as_old = current.replacen(WITH_METADATA, TENSORS_ONLY, 1);
        let reason = crc.clone().check(&as_old, &metadata).unwrap_err();
        assert!(reason.starts_with("its tensors do not match the checksum"), "{reason}");
        let damaged = HashMap::from([("distill.checkpoint".to_owned(), "trainint".to_owned())]);
        let reason = crc.clone().check(&current, &damaged).unwrap_err();
        assert!(reason.starts_with("its tensors or its metadata (`distill.checkpoint`) do not match"), "{reason}");
        let reason = crc.check(&current.replacen("crc32+", "crc32-", 1), &metadata).unwrap_err();
        assert!(reason.contains("of no form this build knows"), "{reason}");
    }
}
