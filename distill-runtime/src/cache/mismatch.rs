//! Naming the first difference between two manifests, for `DistillError::CacheMismatch`.

use super::manifest::{EndpointEntry, Manifest, ShardEntry};

/// `(what, in the cache, here)` for the first field where `cached` and `ours` differ.
pub(crate) fn first_difference(cached: &Manifest, ours: &Manifest) -> Option<(String, String, String)> {
    let differ = |what: &str, a: String, b: String| (a != b).then(|| (what.to_owned(), a, b));
    let shown = |value: &Option<String>| value.clone().unwrap_or_else(|| "not recorded".to_owned());
    differ("the cache layout version", cached.format.to_string(), ours.format.to_string())
        .or_else(|| differ("the teacher weights' hash", cached.teacher_hash.clone(), ours.teacher_hash.clone()))
        .or_else(|| differ("the inputs (their identity)", shown(&cached.inputs), shown(&ours.inputs)))
        .or_else(|| {
            let mode =
                |m: &Manifest| m.teacher_mode.map_or("not recorded".to_owned(), |m| format!("{m:?}").to_lowercase());
            differ("the teacher's mode", mode(cached), mode(ours))
        })
        .or_else(|| differ("the number of samples", cached.num_samples.to_string(), ours.num_samples.to_string()))
        .or_else(|| differ("the input shape", format!("{:?}", cached.input_shape), format!("{:?}", ours.input_shape)))
        .or_else(|| differ("the number of views", cached.views.to_string(), ours.views.to_string()))
        .or_else(|| differ("the augmentation", format!("{:?}", cached.augment), format!("{:?}", ours.augment)))
        .or_else(|| differ("the views' seed", cached.seed.to_string(), ours.seed.to_string()))
        .or_else(|| differ("the teacher endpoints", endpoint_list(&cached.endpoints), endpoint_list(&ours.endpoints)))
        .or_else(|| {
            cached.endpoints.iter().zip(&ours.endpoints).find_map(|(a, b)| {
                let what = format!("the shape of {}", endpoint_name(&a.path));
                differ(&what, format!("{:?}", a.shape), format!("{:?}", b.shape)).or_else(|| {
                    let what = format!("the encoding of {}", endpoint_name(&a.path));
                    differ(&what, format!("{:?}", a.encoding), format!("{:?}", b.encoding))
                })
            })
        })
        .or_else(|| differ("the number of shards", cached.shards.len().to_string(), ours.shards.len().to_string()))
        .or_else(|| differ("the shards' samples", shard_list(&cached.shards), shard_list(&ours.shards)))
        .or_else(|| {
            let size = |m: &Manifest| m.write_batch_size.map_or("not recorded".to_owned(), |b| b.to_string());
            differ("the write batch size", size(cached), size(ours))
        })
}

/// `` `features.1` (output), the teacher's own output `` …
pub(crate) fn endpoint_list(endpoints: &[EndpointEntry]) -> String {
    if endpoints.is_empty() {
        return "none".to_owned();
    }
    let shown = |e: &EndpointEntry| match e.path.as_str() {
        "" => format!("the teacher's own {}", e.port),
        path => format!("`{path}` ({})", e.port),
    };
    endpoints.iter().map(shown).collect::<Vec<_>>().join(", ")
}

/// `` `features.1` ``, or the teacher's own output for the empty path (the model itself).
fn endpoint_name(path: &str) -> String {
    if path.is_empty() {
        "the teacher's own output".to_owned()
    } else {
        format!("`{path}`")
    }
}

/// `` `shard-00000-of-00002.safetensors` 0..5, `` …
fn shard_list(shards: &[ShardEntry]) -> String {
    shards.iter().map(|s| format!("`{}` {}..{}", s.file, s.start, s.end)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::manifest::Encoding;
    use crate::point::Port;

    #[test]
    fn the_teachers_own_output_is_named_not_quoted_empty() {
        let entry =
            |path: &str, port| EndpointEntry { path: path.to_owned(), port, shape: vec![4], encoding: Encoding::F32 };
        let list = endpoint_list(&[entry("features.1", Port::Output), entry("", Port::Output), entry("", Port::Input)]);
        assert_eq!(list, "`features.1` (output), the teacher's own output, the teacher's own input");
    }
}
