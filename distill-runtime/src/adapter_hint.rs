//! Which adapter would make a pair's two tensors comparable: the advice a shape mismatch's message
//! ends with. It is text about the adapters worked out from the two shapes alone, so the error type,
//! below every other module, can give it without depending on the adapters.

/// What would make a student tensor of shape `student` and a teacher tensor of shape `teacher`
/// comparable, as advice for a message; `None` when the shapes differ in more than a width.
pub(crate) fn adapter_hint(student: &[i64], teacher: &[i64]) -> Option<String> {
    if student.len() != teacher.len() || student.is_empty() {
        return None;
    }
    let differing: Vec<usize> = (0..student.len()).filter(|&d| student[d] != teacher[d]).collect();
    let [dim] = differing[..] else {
        return None;
    };
    let (s, t) = (student[dim], teacher[dim]);
    if student.len() == 4 && dim == 1 {
        let pruned = if s < t {
            " — or, when the student is a pruned copy of a teacher typed in Rust, `conv2d_adapter(teacher.…)`, \
             which selects the kept channels"
        } else {
            ""
        };
        Some(format!(
            "they differ in channels ({s} vs {t}): put an adapter on one side, e.g. the teacher endpoint \
             wrapped in `fitted_conv1x1_adapter(…)` in `distill!` (a typed or a string path) or `conv1x1_adapter(path, {t}, {s})` on the teacher \
             tensor in a `Mapping`{pruned}"
        ))
    } else if dim == student.len() - 1 {
        Some(format!(
            "they differ in the last dimension ({s} vs {t}): put an adapter on one side, e.g. the teacher \
             endpoint wrapped in `fitted_linear_adapter(…)` in `distill!` (a typed or a string path) or `linear_adapter(path, {t}, {s})` on the teacher \
             tensor in a `Mapping`"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::adapter_hint;

    #[test]
    fn hints_name_the_adapter_that_fits_the_differing_dimension() {
        let linear = adapter_hint(&[8, 16, 32], &[8, 16, 64]).unwrap();
        assert!(
            linear.contains("fitted_linear_adapter") && linear.contains("linear_adapter(path, 64, 32)"),
            "{linear}"
        );
        let conv = adapter_hint(&[8, 16, 7, 7], &[8, 64, 7, 7]).unwrap();
        assert!(conv.contains("fitted_conv1x1_adapter") && conv.contains("conv2d_adapter"), "{conv}");
        let wider = adapter_hint(&[8, 64, 7, 7], &[8, 16, 7, 7]).unwrap();
        assert!(!wider.contains("conv2d_adapter(teacher"), "{wider}");
        assert_eq!(adapter_hint(&[8, 16, 7, 7], &[8, 16, 14, 14]), None);
        assert_eq!(adapter_hint(&[8, 10], &[8, 10, 1]), None);
    }
}
