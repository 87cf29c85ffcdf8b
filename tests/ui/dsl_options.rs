include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        a: student.classifier => teacher.classifier with |s, t| (s - t).square().mean(None), inputs;
        b: student.classifier => teacher.classifier with |s, t| (s - t).square().mean(None), input, input(teacher);
        c: student.classifier => teacher.classifier with |s, t| (s - t).square().mean(None), all_calls(both);
        #[cfg(test)]
        d: student.classifier => teacher.classifier with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
