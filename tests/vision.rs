//! `distill::vision` against torchvision 0.28: parameter names, module paths, and outputs in eval and
//! train mode (running statistics included), from the vectors of scripts/gen_vision_reference.py.

mod common;
mod vision_weights;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use common::bounds::{self, compare_tensors, Comparison, U_F32};
use distill::checkpoint::CheckpointError;
use distill::nn::{self, ModuleT, VarStore};
use distill::vision::{self, MobileNetV2Config, ResNetConfig, VisionError};
use distill::{DistillError, Distillable};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision")
}

/// The description of a variant in models.json.
fn variant(name: &str) -> Value {
    let text = std::fs::read_to_string(data_dir().join("models.json")).expect("tests/data/vision/models.json");
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    doc["models"][name].clone()
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(data_dir().join(format!("{name}.safetensors")))
        .expect("reference file")
        .into_iter()
        .collect()
}

fn shape(value: &Value) -> Vec<i64> {
    value.as_array().expect("a shape").iter().map(|d| d.as_i64().expect("a dimension")).collect()
}

/// A model of either family, as its variant's configuration describes it.
enum Model {
    Basic(vision::ResNet<vision::BasicBlock>),
    Bottleneck(vision::ResNet<vision::Bottleneck>),
    MobileNet(vision::MobileNetV2),
}

impl Model {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Model::Basic(m) => m.forward_t(xs, train),
            Model::Bottleneck(m) => m.forward_t(xs, train),
            Model::MobileNet(m) => m.forward_t(xs, train),
        }
    }

    /// The pooled features the classifier reads, and the classifier.
    fn features_t(&self, xs: &Tensor, train: bool) -> (Tensor, &nn::Linear) {
        fn resnet<B: vision::ResNetBlock>(m: &vision::ResNet<B>, xs: &Tensor, train: bool) -> Tensor {
            let mut xs = xs.apply(&m.conv1).apply_t(&m.bn1, train).apply(&m.relu);
            if let Some(maxpool) = &m.maxpool {
                xs = xs.apply(maxpool);
            }
            for layer in [&m.layer1, &m.layer2, &m.layer3, &m.layer4] {
                xs = xs.apply_t(layer, train);
            }
            xs.apply(&m.avgpool).flatten(1, -1)
        }
        match self {
            Model::Basic(m) => (resnet(m, xs, train), &m.fc),
            Model::Bottleneck(m) => (resnet(m, xs, train), &m.fc),
            Model::MobileNet(m) => {
                let features = xs.apply_t(&m.features, train).adaptive_avg_pool2d([1, 1]).flatten(1, -1);
                (features, &m.classifier.1)
            }
        }
    }

    fn named_modules(&self) -> Vec<distill::NamedModule> {
        match self {
            Model::Basic(m) => m.named_modules(),
            Model::Bottleneck(m) => m.named_modules(),
            Model::MobileNet(m) => m.named_modules(),
        }
    }
}

