include!("common/models.rs");

// A label is a field of the generated output: a keyword (without `r#`) or a `__distill` name is the
// macro's error at the label, and a keyword field in a path is its error at the field, instead of a
// syntax error in the generated code that would lose every item. The pairs whose labels are usable
// keep their fields, so the use below adds no error.
distill! {
    struct Kd for Net => Net {
        type: student.classifier => teacher.classifier with |s, t| (s - t).square().mean(None);
        self: student.block.conv => teacher.block.conv with |s, t| (s - t).square().mean(None);
        __distill_terms: student.block.bn => teacher.block.bn with |s, t| (s - t).square().mean(None);
        f0: student.block.type => teacher.block.conv with |s, t| (s - t).square().mean(None);
        r#loop: student => teacher with |s, t| (s - t).square().mean(None);
    }
}

fn uses(out: KdOutput<'_>) -> Tensor {
    out.f0.loss() + out.r#loop.loss()
}

fn main() {
    let _ = uses;
}
