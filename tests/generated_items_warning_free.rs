//! The generated items are documented and warning-free, even under `deny(warnings, missing_docs)`:
//! this file compiling is the test. It is an ordinary test target, built with the others, rather
//! than a trybuild `pass` case: one of those makes trybuild build (not only check) every dependency
//! and every compile-fail case, one case at a time, linking each against libtorch.
#![deny(warnings, missing_docs, unused_qualifications, unreachable_pub)]

use distill::prelude::*;

mod model {
    use distill::prelude::*;
    use tch::Tensor;

    /// A block.
    #[derive(Debug, Distillable)]
    pub struct Block {
        /// Its conv.
        pub conv: nn::Conv2D,
        /// A setting.
        #[distill(skip)]
        pub stride: i64,
    }

    /// A tuple of modules.
    #[derive(Debug, Distillable)]
    pub struct Two(pub nn::Linear, pub nn::Linear);

    /// Alternatives.
    #[derive(Debug, Distillable)]
    pub enum Head {
        /// One layer.
        One(nn::Linear),
        /// Nothing.
        None,
    }

    /// Generic.
    #[derive(Debug, Distillable)]
    pub struct Stack<L> {
        /// Layers.
        pub layers: nn::Seq<L>,
    }

    /// A net.
    #[derive(Debug, Distillable)]
    pub struct Net {
        /// Blocks.
        pub features: nn::Seq<Block>,
        /// Two.
        pub two: Two,
        /// Head.
        pub head: Head,
        /// Stack.
        pub stack: Stack<nn::Linear>,
    }

    impl ModuleT for Net {
        fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
            xs.shallow_clone()
        }
    }
}

use model::Net;

distill! {
    /// A documented distillation.
    pub struct Kd for Net => Net {
        /// Documented pair.
        f0: student.features[0].conv => conv2d_adapter(teacher.features[0].conv) with Mse;
        inverted_conv2d_adapter(student.features[1].conv) => teacher.features[1].conv with L1 * 2.0;
        student.two.1 => teacher.two.1 with |s, t| (s - t).abs().mean(tch::Kind::Float);
        "head.0" => "head.0" with KlDiv::new(2.0), all_calls(student);
        "stack.layers.3" => teacher.stack.layers[3] with Mse, input;
        student => teacher with AttentionTransfer::default() * 100.0;
    }
}

distill! {
    /// A documented distillation from two teachers.
    pub struct Ens for Net => (big: Net, other: Net) {
        /// Documented pair.
        f0: student.features[0].conv => conv2d_adapter(big.features[0].conv) with Mse;
        "head.0" => other["head.0"] with KlDiv::new(2.0);
        student => other with Mse, input(teacher);
    }
}

fn build_ens<'m>(vs: &nn::VarStore, student: &'m Net, big: &'m Net, other: &'m Net) -> Result<Ens<'m>, DistillError> {
    Ok(Ens::new(vs.root() / "ens", student, big, other)?.big_grad(true).other_train(false).teacher_grad(false))
}

fn build<'m>(vs: &nn::VarStore, student: &'m Net, teacher: &'m Net) -> Result<Kd<'m>, DistillError> {
    Ok(Kd::new(vs.root() / "kd", student, teacher)?.teacher_grad(false))
}

fn report(out: &KdOutput<'_>) -> String {
    let losses: KdLosses = out.losses();
    format!("{losses} total={}", losses.total().double_value(&[]))
}

#[test]
fn generated_items_are_usable() {
    // Naming the generated items is enough here; the integration tests run them.
    let _ = (build, build_ens, report);
    assert_eq!(Kd::LABELS.len(), 6);
    assert_eq!(Ens::LABELS.len(), 3);
}
