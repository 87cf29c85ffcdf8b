//! Shapes checked before training: a dry run on a sample batch checks every pair (both front ends),
//! names the adapters that would fit a width mismatch, and sizes fitted adapters on any endpoint.

use distill::nn::{self, Module, ModuleT, VarStore};
use distill::prelude::*;
use distill::Side;
use tch::{Device, Kind, Tensor};

/// A user block (no `distill::nn` layer of its own at the top): Linear → LayerNorm → GELU.
#[derive(Debug, Distillable)]
struct Block {
    linear: nn::Linear,
    norm: nn::LayerNorm,
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.norm.forward(&self.linear.forward(xs)).gelu("none")
    }
}

/// A sequence classifier: embedding → blocks → mean over the sequence → head.
#[derive(Debug, Distillable)]
struct Classifier {
    embed: nn::Embedding,
    blocks: nn::Seq<Block>,
    head: nn::Linear,
}

impl Classifier {
    fn new(p: nn::Path, width: i64) -> Classifier {
        let blocks = (0..2)
            .map(|i| Block {
                linear: nn::linear(&p / "blocks" / i / "linear", width, width, Default::default()),
                norm: nn::layer_norm(&p / "blocks" / i / "norm", vec![width], Default::default()),
            })
            .collect();
        Classifier {
            embed: nn::embedding(&p / "embed", 50, width, Default::default()),
            blocks,
            head: nn::linear(&p / "head", width, 4, Default::default()),
        }
    }
}

impl ModuleT for Classifier {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.blocks.forward_t(&self.embed.forward(xs), train);
        self.head.forward(&h.mean_dim(1, false, Kind::Float))
    }
}

fn tokens() -> Tensor {
    tch::manual_seed(1);
    Tensor::randint(50, [8, 6], (Kind::Int64, Device::Cpu))
}

distill! {
    /// Block outputs of different widths, with no adapter: the dry run says which adapter fits.
    struct Unadapted for Classifier => Classifier {
        b0: student.blocks[0] => teacher.blocks[0] with Mse;
        b1: student.blocks[1] => teacher.blocks[1] with Mse;
        logits: student => teacher with KlDiv::new(2.0);
    }
}

distill! {
    /// The same pairs through fitted adapters on the teacher's (user-struct) blocks.
    struct Fitted for Classifier => Classifier {
        b0: student.blocks[0] => fitted_linear_adapter(teacher.blocks[0]) with Mse;
        b1: fitted_linear_adapter(student.blocks[1]) => teacher.blocks[1] with Mse;
        logits: student => teacher with KlDiv::new(2.0);
    }
}

fn models(vs: &VarStore) -> (Classifier, Classifier) {
    (Classifier::new(vs.root() / "student", 16), Classifier::new(vs.root() / "teacher", 32))
}

#[test]
fn dry_run_reports_every_mismatch_with_the_adapter_that_fits() {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&vs);
    let kd = Unadapted::new(vs.root() / "kd", &student, &teacher).unwrap();
    let error = kd.dry_run(&tokens()).unwrap_err();
    let DistillError::DryRun { problems } = &error else { panic!("{error}") };
    assert_eq!(problems.len(), 2, "{error}");
    let message = error.to_string();
    assert!(
        message.contains(
            "pair `b0`: the criterion cannot compare the student's shape [8, 6, 16] with the teacher's [8, 6, 32]"
        ),
        "{message}"
    );
    assert!(message.contains("pair `b1`"), "{message}");
    assert!(message.contains("wrapped in `fitted_linear_adapter(…)`"), "{message}");
    assert!(message.contains("`linear_adapter(path, 32, 16)`"), "{message}");
}

