//! A channel-pruned student's adapters through both front ends: building them from the pruning's
//! kept channels (carried by the pruned layers, saved and attached again), restoring a run, students
//! changed after pruning, weights that cannot say which channels were kept, and wrong inputs.

use distill::adapter::{conv2d_adapter, inverted_conv2d_adapter, Conv2DAdapter};
use distill::prelude::*;
use distill::prune::{l1_keep, prune_batch_norm, prune_conv2d, PruneRecord};
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
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.features.forward_t(xs, train).adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        self.classifier.forward(&h)
    }
}

const CLASSES: i64 = 4;

fn conv_cfg() -> nn::ConvConfig {
    nn::ConvConfig { padding: 1, bias: false, ..Default::default() }
}

/// A net of two 3×3 conv blocks of the given widths (input: 3 channels).
fn net(p: &nn::Path, widths: [i64; 2]) -> Net {
    let mut features = nn::Seq::new();
    for (i, (c_in, c_out)) in [(3, widths[0]), (widths[0], widths[1])].into_iter().enumerate() {
        features.push(Block {
            conv: nn::conv2d(p / "features" / i / "conv", c_in, c_out, 3, conv_cfg()),
            bn: nn::batch_norm2d(p / "features" / i / "bn", c_out, Default::default()),
        });
    }
    Net { features, classifier: nn::linear(p / "classifier", widths[1], CLASSES, Default::default()) }
}

/// The teacher's blocks pruned to `keep` filters each (the next block's inputs sliced to match).
fn pruned(p: &nn::Path, teacher: &Net, keep: i64) -> Result<Net, DistillError> {
    let mut features = nn::Seq::new();
    let mut in_keep: Option<Vec<i64>> = None;
    for (i, block) in teacher.features.iter().enumerate() {
        let out_keep = l1_keep(&block.conv.ws, keep)?;
        features.push(Block {
            conv: prune_conv2d(p / "features" / i / "conv", &block.conv, &out_keep, in_keep.as_deref())?,
            bn: prune_batch_norm(p / "features" / i / "bn", &block.bn, &out_keep)?,
        });
        in_keep = Some(out_keep);
    }
    let classifier = distill::prune::prune_linear(p / "classifier", &teacher.classifier, None, in_keep.as_deref())?;
    Ok(Net { features, classifier })
}

distill! {
    struct Kd for Net => Net {
        f0: student.features[0].conv => conv2d_adapter(teacher.features[0].conv) with Mse;
        f1: inverted_conv2d_adapter(student.features[1].conv) => teacher.features[1].conv with Mse;
        kd: student => teacher with KlDiv::new(4.0);
    }
}

/// Trains the student (and the adapters) a few steps, so that its weights are no longer a slice of
/// the teacher's.
fn train(vs: &VarStore, kd: &Kd<'_>, xs: &Tensor) -> Result<(), DistillError> {
    let mut sgd = nn::Sgd { momentum: 0.9, ..Default::default() }.build(vs, 0.1)?;
    for _ in 0..3 {
        let out = kd.forward_t(xs, true)?;
        sgd.backward_step(&out.loss());
    }
    Ok(())
}

fn input() -> Tensor {
    Tensor::randn([4, 3, 6, 6], (Kind::Float, Device::Cpu))
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("distill-{}-{name}", std::process::id()))
}

#[test]
fn a_trained_student_loaded_before_new_keeps_its_adapters() -> Result<(), DistillError> {
    tch::manual_seed(0);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = net(&teacher_vs.root(), [8, 8]);
    let xs = input();
    let file = temp_file("loaded-before-new.safetensors");

    // First run: prune, distill a few steps, save the student and the adapters.
    let vs = VarStore::new(Device::Cpu);
    let student = pruned(&vs.root().sub("student"), &teacher, 4)?;
    let kd = Kd::new(vs.root() / "kd", &student, &teacher)?;
    train(&vs, &kd, &xs)?;
    let trained = kd.forward_t(&xs, false)?.loss().double_value(&[]);
    vs.save(&file)?;

    // Restoring: the student from the pruning with its trained weights loaded, then `new()`, then the
    // adapters' trained weights. The trained weights no longer say which channels were kept; the
    // pruned layers do.
    let mut vs = VarStore::new(Device::Cpu);
    let student = pruned(&vs.root().sub("student"), &teacher, 4)?;
    vs.load(&file)?; // the student's variables only: the adapters do not exist yet
    let kd = Kd::new(vs.root() / "kd", &student, &teacher)?;
    vs.load(&file)?;
    let again = kd.forward_t(&xs, false)?.loss().double_value(&[]);
    assert!((again - trained).abs() <= 1e-6 * trained.abs(), "{again} vs {trained}");

    // The dynamic API builds the same adapter from the same layers.
    let adapter =
        conv2d_adapter(vs.root() / "dynamic", &teacher.features[0].conv, &student.features[0].conv).build()?;
    assert_eq!(adapter.mapping().output, l1_keep(&teacher.features[0].conv.ws, 4)?);
    std::fs::remove_file(&file).ok();
    Ok(())
}

