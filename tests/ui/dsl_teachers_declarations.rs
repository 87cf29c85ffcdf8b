include!("common/models.rs");

distill! {
    struct Duplicate for Net => (big: Net, big: Net, student: Net, big_grad: Net) {
        f0: student.block.conv => big.block.conv with Mse;
        f1: student.block.conv => big_grad.block.conv with Mse;
    }
}

distill! {
    struct Unused for Net => (big: Net, wide: Net) {
        f0: student.block.conv => big.block.conv with Mse;
        big_output: student.classifier => big.classifier with Mse;
    }
}

distill! {
    struct Tuple for Net => (Net, Net) {
        f0: student.block.conv => teacher.0.block.conv with Mse;
    }
}

distill! {
    struct Empty for Net => () {
        f0: student.block.conv => teacher.block.conv with Mse;
    }
}

distill! {
    struct Methods for Net => (step: Net, distillation: Net) {
        f0: student.block.conv => step.block.conv with Mse;
        f1: student.classifier => distillation.classifier with Mse;
    }
}

fn main() {}