#[test]
fn dry_run_fits_adapters_on_user_blocks_and_leaves_the_models_unchanged() {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&vs);
    let before = vs.variables().len();
    let kd = Fitted::new(vs.root() / "kd", &student, &teacher).unwrap();
    let xs = tokens();

    // Before the dry run a fitted adapter is an error, never a silent skip.
    let error = kd.forward_t(&xs, true).unwrap_err();
    assert!(error.to_string().contains("not fitted yet"), "{error}");

    let report = kd.dry_run(&xs).unwrap();
    assert_eq!(report.pairs.len(), 3);
    assert_eq!((report.pairs[0].student.clone(), report.pairs[0].teacher.clone()), (vec![8, 6, 16], vec![8, 6, 16]));
    assert_eq!((report.pairs[1].student.clone(), report.pairs[1].teacher.clone()), (vec![8, 6, 32], vec![8, 6, 32]));
    assert_eq!(report.to_string().lines().count(), 3);
    // Teacher side 32 → 16 (weight + bias), student side 16 → 32 (weight + bias), under the kd path.
    let variables = vs.variables();
    assert_eq!(variables.len(), before + 4);
    assert_eq!(variables["kd.b0.weight"].size(), [16, 32]);
    assert_eq!(variables["kd.b1.weight"].size(), [32, 16]);
    // A second dry run fits nothing new.
    kd.dry_run(&xs).unwrap();
    assert_eq!(vs.variables().len(), before + 4);

    // The adapter is what the pair uses, and it is trained with the student.
    let out = kd.forward_t(&xs, true).unwrap();
    let by_hand = teacher.blocks[0]
        .forward_t(&teacher.embed.forward(&xs), false)
        .linear(&variables["kd.b0.weight"], Some(&variables["kd.b0.bias"]));
    assert_eq!(f64::try_from((&out.b0.teacher - &by_hand).abs().max()).unwrap(), 0.0);
    out.loss().backward();
    assert!(variables["kd.b1.weight"].grad().defined());
}

#[test]
fn fitted_adapters_save_and_restore_after_the_dry_run() {
    let dir = std::env::temp_dir().join(format!("distill-fitted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("run.safetensors");
    let xs = tokens();
    let trained = {
        let vs = VarStore::new(Device::Cpu);
        let (student, teacher) = models(&vs);
        let kd = Fitted::new(vs.root() / "kd", &student, &teacher).unwrap();
        kd.dry_run(&xs).unwrap();
        vs.save(&file).unwrap();
        f64::try_from(kd.forward_t(&xs, false).unwrap().loss()).unwrap()
    };
    // Build, new, dry run, load: the same losses.
    let mut vs = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&vs);
    let kd = Fitted::new(vs.root() / "kd", &student, &teacher).unwrap();
    kd.dry_run(&xs).unwrap();
    vs.load(&file).unwrap();
    let restored = f64::try_from(kd.forward_t(&xs, false).unwrap().loss()).unwrap();
    assert_eq!(restored, trained);
    drop(kd);
    // Loading before the dry run meets the empty placeholders: an error, not a silent skip.
    let mut early = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&early);
    let kd = Fitted::new(early.root() / "kd", &student, &teacher).unwrap();
    drop(kd);
    assert!(early.load(&file).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dry_run_of_a_mapping_reports_shapes_and_checks_criteria() {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&vs);
    let pairs = || {
        let mut mapping = Mapping::new(&student, &teacher);
        mapping.add("blocks.0", "blocks.0", Mse).unwrap();
        mapping.add(student.blocks.slot(1), "blocks.1", Mse).unwrap();
        mapping
    };
    // The payloads are the user's: the dry run reports the shapes.
    let model = distill(&student, &teacher, pairs());
    let report = model.dry_run(&tokens()).unwrap();
    assert_eq!(report.pairs[0].label, "blocks.0 => blocks.0");
    assert_eq!(report.pairs[1].teacher, [8, 6, 32]);
    // Criteria as payloads make a `Distillation`, whose dry run also checks every pair.
    let error = Distillation::from_mapping(&student, pairs()).unwrap().dry_run(&tokens()).unwrap_err();
    let DistillError::DryRun { problems } = &error else { panic!("{error}") };
    assert_eq!(problems.len(), 2);
    assert!(error.to_string().contains("`linear_adapter(path, 32, 16)`"), "{error}");
}

/// What a user's `fn main() -> Result<(), Box<dyn Error>>` runs: a dry run that finds mismatches.
fn main_with_a_shape_mismatch() -> Result<(), Box<dyn std::error::Error>> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&vs);
    let kd = Unadapted::new(vs.root() / "kd", &student, &teacher)?;
    kd.dry_run(&tokens())?;
    Ok(())
}

#[test]
fn main_returning_the_error_prints_its_message() {
    const CHILD: &str = "DISTILL_TEST_MAIN_ERROR_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // What the standard library does with the value `main` returns.
        use std::process::Termination;
        let result = main_with_a_shape_mismatch();
        let failed = result.is_err();
        result.report();
        std::process::exit(i32::from(failed));
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "main_returning_the_error_prints_its_message", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child's main returned an error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = main_with_a_shape_mismatch().unwrap_err().to_string();
    assert!(stderr.contains(&format!("Error: {expected}")), "stderr:\n{stderr}");
    assert!(
        stderr.contains(
            "pair `b0`: the criterion cannot compare the student's shape [8, 6, 16] with the teacher's [8, 6, 32]"
        ),
        "stderr:\n{stderr}"
    );
    for structure in ["DryRun {", "problems:", "ShapeMismatch"] {
        assert!(!stderr.contains(structure), "`{structure}` in stderr:\n{stderr}");
    }
}