/// The pruning records of a [`pruned`] net's convs, by path.
fn record_of(student: &Net) -> Result<PruneRecord, DistillError> {
    let mut record = PruneRecord::new();
    for (i, block) in student.features.iter().enumerate() {
        record.insert_conv(format!("features.{i}.conv"), &block.conv)?;
    }
    Ok(record)
}

/// Attaches `record` to a net built fresh (not by pruning).
fn attach(record: &PruneRecord, student: &mut Net) -> Result<(), DistillError> {
    for i in 0..student.features.len() {
        record.attach(&format!("features.{i}.conv"), &mut student.features[i].conv)?;
    }
    Ok(())
}

#[test]
fn a_student_built_fresh_gets_its_adapters_from_the_saved_record() -> Result<(), DistillError> {
    tch::manual_seed(2);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = net(&teacher_vs.root(), [8, 8]);
    let xs = input();
    let (weights, record_file) = (temp_file("fresh.safetensors"), temp_file("fresh.prune.safetensors"));

    // First run: prune, save the record, distill a few steps, save the student and adapters.
    let vs = VarStore::new(Device::Cpu);
    let student = pruned(&vs.root().sub("student"), &teacher, 3)?;
    record_of(&student)?.save(&record_file)?;
    let kd = Kd::new(vs.root() / "kd", &student, &teacher)?;
    train(&vs, &kd, &xs)?;
    let trained = kd.forward_t(&xs, false)?.loss().double_value(&[]);
    vs.save(&weights)?;

    // Restoring without the teacher's help: the architecture built fresh (random weights), so the
    // weights say nothing about the pruning…
    let mut vs = VarStore::new(Device::Cpu);
    let mut student = net(&vs.root().sub("student"), [3, 3]);
    let err = Kd::new(vs.root() / "kd", &student, &teacher).err().expect("no channel mapping");
    assert!(err.to_string().contains("PruneRecord"), "{err}");
    // … the saved record attached, then the natural order: `new()`, then `load`.
    attach(&PruneRecord::load(&record_file)?, &mut student)?;
    let kd = Kd::new(vs.root() / "kd", &student, &teacher)?;
    vs.load(&weights)?;
    let again = kd.forward_t(&xs, false)?.loss().double_value(&[]);
    assert!((again - trained).abs() <= 1e-6 * trained.abs(), "{again} vs {trained}");

    // The dynamic API, with the same record: adapters from the layers or from the record alone.
    let mapping_vs = VarStore::new(Device::Cpu);
    let record = PruneRecord::load(&record_file)?;
    let mut mapping = Mapping::new(&student, &teacher);
    let narrow =
        conv2d_adapter(mapping_vs.root() / "f0", &teacher.features[0].conv, &student.features[0].conv).build()?;
    let widen = inverted_conv2d_adapter(mapping_vs.root() / "f1", &teacher.features[1].conv, &student.features[1].conv)
        .build()?;
    let kept = record.get("features.0.conv").expect("recorded");
    let from_record = Conv2DAdapter::from_kept(mapping_vs.root() / "f0_record", kept)?;
    assert!(narrow.weight().equal(from_record.weight()));
    mapping.add("features.0.conv", "features.0.conv", 0)?;
    mapping.add(&student.features[1].conv, &teacher.features[1].conv, 1)?;
    let dm = distill::distill(&student, &teacher, mapping);
    let out = dm.forward_t(&xs, false)?;
    let pairs: Vec<_> = out.pairs().collect();
    let (s0, t0, _) = &pairs[0];
    assert!(s0.equal(&student.features[0].conv.forward(&xs)));
    assert!(narrow.f_adapt(t0, false)?.equal(&t0.index_select(1, &Tensor::from_slice(kept.output()))));
    let (s1, t1, _) = &pairs[1];
    assert_eq!(widen.f_adapt(s1, false)?.size(), t1.size());
    std::fs::remove_file(&weights).ok();
    std::fs::remove_file(&record_file).ok();
    Ok(())
}

distill! {
    struct OnInput for Net => Net {
        f1: student.features[1].conv => conv2d_adapter(teacher.features[1].conv) with Mse, input;
    }
}

#[test]
fn an_adapter_given_the_wrong_tensor_is_an_error_naming_the_pair() -> Result<(), DistillError> {
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let teacher = net(&vs.root().sub("teacher"), [8, 16]);
    let student = pruned(&vs.root().sub("student"), &teacher, 4)?;
    // The adapter narrows the conv's 16 output channels; `input` hands it the conv's 8 input channels.
    let kd = OnInput::new(vs.root() / "kd", &student, &teacher)?;
    let err = kd.forward_t(&input(), true).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("`f1`") && message.contains("[N, 16, H, W]"), "{message}");
    Ok(())
}
