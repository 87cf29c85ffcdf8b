//! The README's `distill!` example, for real: a net and its channel-pruned copy, the `distill!` block as
//! written there (widths chosen so that every pair is comparable), one training step — and the
//! pairs equal, tensor for tensor, those of the dynamic `Mapping` for the same mapping.

use distill::prelude::*;
use distill::prune::{l1_keep, prune_batch_norm, prune_conv2d};
use nn::{Module, ModuleT, OptimizerConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

#[derive(Debug, Distillable)]
struct Block {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(xs), train).relu()
    }
}

#[derive(Debug, Distillable)]
struct Net {
    features: nn::Seq<Block>,
    classifier: nn::Linear,
    #[distill(skip)]
    width: i64,
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.features.forward_t(xs, train).adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        self.classifier.forward(&h)
    }
}

const CLASSES: i64 = 5;

/// The teacher: three 3×3 conv blocks of 16 channels.
fn teacher(p: nn::Path) -> Net {
    let cfg = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
    let features = (0..3)
        .map(|i| Block {
            conv: nn::conv2d(&p / "features" / i / "conv", if i == 0 { 3 } else { 16 }, 16, 3, cfg),
            bn: nn::batch_norm2d(&p / "features" / i / "bn", 16, Default::default()),
        })
        .collect();
    Net { features, classifier: nn::linear(&p / "classifier", 16, CLASSES, Default::default()), width: 16 }
}

/// The student: blocks 0 and 1 pruned to their 8 filters of largest L1 norm (inputs of the next
/// block sliced to match); block 2 keeps its 16 outputs, so the classifier is unchanged.
fn pruned(p: nn::Path, teacher: &Net) -> Result<Net, DistillError> {
    let mut features = nn::Seq::new();
    let mut in_keep: Option<Vec<i64>> = None;
    for (i, block) in teacher.features.iter().enumerate() {
        let out_keep = if i < 2 { l1_keep(&block.conv.ws, 8)? } else { (0..16).collect() };
        let path = &p / "features" / i;
        features.push(Block {
            conv: prune_conv2d(&path / "conv", &block.conv, &out_keep, in_keep.as_deref())?,
            bn: prune_batch_norm(&path / "bn", &block.bn, &out_keep)?,
        });
        in_keep = Some(out_keep);
    }
    let classifier = distill::prune::prune_linear(&p / "classifier", &teacher.classifier, None, None)?;
    Ok(Net { features, classifier, width: 8 })
}

distill! {
    /// Distills the 16-channel net into its pruned 8-channel copy.
    pub struct PrunedKd for Net => Net {
        f0:     student.features[0].conv => conv2d_adapter(teacher.features[0].conv) with Mse;
        f1:     inverted_conv2d_adapter(student.features[1].conv) => teacher.features[1].conv with L1;
        at2:    student.features[2] => teacher.features[2] with AttentionTransfer::default() * 100.0;
        "features.2.bn" => "features.2.bn" with Mse;      // ENOT-style names, also checked
        logits: student => teacher with KlDiv::new(4.0);  // bare root = the model's own output
    }
}

fn models(vs: &VarStore) -> Result<(Net, Net), DistillError> {
    let teacher = teacher(vs.root() / "teacher");
    // Train-mode BN statistics differ from eval ones: make the teacher's running stats non-trivial.
    tch::no_grad(|| {
        for _ in 0..3 {
            let _ = teacher.forward_t(&Tensor::randn([8, 3, 12, 12], (Kind::Float, Device::Cpu)), true);
        }
    });
    let student = pruned(vs.root() / "student", &teacher)?;
    Ok((student, teacher))
}