/// A conv net with batch norm, whose running statistics move in every training-mode forward.
#[derive(Debug, Distillable)]
struct Normed {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl Normed {
    fn new(p: nn::Path) -> Normed {
        Normed {
            conv: nn::conv2d(&p / "conv", 3, 4, 3, Default::default()),
            bn: nn::batch_norm2d(&p / "bn", 4, Default::default()),
        }
    }

    fn running_mean(&self) -> Tensor {
        self.bn.running_mean.copy()
    }
}

impl ModuleT for Normed {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(xs), train)
    }
}

distill! {
    /// The batch-normed outputs of a teacher that trains with its student.
    struct NormedKd for Normed => Normed {
        bn: student.bn => teacher.bn with Mse;
    }
}

/// A dry run runs every model in evaluation mode, a teacher set to train too: no running statistic
/// moves, in any front end. (A teacher in training mode once ran so in the dry run too.)
#[test]
fn dry_run_moves_no_running_statistic_of_a_teacher_set_to_train() {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (Normed::new(vs.root() / "s"), Normed::new(vs.root() / "t"));
    let xs = Tensor::randn([4, 3, 6, 6], (Kind::Float, Device::Cpu)) * 3.0 + 2.0;
    let before = (student.running_mean(), teacher.running_mean());
    let unmoved = |what: &str| {
        assert!(student.running_mean().equal(&before.0), "{what}: the student's statistics moved");
        assert!(teacher.running_mean().equal(&before.1), "{what}: the teacher's statistics moved");
    };
    let training = TeacherMode { grad: false, train: true };

    let kd = NormedKd::new(vs.root() / "kd", &student, &teacher).unwrap().teacher_train(true);
    kd.dry_run(&xs).unwrap();
    unmoved("distill!");

    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("bn", "bn", Mse).unwrap();
    let mut distillation = Distillation::from_mapping(&student, mapping).unwrap();
    distillation.set_mode(training);
    distillation.dry_run(&xs).unwrap();
    unmoved("Distillation::from_mapping");

    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("bn", "bn", ()).unwrap();
    let model = distill(&student, &teacher, mapping).teacher_train(true);
    model.dry_run(&xs).unwrap();
    unmoved("DistillModel");

    // The mode holds for training: the next forward moves the teacher's statistics.
    model.forward_t(&xs, false).unwrap();
    assert!(!teacher.running_mean().equal(&before.1), "a teacher set to train runs so in the forward");
}

/// tch's forward can only panic (a float batch into an embedding, an id past its vocabulary): the
/// dry run, whose job is to report what would stop training, reports it as an error naming the model,
/// and leaves the thread as it was (gradients on, nothing armed: the next dry run works).
#[test]
fn a_forward_that_panics_in_the_dry_run_is_an_error_naming_the_model() {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = models(&vs);
    let kd = Unadapted::new(vs.root() / "kd", &student, &teacher).unwrap();
    let floats = Tensor::randn([8, 6], (Kind::Float, Device::Cpu));
    let error = kd.dry_run(&floats).unwrap_err();
    assert!(
        matches!(
            &error,
            DistillError::Capture(distill::error::CaptureError::ForwardPanicked { side: Side::Teacher, .. })
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.starts_with("the teacher's forward panicked during the dry run: "), "{message}");
    assert!(message.contains("Long") && !message.contains('\n'), "{message}");
    // Autograd is on again: an operation on a tensor that requires grad records its graph.
    let leaf = Tensor::ones([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    assert!((&leaf * 2.0).requires_grad());
    assert!(kd.dry_run(&tokens()).is_err_and(|e| matches!(e, DistillError::DryRun { .. })));

    // A student with a smaller vocabulary than the ids: the teacher runs, the student panics.
    let small = Classifier { embed: nn::embedding(vs.root() / "small", 10, 16, Default::default()), ..models(&vs).0 };
    let kd = Unadapted::new(vs.root() / "kd2", &small, &teacher).unwrap();
    let error = kd.dry_run(&tokens()).unwrap_err();
    assert!(error.to_string().starts_with("the student's forward panicked during the dry run: "), "{error}");
}