fn build(vs: &VarStore, config: &Value) -> Model {
    let num_classes = config["num_classes"].as_i64().unwrap();
    let in_channels = config.get("in_channels").and_then(Value::as_i64).unwrap_or(3);
    let small_input = config.get("small_input").and_then(Value::as_bool).unwrap_or(false);
    let resnet = ResNetConfig { in_channels, small_input, ..Default::default() };
    match config["arch"].as_str().unwrap() {
        "resnet18" => Model::Basic(vision::resnet18_with(vs.root(), num_classes, resnet).unwrap()),
        "resnet34" => Model::Basic(vision::resnet34_with(vs.root(), num_classes, resnet).unwrap()),
        "resnet50" => Model::Bottleneck(vision::resnet50_with(vs.root(), num_classes, resnet).unwrap()),
        "mobilenet_v2" => {
            let width_mult = config.get("width_mult").and_then(Value::as_f64).unwrap_or(1.0);
            // The reference uses dropout 0 so that train mode is deterministic.
            let config = MobileNetV2Config { in_channels, small_input, width_mult, dropout: 0.0, ..Default::default() };
            Model::MobileNet(vision::mobilenet_v2_with(vs.root(), num_classes, config).unwrap())
        }
        other => panic!("unknown arch {other}"),
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

/// The number of roundings a value passes through on its way to the logits, as a multiple of `u`
/// relative to the scale of what each layer sums. Every inner-product layer (each conv, the
/// classifier) sums its fan-in `k` in blocks, `⌈log₂ k⌉ + 1` roundings ([`bounds::sum_depth`]),
/// then an elementwise chain of at most 6 (bias or batch norm's subtract, divide, square root,
/// scale and shift; the residual add); in train mode each batch norm also reduces over at most the
/// input's `N·H·W` positions twice (mean, variance) and squares. Counted over every layer of the
/// network, a parallel `downsample` included, so at least the longest path. The batch norms keep
/// each layer's output at the scale of what it sums, so these relative errors add up through the
/// depth rather than grow.
fn rounding_depth(vs: &VarStore, positions: usize, train: bool) -> f64 {
    let mut depth = 0.0;
    for (name, var) in vs.variables() {
        let size = var.size();
        if name.ends_with("weight") && size.len() >= 2 {
            let fan_in = size[1..].iter().product::<i64>() as usize;
            depth += bounds::sum_depth(fan_in) + 6.0;
        } else if train && name.ends_with("running_var") {
            depth += 2.0 * bounds::sum_depth(positions) + 2.0;
        }
    }
    depth
}

/// How many standard deviations of the features' rounding the classifier's sum may reach (below).
const LAMBDA: f64 = 6.0;

/// The bound on one f32 implementation's logits against the exact ones: `λ · u · D · Sⱼ` with `D`
/// the [`rounding_depth`] and `Sⱼ = ‖(Wⱼᵢ hᵢ)ᵢ, bⱼ‖₂` from the exact (f64) features `h`. Each
/// feature carries a relative error of at most `u · D`; the classifier sums `k` of them (2048 for
/// ResNet-50) computed by separate paths, whose rounding errors have independent signs, so the
/// sum's error is at most `λ` times their root-sum-square with probability `1 − 2e^(−λ²/2)`
/// (Hoeffding; the probabilistic rounding-error analysis of Higham and Mary, 2019), `3·10⁻⁸` at
/// `λ = 6`. The worst case `Σ|Wⱼᵢhᵢ|` would be `√k` times larger and could not tell a wrong batch
/// norm ε from rounding. Not the logits' size: a logit near 0 sums terms as large.
fn logits_bound(depth: f64, features: &Tensor, fc: &nn::Linear) -> f64 {
    let w = fc.ws.to_kind(Kind::Double);
    let b = fc.bs.as_ref().expect("the classifier has a bias").to_kind(Kind::Double);
    let squares = features.to_kind(Kind::Double).square().matmul(&w.square().tr()) + b.square();
    LAMBDA * U_F32 * depth * bounds::abs_max(&squares).sqrt()
}

/// Asserts `actual` is within `bound` of `expected` element by element and returns the comparison.
fn assert_close(actual: &Tensor, expected: &Tensor, bound: f64, what: &str) -> Comparison {
    let c = compare_tensors(actual, expected, bound);
    assert!(c.passes(), "{what}: {c}");
    c
}

/// The variant's model in f32 and in f64, both filled by the formula, the input, and its spec.
struct Pair {
    vs: VarStore,
    model: Model,
    vs64: VarStore,
    model64: Model,
    xs: Tensor,
}

fn pair(name: &str) -> Pair {
    let spec = variant(name);
    let vs = VarStore::new(Device::Cpu);
    let model = build(&vs, &spec["config"]);
    let sum = vision_weights::fill(&vs);
    let expected_sum = spec["param_sum"].as_f64().unwrap();
    assert!((sum - expected_sum).abs() <= 1e-9 * expected_sum.abs(), "{name}: parameter sum {sum} != {expected_sum}");
    let mut vs64 = VarStore::new(Device::Cpu);
    let model64 = build(&vs64, &spec["config"]);
    vision_weights::fill(&vs64);
    vs64.double();
    let xs = vision_weights::filled("input", &shape(&spec["input"]));
    Pair { vs, model, vs64, model64, xs }
}

/// The bound between our eval logits and torchvision's for the variant (twice [`logits_bound`]).
fn eval_bound(name: &str) -> f64 {
    let Pair { vs, model64, xs, .. } = pair(name);
    let positions = (xs.numel() / xs.size()[1] as usize).max(1);
    let (features, fc) = tch::no_grad(|| model64.features_t(&xs.to_kind(Kind::Double), false));
    2.0 * logits_bound(rounding_depth(&vs, positions, false), &features, fc)
}

/// Each implementation's f32 logits are within `u · D · S` of the exact ones, so ours and
/// torchvision's are within twice that of each other; our f64 run stands in for the exact values
/// (its own error is 2⁻²⁹ times smaller). Checks all three, and returns the worst ratio.
fn check_logits(ours: &Tensor, exact: &Tensor, theirs: &Tensor, bound: f64, what: &str) -> f64 {
    let a = assert_close(ours, exact, bound, &format!("{what}: Rust f32 vs Rust f64"));
    let b = assert_close(theirs, exact, bound, &format!("{what}: torchvision f32 vs Rust f64"));
    let c = assert_close(ours, theirs, 2.0 * bound, &format!("{what}: Rust f32 vs torchvision f32"));
    bounds::record(what, &c);
    a.ratio.max(b.ratio).max(c.ratio)
}

/// A running statistic's bound after one train forward, `new = 0.9 old + 0.1 batch`: the batch
/// mean of `x` is rounded relative to the mean of `|x|` ≤ √E[x²] = √(var + mean²), the variance
/// relative to E[x²] (twice: the square and the sum), each `u · D` deep; the old value once more.
fn stats_bound(depth: f64, name: &str, expected: &Tensor, reference: &HashMap<String, Tensor>) -> f64 {
    let module = name.trim_end_matches("running_mean").trim_end_matches("running_var");
    let old = |stat: &str| vision_weights::filled(&format!("{module}{stat}"), &expected.size()).to_kind(Kind::Double);
    let new = |stat: &str| reference[&format!("train.{module}{stat}")].to_kind(Kind::Double);
    let batch_mean = (new("running_mean") - old("running_mean") * 0.9) / 0.1;
    let batch_var = (new("running_var") - old("running_var") * 0.9) / 0.1;
    let second_moment = batch_var.abs() + batch_mean.square();
    let magnitude = if name.ends_with("running_mean") {
        second_moment.sqrt() * 0.1 + old("running_mean").abs() * 0.9
    } else {
        second_moment * 0.2 + old("running_var").abs() * 0.9
    };
    U_F32 * (depth + 2.0) * bounds::abs_max(&magnitude)
}

/// Builds the variant, fills it, and checks its eval output, its train output and every batch norm's
/// running statistics after that train forward against torchvision's and against the f64 run.
fn check_against_torchvision(name: &str) {
    let Pair { vs, model, vs64, model64, xs } = pair(name);
    let reference = reference(name);
    let positions = (xs.numel() / xs.size()[1] as usize).max(1);
    let xs64 = xs.to_kind(Kind::Double);
    let mut ratio = 0f64;
    for (train, key) in [(false, "eval"), (true, "train")] {
        let depth = rounding_depth(&vs, positions, train);
        let ours = tch::no_grad(|| model.forward_t(&xs, train));
        let (features, fc) = tch::no_grad(|| model64.features_t(&xs64, train));
        let exact = features.apply(fc);
        let bound = logits_bound(depth, &features, fc);
        let what = format!("{name} {key} logits");
        ratio = ratio.max(check_logits(&ours, &exact, &reference[&format!("{key}.logits")], bound, &what));
        if !train {
            // Eval mode again later uses the updated statistics: train mode must differ.
            assert!(max_abs_diff(&ours, &reference["train.logits"]) > 1e-3, "{name}: train mode must differ");
        }
    }
    // The train forward moved the running statistics: those of every batch norm must match.
    let depth = rounding_depth(&vs, positions, true);
    let (mut checked, mut stats_ratio) = (0, 0.0f64);
    let exact_stats = vs64.variables();
    for (var_name, var) in vs.variables() {
        if var_name.ends_with("running_mean") || var_name.ends_with("running_var") {
            let key = format!("train.{var_name}");
            let expected = reference.get(&key).unwrap_or_else(|| panic!("{name}: no reference for {key}"));
            let bound = stats_bound(depth, &var_name, expected, &reference);
            let what = format!("{name} {var_name}");
            let exact = &exact_stats[&var_name];
            let a = assert_close(&var, exact, bound, &format!("{what}: Rust f32 vs Rust f64"));
            let b = assert_close(expected, exact, bound, &format!("{what}: torchvision f32 vs Rust f64"));
            let c = assert_close(&var, expected, 2.0 * bound, &format!("{what}: Rust f32 vs torchvision f32"));
            stats_ratio = stats_ratio.max(a.ratio).max(b.ratio).max(c.ratio);
            checked += 1;
        }
    }
    let expected_count = reference.keys().filter(|k| k.ends_with("running_mean") || k.ends_with("running_var")).count();
    assert_eq!(checked, expected_count, "{name}: batch norm count");
    eprintln!("{name}: worst |Δ| / bound: logits {ratio:.3e}, running statistics {stats_ratio:.3e}");
}

/// The bounds still catch a real mistake: a ResNet-18 whose last batch norm uses ε = 10⁻³ (the
/// Keras default) instead of 10⁻⁵ gives logits outside the bound of the f32 computation against the
/// exact one (which the parity tests check), in eval mode and in train mode.
#[test]
fn a_batch_norm_with_another_eps_is_rejected() {
    let name = "resnet18";
    let Pair { vs, model, vs64, model64, xs } = pair(name);
    let (Model::Basic(mut model), Model::Basic(model64)) = (model, model64) else {
        panic!("{name} is a BasicBlock ResNet")
    };
    let _ = vs64;
    let last = &model.layer4[1].bn2;
    let channels = last.running_mean.size()[0];
    let config = tch::nn::BatchNormConfig { eps: 1e-3, ..Default::default() };
    let mutated = nn::batch_norm2d(vs.root() / "mutated", channels, config);
    tch::no_grad(|| {
        for (to, from) in [
            (&mutated.running_mean, &last.running_mean),
            (&mutated.running_var, &last.running_var),
            (mutated.ws.as_ref().unwrap(), last.ws.as_ref().unwrap()),
            (mutated.bs.as_ref().unwrap(), last.bs.as_ref().unwrap()),
        ] {
            to.shallow_clone().copy_(from);
        }
    });
    model.layer4[1].bn2 = mutated;
    let model = Model::Basic(model);
    let model64 = Model::Basic(model64);
    let positions = (xs.numel() / xs.size()[1] as usize).max(1);
    let xs64 = xs.to_kind(Kind::Double);
    for (train, key) in [(false, "eval"), (true, "train")] {
        let depth = rounding_depth(&vs, positions, train);
        let ours = tch::no_grad(|| model.forward_t(&xs, train));
        let (features, fc) = tch::no_grad(|| model64.features_t(&xs64, train));
        let bound = logits_bound(depth, &features, fc);
        let c = compare_tensors(&ours, &features.apply(fc), bound);
        eprintln!("{name} {key} with ε = 1e-3 in layer4.1.bn2: {c}");
        assert!(!c.passes(), "{name} {key}: a batch norm with ε = 1e-3 passes: {c}");
    }
}

#[test]
fn resnet18_equals_torchvision() {
    check_against_torchvision("resnet18");
}

#[test]
fn resnet34_equals_torchvision() {
    check_against_torchvision("resnet34");
}

#[test]
fn resnet50_equals_torchvision() {
    check_against_torchvision("resnet50");
}

#[test]
fn resnet18_small_input_stem_equals_torchvision() {
    check_against_torchvision("resnet18_small");
}

#[test]
fn mobilenet_v2_equals_torchvision() {
    check_against_torchvision("mobilenet_v2");
}

#[test]
fn mobilenet_v2_small_input_half_width_equals_torchvision() {
    check_against_torchvision("mobilenet_v2_small");
}

const VARIANTS: [&str; 6] =
    ["resnet18", "resnet34", "resnet50", "resnet18_small", "mobilenet_v2", "mobilenet_v2_small"];

#[test]
fn variables_are_torchvisions_state_dict_keys_with_their_shapes() {
    for name in VARIANTS {
        let spec = variant(name);
        let vs = VarStore::new(Device::Cpu);
        let _model = build(&vs, &spec["config"]);
        let ours: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
        let mut theirs = BTreeMap::new();
        for entry in spec["state_dict"].as_array().unwrap() {
            let key = entry[0].as_str().unwrap().to_string();
            if let Some(module) = key.strip_suffix("num_batches_tracked") {
                // No variable in tch's batch norm; it must belong to one of ours.
                assert_eq!(entry[1], "int64");
                assert!(ours.contains_key(&format!("{module}running_mean")), "{name}: {key} has no batch norm");
                continue;
            }
            assert_eq!(entry[1], "float32", "{name}: {key}");
            theirs.insert(key, shape(&entry[2]));
        }
        assert_eq!(ours, theirs, "{name}: variables and shapes");
    }
}

#[test]
fn module_paths_are_torchvisions() {
    for name in VARIANTS {
        let spec = variant(name);
        let vs = VarStore::new(Device::Cpu);
        let model = build(&vs, &spec["config"]);
        // An absent optional module (`downsample: None`, the small stem's `maxpool: None`) is listed
        // without a capture point; torchvision has no module there.
        let absent = |m: &distill::NamedModule| m.tap.is_none() && m.type_name.starts_with("core::option::Option<");
        let ours: BTreeMap<String, bool> = model
            .named_modules()
            .into_iter()
            .filter(|m| !m.path.is_empty() && !absent(m))
            .map(|m| (m.path, m.tap.is_some()))
            .collect();
        let mut theirs: BTreeSet<String> =
            spec["modules"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
        if spec["config"].get("small_input").is_some() && name.starts_with("resnet") {
            // torchvision's small-input recipe puts an `Identity` there; ours has no max pool at all.
            assert!(theirs.remove("maxpool"));
        }
        let our_paths: BTreeSet<String> = ours.keys().cloned().collect();
        assert_eq!(our_paths, theirs, "{name}: module paths");
        let silent: Vec<&String> = ours.iter().filter(|(_, taps)| !**taps).map(|(path, _)| path).collect();
        assert!(silent.is_empty(), "{name}: modules that cannot be captured: {silent:?}");
    }
}

/// Writes what `safetensors.torch.save_file(model.state_dict(), path)` writes for the variant: its
/// keys in order, `num_batches_tracked` as 0-d int64, the other tensors filled by the formula.
fn write_torchvision_file(name: &str, path: &std::path::Path) {
    let spec = variant(name);
    let tensors: Vec<(String, Tensor)> = spec["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let key = entry[0].as_str().unwrap().to_string();
            let tensor = if key.ends_with("num_batches_tracked") {
                Tensor::from(7i64)
            } else {
                vision_weights::filled(&key, &shape(&entry[2]))
            };
            (key, tensor)
        })
        .collect();
    Tensor::write_safetensors(&tensors, path).unwrap();
}

fn temp_file(stem: &str) -> PathBuf {
    std::env::temp_dir().join(format!("distill-vision-{stem}-{}.safetensors", std::process::id()))
}

#[test]
fn a_torchvision_state_dict_file_loads_unchanged() {
    for name in ["resnet18_small", "mobilenet_v2_small"] {
        let file = temp_file(name);
        write_torchvision_file(name, &file);
        let spec = variant(name);
        let xs = vision_weights::filled("input", &shape(&spec["input"]));
        let expected = &reference(name)["eval.logits"];
        let bound = eval_bound(name);

        // Strictly, with `load_torchvision`.
        let mut vs = VarStore::new(Device::Cpu);
        let model = build(&vs, &spec["config"]);
        vision::load_torchvision(&mut vs, &file).unwrap();
        let logits = tch::no_grad(|| model.forward_t(&xs, false));
        assert_close(&logits, expected, bound, &format!("{name} via load_torchvision"));

        // And with tch's own `VarStore::load`, which skips `num_batches_tracked`.
        let mut vs = VarStore::new(Device::Cpu);
        let model = build(&vs, &spec["config"]);
        vs.load(&file).unwrap();
        let logits = tch::no_grad(|| model.forward_t(&xs, false));
        assert_close(&logits, expected, bound, &format!("{name} via VarStore::load"));
        std::fs::remove_file(&file).unwrap();
    }
}

#[test]
fn load_torchvision_under_a_prefix() {
    let file = temp_file("prefix");
    write_torchvision_file("resnet18_small", &file);
    let spec = variant("resnet18_small");
    let mut vs = VarStore::new(Device::Cpu);
    let config = ResNetConfig { in_channels: 1, small_input: true, ..Default::default() };
    let teacher = vision::resnet18_with(vs.root() / "teacher", 10, config).unwrap();
    let other = vision::resnet18_with(vs.root() / "other", 10, config).unwrap();
    let before = other.fc.ws.copy();
    vision::load_torchvision_under(&mut vs, "teacher", &file).unwrap();
    let xs = vision_weights::filled("input", &shape(&spec["input"]));
    assert_close(
        &tch::no_grad(|| teacher.forward_t(&xs, false)),
        &reference("resnet18_small")["eval.logits"],
        eval_bound("resnet18_small"),
        "prefix",
    );
    assert_eq!(max_abs_diff(&other.fc.ws, &before), 0.0, "variables outside the prefix are left alone");
    std::fs::remove_file(&file).unwrap();
}

fn load_error(vs: &mut VarStore, file: &std::path::Path) -> String {
    match vision::load_torchvision(vs, file) {
        Err(error @ DistillError::Checkpoint(CheckpointError::StateDict { .. })) => error.to_string(),
        other => panic!("expected CheckpointError::StateDict, got {other:?}"),
    }
}

#[test]
fn load_torchvision_rejects_another_models_weights() {
    let file = temp_file("resnet34");
    write_torchvision_file("resnet34", &file);

    // tch's own loader takes ResNet-34's weights for a ResNet-18 without a word…
    let mut vs = VarStore::new(Device::Cpu);
    let _resnet18 = vision::resnet18(vs.root(), 10).unwrap();
    vs.load(&file).unwrap();
    // …the strict one names the keys that do not belong, and copies nothing.
    let first = vs.variables()["conv1.weight"].copy();
    let message = load_error(&mut vs, &file);
    assert!(message.contains("keys of the file the model does not have"), "{message}");
    assert!(message.contains("`layer1.2.bn1.bias`"), "{message}");
    assert_eq!(max_abs_diff(&vs.variables()["conv1.weight"], &first), 0.0);
    std::fs::remove_file(&file).unwrap();

    // A model with another class count: the shape is named.
    let file = temp_file("classes");
    write_torchvision_file("resnet18", &file);
    let mut vs = VarStore::new(Device::Cpu);
    let _resnet18 = vision::resnet18(vs.root(), 100).unwrap();
    let message = load_error(&mut vs, &file);
    assert!(message.contains("`fc.weight`: [10, 512] in the file, [100, 512] in the model"), "{message}");
    assert!(message.contains("2 shapes that differ"), "{message}");

    // A model with more layers than the file: the missing variables are named.
    let mut vs = VarStore::new(Device::Cpu);
    let _resnet34 = vision::resnet34(vs.root(), 10).unwrap();
    let message = load_error(&mut vs, &file);
    assert!(message.contains("80 variables missing from the file (`layer1.2.bn1.bias`"), "{message}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn constructors_reject_bad_options() {
    let vs = VarStore::new(Device::Cpu);
    let bad = |result: Result<(), DistillError>| match result {
        Err(DistillError::Vision(error)) => match error.downcast_ref::<VisionError>() {
            Some(vision_error) => vision_error.to_string(),
            None => panic!("expected VisionError, got {error:?}"),
        },
        other => panic!("expected VisionError, got {other:?}"),
    };
    assert!(bad(vision::resnet18(vs.root(), 0).map(drop)).contains("num_classes"));
    let below_one = vision::resnet18(vs.root(), 0).map(drop).unwrap_err();
    assert!(
        matches!(&below_one, DistillError::Vision(error)
            if matches!(error.downcast_ref(), Some(VisionError::BelowOne { what: "num_classes", value: 0 }))),
        "{below_one}"
    );
    let config = ResNetConfig { in_channels: -1, ..Default::default() };
    assert!(bad(vision::resnet50_with(vs.root(), 10, config).map(drop)).contains("in_channels"));
    assert!(bad(
        vision::resnet::<vision::BasicBlock, _>(vs.root(), [2, 0, 2, 2], 10, ResNetConfig::default()).map(drop)
    )
    .contains("layer2"));
    for width_mult in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let config = MobileNetV2Config { width_mult, ..Default::default() };
        assert!(bad(vision::mobilenet_v2_with(vs.root(), 10, config).map(drop)).contains("width_mult"));
    }
    let config = MobileNetV2Config { dropout: 1.5, ..Default::default() };
    assert!(bad(vision::mobilenet_v2_with(vs.root(), 10, config).map(drop)).contains("dropout"));
    let config = MobileNetV2Config { round_nearest: 0, ..Default::default() };
    assert!(bad(vision::mobilenet_v2_with(vs.root(), 10, config).map(drop)).contains("round_nearest"));
}

#[test]
fn mobilenet_v2_dropout_acts_in_train_mode_only() {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let config = MobileNetV2Config { small_input: true, dropout: 0.5, ..Default::default() };
    let net = vision::mobilenet_v2_with(vs.root(), 10, config).unwrap();
    let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (eval_a, eval_b) = tch::no_grad(|| (net.forward_t(&xs, false), net.forward_t(&xs, false)));
    assert_eq!(max_abs_diff(&eval_a, &eval_b), 0.0);
    // Train mode: batch statistics and dropout, so two forwards differ — unlike with dropout 0, where
    // batch statistics alone give the same output twice.
    let (train_a, train_b) = tch::no_grad(|| (net.forward_t(&xs, true), net.forward_t(&xs, true)));
    assert!(max_abs_diff(&train_a, &train_b) > 1e-6);
    let config = MobileNetV2Config { dropout: 0.0, ..config };
    let net = vision::mobilenet_v2_with(vs.root() / "no_dropout", 10, config).unwrap();
    let (train_a, train_b) = tch::no_grad(|| (net.forward_t(&xs, true), net.forward_t(&xs, true)));
    assert_eq!(max_abs_diff(&train_a, &train_b), 0.0);
}

/// The depthwise conv of a pruned inverted residual block carries the record of its pruning, as the
/// block's other pruned convs do: the selection adapter picks the kept channels after training has
/// moved the student's weights (when they can no longer be found from them), and a `PruneRecord`
/// saves it.
#[test]
fn a_pruned_depthwise_conv_carries_its_record() {
    use distill::adapter::conv2d_adapter;
    use distill::prune::PruneRecord;
    use distill::vision::prune::prune_mobilenet_v2;
    use distill::vision::MobileNetV2Feature;
    use tch::nn::Module;

    tch::manual_seed(4);
    let (teacher_vs, student_vs, adapter_vs) =
        (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let config = MobileNetV2Config { width_mult: 0.5, ..Default::default() };
    let teacher = vision::mobilenet_v2_with(teacher_vs.root(), 10, config).unwrap();
    let student = prune_mobilenet_v2(student_vs.root(), &teacher, 0.5).unwrap();
    fn depthwise(net: &vision::MobileNetV2) -> &nn::Conv2D {
        match &net.features[2] {
            MobileNetV2Feature::InvertedResidual(block) => &block.conv.depthwise().0,
            other => panic!("features.2 is {other:?}"),
        }
    }
    let (t_dw, s_dw) = (depthwise(&teacher), depthwise(&student));
    let keep = match &student.features[2] {
        MobileNetV2Feature::InvertedResidual(block) => block.conv.expand().unwrap().0.pruned_from().unwrap().output(),
        other => panic!("features.2 is {other:?}"),
    };
    let kept = s_dw.pruned_from().expect("the pruned depthwise conv's record");
    assert_eq!((kept.output(), kept.input(), kept.source_shape()), (keep, [0].as_slice(), t_dw.ws.size().as_slice()));

    // Training moves the student's weights off the teacher's slices.
    tch::no_grad(|| {
        let _ = s_dw.ws.shallow_clone().g_add_(&(s_dw.ws.randn_like() * 0.1));
    });
    let adapter = conv2d_adapter(adapter_vs.root() / "dw", t_dw, s_dw).build().unwrap();
    let t = Tensor::randn([1, t_dw.ws.size()[0], 4, 4], (Kind::Float, Device::Cpu));
    let selected = tch::no_grad(|| adapter.forward(&t));
    assert_eq!(selected, t.index_select(1, &Tensor::from_slice(keep)));
    PruneRecord::new().insert_conv("features.2.conv.1.0", s_dw).unwrap();
}
