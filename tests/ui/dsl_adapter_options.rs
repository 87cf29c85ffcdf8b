include!("common/models.rs");

// An option that is not a method of the adapter's builder: rustc's error, at the method's token.
distill! {
    struct Misspelt for Net => Net {
        f0: student.features[0].conv => conv2d_adapter(teacher.features[0].conv).tolerence(Tolerance::default()) with |s, t| (s - t).square().mean(None);
    }
}

// An option of the wrong type: at the argument.
distill! {
    struct WrongType for Net => Net {
        f0: student.features[0].conv => conv2d_adapter(teacher.features[0].conv).tolerance(1e-4) with |s, t| (s - t).square().mean(None);
    }
}

// An option that is not a method call.
distill! {
    struct NotACall for Net => Net {
        f0: student.features[0].conv => conv2d_adapter(teacher.features[0].conv).tolerance with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