#[test]
fn readme_example_compiles_runs_and_trains() -> Result<(), DistillError> {
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&vs)?;
    assert_eq!(student.width, 8);
    let kd = PrunedKd::new(&vs.root() / "kd", &student, &teacher)?; // builds adapters, checks indices
    assert_eq!(PrunedKd::LABELS, ["f0", "f1", "at2", "features_2_bn", "logits"]);
    assert!(!kd.teacher_mode().grad && !kd.teacher_mode().train);

    // The adapters' variables live under `kd/<label>`, so an optimizer over `vs` trains them.
    let names: Vec<String> = vs.variables().into_keys().collect();
    assert!(names.iter().any(|n| n.starts_with("kd.f0.")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("kd.f1.")), "{names:?}");

    let xs = Tensor::randn([6, 3, 12, 12], (Kind::Float, Device::Cpu));
    let ys = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 0]);
    let out = kd.forward_t(&xs, true)?; // teacher: no-grad, eval by default
    assert_eq!(out.f0.student.size(), [6, 8, 12, 12]);
    assert_eq!(out.f0.teacher.size(), [6, 8, 12, 12], "conv2d_adapter narrows the teacher to 8 channels");
    assert_eq!(out.f1.student.size(), [6, 16, 12, 12], "inverted adapter widens the student to 16");
    assert_eq!(out.logits.student.size(), [6, CLASSES]);
    assert!(!out.at2.teacher.requires_grad(), "the teacher runs under no-grad");
    assert!(out.f0.teacher.requires_grad(), "but its adapter is trained");

    let loss = out.student_output.cross_entropy_for_logits(&ys) + out.loss(); // typed aggregation
    let losses = out.losses();
    let text = losses.to_string(); // f0=0.12 f1=0.40 … named terms
    for label in PrunedKd::LABELS {
        assert!(text.contains(&format!("{label}=")), "{text}");
    }
    let sum: f64 = losses.iter().map(|(_, l)| l.double_value(&[])).sum();
    assert!((losses.total().double_value(&[]) - sum).abs() < 1e-6 * sum.abs().max(1.0));
    assert!(loss.double_value(&[]).is_finite());

    // One SGD step moves the student and the adapters, not the teacher. (`f0` starts at zero loss:
    // the pruned conv equals the kept teacher channels exactly, so `f1` is the one to watch.)
    let before_teacher = teacher.features[0].conv.ws.copy();
    let before_adapter = adapter_weight(&vs, "kd.f1.");
    let mut opt = nn::Sgd::default().build(&vs, 0.1).map_err(DistillError::Torch)?;
    opt.backward_step(&loss);
    assert!(teacher.features[0].conv.ws.equal(&before_teacher), "the teacher ran without gradient");
    assert!(!adapter_weight(&vs, "kd.f1.").equal(&before_adapter), "the adapter trains");
    Ok(())
}

fn adapter_weight(vs: &VarStore, prefix: &str) -> Tensor {
    let variables = vs.variables();
    let (_, weight) = variables.iter().find(|(name, _)| name.starts_with(prefix)).expect("adapter variable");
    weight.copy()
}

/// The same pairs through the dynamic `Mapping`, adapters built by the same constructors from the
/// same weights: every tensor is equal.
#[test]
fn pairs_equal_the_dynamic_mapping() -> Result<(), DistillError> {
    tch::manual_seed(2);
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&vs)?;
    let kd = PrunedKd::new(&vs.root() / "kd", &student, &teacher)?;

    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add(&student.features[0].conv, "features.0.conv", "f0")?;
    mapping.add("features.1.conv", &teacher.features[1].conv, "f1")?;
    mapping.add(student.features.slot(2), teacher.features.slot(2), "at2")?;
    mapping.add("features.2.bn", "features.2.bn", "features_2_bn")?;
    mapping.add("", "", "logits")?;
    let dm = distill(&student, &teacher, mapping);

    let f0 =
        conv2d_adapter(vs.root() / "check" / "f0", &teacher.features[0].conv, &student.features[0].conv).build()?;
    let f1 = inverted_conv2d_adapter(vs.root() / "check" / "f1", &teacher.features[1].conv, &student.features[1].conv)
        .build()?;

    let xs = Tensor::randn([4, 3, 12, 12], (Kind::Float, Device::Cpu));
    let typed = kd.forward_t(&xs, true)?;
    let dynamic = dm.forward_t(&xs, true)?;
    assert!(typed.student_output.equal(&dynamic.student_output));
    assert!(typed.teacher_output.equal(&dynamic.teacher_output));

    let pairs: Vec<_> = dynamic.pairs().collect();
    assert_eq!(pairs.len(), typed.pairs().len());
    for (pair, (s, t, label)) in typed.pairs().into_iter().zip(&pairs) {
        let label: &str = label;
        assert_eq!(pair.label(), label, "declaration order");
        let (expected_s, expected_t) = match label {
            "f0" => (s.shallow_clone(), f0.forward(t)),
            "f1" => (f1.forward(s), t.shallow_clone()),
            _ => (s.shallow_clone(), t.shallow_clone()),
        };
        assert!(pair.student.equal(&expected_s), "student tensor of `{label}`");
        assert!(pair.teacher.equal(&expected_t), "teacher tensor of `{label}`");
    }

    // The selection adapter is exact: the teacher's kept channels.
    let kept = Tensor::from_slice(&l1_keep(&teacher.features[0].conv.ws, 8)?);
    assert!(typed.f0.teacher.equal(&pairs[0].1.index_select(1, &kept)));
    // And the losses are the criteria's on those tensors.
    let expected = Mse.loss(&typed.features_2_bn.student, &typed.features_2_bn.teacher);
    assert!(typed.losses().features_2_bn.equal(&expected));
    let expected = KlDiv::new(4.0).loss(&dynamic.student_output, &dynamic.teacher_output);
    assert!(typed.logits.loss().allclose(&expected, 1e-6, 1e-7, false));
    Ok(())
}
