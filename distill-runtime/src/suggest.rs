//! "Did you mean …?": the one edit distance behind every suggestion, at run time (paths of a model)
//! and at compile time (a `const fn`, for string paths checked against a type's schema).

/// The longest name or path compared, in bytes; longer ones get no suggestion. Bounds the work and
/// the scratch row that a `const fn` must keep on the stack.
pub(crate) const MAX_LEN: usize = 128;

/// Levenshtein distance between `a` and `b`, over bytes; `None` when either is longer than
/// [`MAX_LEN`].
pub(crate) const fn edit_distance(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() > MAX_LEN || b.len() > MAX_LEN {
        return None;
    }
    let mut row = [0usize; MAX_LEN + 1];
    let mut j = 0;
    while j <= b.len() {
        row[j] = j;
        j += 1;
    }
    let mut i = 0;
    while i < a.len() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        let mut j = 0;
        while j < b.len() {
            let substitute = diagonal + if a[i] == b[j] { 0 } else { 1 };
            diagonal = row[j + 1];
            row[j + 1] = min(substitute, min(row[j] + 1, row[j + 1] + 1));
            j += 1;
        }
        i += 1;
    }
    Some(row[b.len()])
}

/// Whether a candidate at `distance` from a `len`-byte input is close enough to be a likely typo:
/// a third of the input's length, and at least two edits.
pub(crate) const fn close_enough(distance: usize, len: usize) -> bool {
    distance <= max(len / 3, 2)
}

/// Distance from `typed` to `candidate` when it is a likely typo of it.
pub(crate) const fn typo_distance(typed: &[u8], candidate: &[u8]) -> Option<usize> {
    match edit_distance(candidate, typed) {
        Some(distance) if close_enough(distance, typed.len()) => Some(distance),
        _ => None,
    }
}

/// The candidate closest to `typed`, if one is a likely typo of it (the first of equals).
pub(crate) fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter_map(|candidate| Some((typo_distance(typed.as_bytes(), candidate.as_bytes())?, candidate)))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance(b"features.5.conv", b"features.5.conv"), Some(0));
        assert_eq!(edit_distance(b"features.5.cnv", b"features.5.conv"), Some(1));
        assert_eq!(edit_distance(b"fetures", b"features"), Some(1));
        assert_eq!(edit_distance(b"", b"abc"), Some(3));
        assert_eq!(edit_distance(&[b'a'; MAX_LEN + 1], b"a"), None);
    }

    #[test]
    fn closest_picks_a_likely_typo_or_nothing() {
        let paths = ["features.1.conv", "features.1.bn", "classifier"];
        assert_eq!(closest("features.1.cnv", paths), Some("features.1.conv"));
        assert_eq!(closest("clasifier", paths), Some("classifier"));
        assert_eq!(closest("completely.unrelated", paths), None);
        // Short inputs still allow two edits.
        assert_eq!(closest("fc", ["fc1", "conv"]), Some("fc1"));
    }
}
