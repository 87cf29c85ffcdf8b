//! Valid inputs of both macros: the unit tests expand them, the property test mutates them.

pub(crate) const DSL: &[&str] = &[
    r#"
    /// Distills the 64-channel net into its pruned 32-channel copy.
    pub struct PrunedKd for Net => Net {
        f0:     student.features[0].conv => conv2d_adapter(teacher.features[0].conv).tolerance(Tolerance::new(1e-4, 1e-3)) with Mse;
        f1:     inverted_conv2d_adapter(student.features[1].conv) => teacher.features[1].conv with L1;
        at2:    student.features[2] => teacher.features[2] with AttentionTransfer::default() * 100.0;
        "features.2.bn" => "features.2.bn" with Mse;
        logits: student => teacher with KlDiv::new(4.0);
    }
    "#,
    r#"
    #[derive(Debug)]
    pub(crate) struct Kd for model::Net<Conv2D> => model::Net<Conv2D> {
        student.pair.0.1 => teacher.pair.0.1 with |s, t| (s - t).abs().mean(None), all_calls;
        hidden: student.body[LAST].fc => teacher.body[3].fc with Mse * 2.0, input(student), all_calls(teacher);
        student => teacher with Mse, input
    }
    "#,
    r#"
    struct Both for A => B {
        /// a doc
        x: adapters::learned(student.a) => <X as Y>::make(teacher.b) with Cosine;
        student[0] => teacher[0] with Mse;
        r#type: student.r#type => teacher.r#type with crate::losses::Mine { beta: 1.0 };
    }
    "#,
    r#"
    /// Two named teachers.
    pub struct Ens for Net => (big: BigNet, wide: model::WideNet<Conv2D>,) {
        f1: student.features[1] => big.features[1] with Mse;
        f0: student.features[0].conv => conv2d_adapter(wide.features[0].conv) with Mse, input(teacher);
        "features.2.bn" => big["features.2.bn"] with Mse;
        kd: student => wide with KlDiv::new(4.0);
        l3: student.layer3 => r#wide["layer3"] with Mse;
    }
    "#,
];

pub(crate) const DERIVE: &[&str] = &[
    r#"
    struct Net {
        features: nn::Seq<Block>,
        #[distill(rename = "fc")]
        classifier: nn::Linear,
        #[distill(skip)]
        width: i64,
    }
    "#,
    r#"
    struct Wrapper<'a, M: Clone, const N: usize> where M: Send {
        inner: M,
        array: [nn::Seq<M>; N],
        plain: nn::Linear,
        boxed: Box<dyn Layer>,
        #[distill(skip)]
        marker: std::marker::PhantomData<&'a ()>,
    }
    "#,
    r#"
    enum Head {
        Linear(nn::Linear, #[distill(skip)] f64),
        Deep { first: nn::Linear, #[distill(rename = "last")] second: nn::Linear },
        Nothing,
    }
    "#,
    "struct Unit;",
    "struct Pair(nn::Linear, nn::Linear);",
    "enum Never {}",
];
