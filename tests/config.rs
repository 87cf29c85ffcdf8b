//! Distillations read from TOML files: the Fashion-MNIST example's file gives the numbers of its
//! `distill!` declaration, every criterion and adapter kind builds and runs, and every mistake is
//! an error naming the file, line, column and key. (What each kind reads into is tested in the
//! runtime's own `config` tests.)

#[path = "common/fashion.rs"]
mod fashion;
#[path = "../examples/fashion_mnist/model.rs"]
#[allow(dead_code)]
mod model;
#[path = "../examples/fashion_mnist/prune.rs"]
mod prune;

use distill::config::{Config, ConfigError};
use distill::criterion::{KlDiv, Mse, Weighting};
use distill::module::PathError;
use distill::nn::{ModuleT, VarStore};
use distill::prelude::*;
use distill::schedule::Schedule;
use distill::{Port, Side};
use tch::{Device, Kind, Tensor};

use fashion::teacher_and_student;
use model::Net;

// The `distill!` declaration of examples/fashion_mnist/kd.rs, which kd.toml writes as a file.
distill! {
    pub struct PrunedKd for Net => Net {
        f1: student.features[1].conv => conv2d_adapter(teacher.features[1].conv) with Mse;
        f2: student.features[2].conv => conv2d_adapter(teacher.features[2].conv) with Mse;
        f3: student.features[3].conv => conv2d_adapter(teacher.features[3].conv) with Mse;
        kd: student => teacher with KlDiv::new(4.0);
    }
}

/// A random teacher with the example's widths and its pruned student (25% of the filters).
fn batch() -> Tensor {
    tch::manual_seed(7);
    Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu))
}

fn names(vs: &VarStore) -> Vec<String> {
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    names
}

#[test]
fn the_example_file_gives_the_numbers_of_its_distill_declaration() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(1);
    let xs = batch();
    let config = Config::from_file("examples/fashion_mnist/kd.toml").unwrap();
    assert_eq!(config.names().collect::<Vec<_>>(), ["f1", "f2", "f3", "kd"]);

    let dsl_vs = VarStore::new(Device::Cpu);
    let dsl = PrunedKd::new(dsl_vs.root() / "kd", &student, &teacher).unwrap();
    let file_vs = VarStore::new(Device::Cpu);
    let from_file = config.distill(&(file_vs.root() / "kd"), &student, &teacher).unwrap();
    // The same adapters under the same names, with the same (selection) weights.
    assert_eq!(names(&dsl_vs), ["kd.f1.weight", "kd.f2.weight", "kd.f3.weight"]);
    assert_eq!(names(&dsl_vs), names(&file_vs));
    for (name, weight) in dsl_vs.variables() {
        assert!(weight.equal(&file_vs.variables()[&name]), "{name}");
    }

    // Training mode, as the fine-tune: batch statistics, so the order of the two forwards does not
    // matter (each moves the running statistics, which training mode does not read).
    let dsl_losses = dsl.forward_t(&xs, true).unwrap().losses();
    let expected = &dsl_losses;
    let out = from_file.forward_t(&xs, true).unwrap();
    let got = out.f_losses().unwrap();
    let expected: Vec<(&str, f64)> = expected.iter().map(|(n, l)| (n, l.double_value(&[]))).collect();
    let got_values: Vec<(&str, f64)> = got.iter().map(|(n, l)| (n, l.double_value(&[]))).collect();
    assert_eq!(got_values, expected);
    assert!(expected.iter().all(|(_, loss)| *loss > 0.0), "{expected:?}");
    assert_eq!(got.total().double_value(&[]), dsl_losses.total().double_value(&[]));
    // The student's output is the same forward's.
    assert!(out.student_output.equal(&student.forward_t(&xs, true)));
}

/// A file of one pair with `body` after `name`, to check one key at a time.
fn one_pair(body: &str) -> String {
    format!("[[pair]]\nname = \"p\"\n{body}\n")
}

fn config_error(text: &str) -> (String, DistillError) {
    let err = Config::parse(text, "exp.toml").unwrap_err();
    (err.to_string(), err)
}

#[test]
fn a_typo_in_a_path_names_the_file_line_and_the_closest_path() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(2);
    let text = one_pair("student = \"features.1.cnv\"\nteacher = \"features.1.conv\"\ncriterion = \"Mse\"");
    let config = Config::parse(&text, "exp.toml").unwrap();
    let vs = VarStore::new(Device::Cpu);
    let err = config.distill(&vs.root(), &student, &teacher).unwrap_err();
    assert_eq!(
        err.to_string(),
        "exp.toml:3:11: `pair[0].student`: the student has no module `features.1.cnv` (did you mean `features.1.conv`?)"
    );
    // The models' error is the error's source, for `?` chains and error reporters.
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("the student has no module `features.1.cnv` (did you mean `features.1.conv`?)"));
    let DistillError::Config(ConfigError { file, line, column, key, cause, .. }) = err else { panic!("{err:?}") };
    assert_eq!((file.as_str(), line, column, key.as_str()), ("exp.toml", 3, 11, "pair[0].student"));
    assert!(matches!(
        cause.as_deref(),
        Some(DistillError::Path(PathError::UnknownPath { side: Side::Student, suggestion: Some(s), .. })) if s == "features.1.conv"
    ));
    // Nothing was built: the paths are checked before any adapter.
    assert_eq!(vs.len(), 0);

    // On the teacher's side, and an index out of range.
    let text = one_pair("student = \"features.1\"\nteacher = \"feature.1\"\ncriterion = \"Mse\"");
    let err = Config::parse(&text, "exp.toml").unwrap().distill(&vs.root(), &student, &teacher).unwrap_err();
    assert_eq!(
        err.to_string(),
        "exp.toml:4:11: `pair[0].teacher`: the teacher has no module `feature.1` (did you mean `features.1`?)"
    );
    let text = one_pair("student = \"features.4\"\nteacher = \"features.1\"\ncriterion = \"Mse\"");
    let err = Config::parse(&text, "exp.toml").unwrap().distill(&vs.root(), &student, &teacher).unwrap_err();
    assert_eq!(
        err.to_string(),
        "exp.toml:3:11: `pair[0].student`: index 4 is out of range for `features` on the student: it has 4 children"
    );
}

#[test]
fn unknown_keys_are_rejected_where_they_are() {
    let cases = [
        ("[[pair]]\nname = \"p\"\nstudnet = \"\"\n", "exp.toml:3:1: `pair[0].studnet`: unknown key (did you mean `student`?)"),
        ("[teacher]\ngrad = true\ntrian = true\n", "exp.toml:3:1: `teacher.trian`: unknown key (did you mean `train`?)"),
        ("pairs = 1\n", "exp.toml:1:1: `pairs`: unknown key (did you mean `pair`?)"),
        (
            &one_pair("student = \"\"\nteacher = \"\"\ncriterion = { kind = \"KlDiv\", temprature = 4.0 }"),
            "exp.toml:5:31: `pair[0].criterion.temprature`: unknown key (did you mean `temperature`?)",
        ),
        (
            &one_pair("student = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nstudent_adapter = { kind = \"linear_adapter\", in = 2, out = 3, bias = 1 }"),
            "exp.toml:6:63: `pair[0].student_adapter.bias`: unknown key; the keys here are `kind`, `in`, `out`",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(config_error(text).0, expected, "{text}");
    }
}

#[test]
fn wrong_values_are_errors_at_the_value() {
    let pair = |criterion: &str| one_pair(&format!("student = \"\"\nteacher = \"\"\ncriterion = {criterion}"));
    let cases = [
        (pair("\"Mes\""), "exp.toml:5:13: `pair[0].criterion`: unknown criterion `Mes` (did you mean `Mse`?)"),
        (
            pair("{ kind = \"KlDiv\", temperature = 0 }"),
            "exp.toml:5:13: `pair[0].criterion`: invalid criterion: KlDiv's temperature must be finite and > 0, got 0",
        ),
        (
            pair("{ kind = \"KlDiv\", temperature = \"4\" }"),
            "exp.toml:5:45: `pair[0].criterion.temperature`: expected a number, found the string \"4\"",
        ),
        (pair("{ temperature = 4.0 }"), "exp.toml:5:13: `pair[0].criterion`: missing key `kind`"),
        (pair("4"), "exp.toml:5:13: `pair[0].criterion`: expected a criterion name (\"Mse\") or a table (`{ kind = \"KlDiv\", temperature = 4.0 }`), found the integer 4"),
        (
            one_pair("student = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nweight = nan"),
            "exp.toml:6:10: `pair[0].weight`: the weight must be finite, got NaN",
        ),
        (
            one_pair("student = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nstudent_adapter = \"conv2d_adapter\""),
            "exp.toml:6:19: `pair[0].student_adapter`: `conv2d_adapter` maps the teacher tensor (teacher widths → student widths), so it is a `teacher_adapter`, not a `student_adapter`",
        ),
        (
            one_pair("student = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nteacher_adapter = \"conv2d_adaptr\""),
            "exp.toml:6:19: `pair[0].teacher_adapter`: unknown adapter `conv2d_adaptr` (did you mean `conv2d_adapter`?)",
        ),
        (
            one_pair("student = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nteacher_adapter = \"linear_adapter\""),
            "exp.toml:6:19: `pair[0].teacher_adapter`: `linear_adapter` needs its widths: `{ kind = \"linear_adapter\", in = …, out = … }`",
        ),
        (one_pair("teacher = \"\"\ncriterion = \"Mse\""), "exp.toml:1:1: `pair[0]`: missing key `student`"),
        (
            format!("{}{}", one_pair("student = \"\"\nteacher = \"\"\ncriterion = \"Mse\""), one_pair("student = \"\"\nteacher = \"\"\ncriterion = \"L1\"")),
            "exp.toml:7:8: `pair[1].name`: the name `p` is already pair 0's",
        ),
        ("[teacher]\ngrad = 1\n".to_owned(), "exp.toml:2:8: `teacher.grad`: expected true or false, found the integer 1"),
        ("".to_owned(), "exp.toml:1:1: no pair: add a `[[pair]]` table with `name`, `student`, `teacher` and `criterion`"),
    ];
    for (text, expected) in cases {
        assert_eq!(config_error(&text).0, expected, "{text}");
    }
    // A syntax error is located too, without a key.
    let (message, err) = config_error("[[pair]]\nname = \"p\nstudent = \"\"\n");
    assert!(matches!(err, DistillError::Config(ConfigError { line: 2, ref key, .. }) if key.is_empty()), "{message}");
    assert!(message.starts_with("exp.toml:2:"), "{message}");
}

#[test]
fn a_token_criterion_out_of_its_domain_is_an_error_of_the_file() {
    let bad = one_pair("student = \"\"\nteacher = \"\"\ncriterion = { kind = \"Jsd\", reduction = \"mean\" }");
    let message = Config::parse(&bad, "exp.toml").unwrap_err().to_string();
    assert!(message.contains("unknown reduction `mean`"), "{message}");
    let bad = one_pair("student = \"\"\nteacher = \"\"\ncriterion = { kind = \"Jsd\", beta = 2.0 }");
    let message = Config::parse(&bad, "exp.toml").unwrap_err().to_string();
    assert!(message.contains("beta must be in [0, 1]"), "{message}");
}

#[test]
fn a_weighted_pair_equals_the_weighted_criterion() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(4);
    let text =
        one_pair("student = \"\"\nteacher = \"\"\ncriterion = { kind = \"KlDiv\", temperature = 2.0 }\nweight = 0.25");
    let config = Config::parse(&text, "exp.toml").unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = config.distill(&vs.root(), &student, &teacher).unwrap();
    let xs = batch();
    let out = model.forward_t(&xs, false).unwrap();
    let expected = (KlDiv::new(2.0) * 0.25).loss(&out.student_output, &out.teacher_outputs[0]);
    assert_eq!(out.f_losses().unwrap().get("p").unwrap().double_value(&[]), expected.double_value(&[]));
}

#[test]
fn every_adapter_builds_against_the_teacher_and_student() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(5);
    let pair = |name: &str, side: &str, adapter: &str, path: &str, criterion: &str| {
        format!(
            "[[pair]]\nname = \"{name}\"\nstudent = \"{path}\"\nteacher = \"{path}\"\n{side}_adapter = {adapter}\ncriterion = \"{criterion}\"\n"
        )
    };
    let text = [
        pair("sel", "teacher", "{ kind = \"conv2d_adapter\", atol = 1e-5, rtol = 0.0 }", "features.1.conv", "Mse"),
        pair("inv", "student", "\"inverted_conv2d_adapter\"", "features.1.conv", "Mse"),
        pair("lc", "teacher", "\"learned_conv2d_adapter\"", "features.2.conv", "Mse"),
        pair("lic", "student", "\"learned_inverted_conv2d_adapter\"", "features.2.conv", "Mse"),
        pair("ll", "teacher", "\"learned_linear_adapter\"", "classifier", "Mse"),
        pair("lil", "student", "\"learned_inverted_linear_adapter\"", "classifier", "Mse"),
        pair("c11", "student", "{ kind = \"conv1x1_adapter\", in = 32, out = 128 }", "features.2", "Mse"),
        pair("lin", "teacher", "{ kind = \"linear_adapter\", in = 10, out = 10 }", "", "KlDiv"),
        pair("fl", "teacher", "\"fitted_linear_adapter\"", "", "Mse"),
        pair("fc", "student", "\"fitted_conv1x1_adapter\"", "features.3", "Mse"),
    ]
    .concat();
    let config = Config::parse(&text, "adapters.toml").unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = config.distill(&(vs.root() / "kd"), &student, &teacher).unwrap();
    // The adapters the file built, by their variables: each kind's weight with the widths its layers
    // or options give; the fitted ones are empty until the dry run.
    let variables = |vs: &VarStore| {
        let mut all: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(name, t)| (name, t.size())).collect();
        all.sort();
        all
    };
    let shape = |dims: &[i64]| dims.to_vec();
    let before = [
        ("kd.c11.weight", shape(&[128, 32, 1, 1])),
        ("kd.fc.weight", shape(&[0, 0, 1, 1])),
        ("kd.fl.bias", shape(&[0])),
        ("kd.fl.weight", shape(&[0, 0])),
        ("kd.inv.weight", shape(&[64, 16, 1, 1])),
        ("kd.lc.weight", shape(&[32, 128, 1, 1])),
        ("kd.lic.weight", shape(&[128, 32, 1, 1])),
        ("kd.lil.weight", shape(&[10, 10])),
        ("kd.lin.weight", shape(&[10, 10])),
        ("kd.ll.weight", shape(&[10, 10])),
        ("kd.sel.weight", shape(&[16, 64, 1, 1])),
    ];
    assert_eq!(variables(&vs), before.map(|(name, dims)| (name.to_owned(), dims)));
    // A selection adapter's weight selects: every entry 0 or 1, with one 1 for each of the student's
    // channels (the rows of `conv2d_adapter`'s weight, the columns of the inverted one's).
    let selects = |name: &str| {
        let weight = vs.variables()[name].flatten(1, -1);
        let weight = if name.contains("inv") { weight.tr() } else { weight };
        weight.eq(1.0).sum_dim_intlist(1, false, Kind::Int64).eq(1).all().int64_value(&[]) == 1
            && weight.eq(0.0).logical_or(&weight.eq(1.0)).all().int64_value(&[]) == 1
    };
    assert!(selects("kd.sel.weight") && selects("kd.inv.weight"));
    assert!(!selects("kd.lc.weight") && !selects("kd.lic.weight") && !selects("kd.c11.weight"));
    // The fitted adapters take their widths from a dry run, which then checks every pair.
    let xs = batch();
    let report = model.dry_run(&xs).unwrap();
    let shapes: Vec<(String, Vec<i64>, Vec<i64>)> =
        report.pairs.iter().map(|p| (p.label.clone(), p.student.clone(), p.teacher.clone())).collect();
    assert_eq!(shapes[0], ("sel".to_owned(), vec![8, 16, 14, 14], vec![8, 16, 14, 14]));
    assert_eq!(shapes[1], ("inv".to_owned(), vec![8, 64, 14, 14], vec![8, 64, 14, 14]));
    assert_eq!(shapes[9], ("fc".to_owned(), vec![8, 256, 4, 4], vec![8, 256, 4, 4]));
    let fitted: Vec<_> = variables(&vs).into_iter().filter(|(name, _)| name.starts_with("kd.f")).collect();
    let fitted_expected = [
        ("kd.fc.weight", [256, 64, 1, 1].to_vec()),
        ("kd.fl.bias", [10].to_vec()),
        ("kd.fl.weight", [10, 10].to_vec()),
    ];
    assert_eq!(fitted, fitted_expected.map(|(name, dims)| (name.to_owned(), dims)));
    let out = model.forward_t(&xs, true).unwrap();
    let all = out.f_losses().unwrap();
    assert_eq!(all.iter().len(), 10);
    assert!(all.iter().all(|(_, loss)| loss.double_value(&[]).is_finite()));
    // The selection adapter selects: before training, its pair compares the kept teacher channels.
    let sel = out.get("sel").unwrap();
    assert_eq!(sel.student.size(), sel.teacher.size());

    // A layer adapter on a module of another type says which type it needs.
    let text = pair("bad", "teacher", "\"conv2d_adapter\"", "features.1", "Mse");
    let err = Config::parse(&text, "bad.toml").unwrap().distill(&vs.root(), &student, &teacher).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "bad.toml:5:19: `pair[0].teacher_adapter`: `conv2d_adapter` needs a `distill::nn::Conv2D` at the teacher's `features.1`, which is a `"
        ),
        "{err}"
    );
}

#[test]
fn endpoint_options_and_teacher_mode_reach_the_mapping() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(6);
    let text = "[teacher]\ngrad = true\ntrain = true\n\n[[pair]]\nname = \"in\"\nstudent = \"classifier\"\nteacher = \"classifier\"\nstudent_input = true\nteacher_input = true\nstudent_all_calls = true\ncriterion = \"L1\"\n";
    let config = Config::parse(text, "exp.toml").unwrap();
    assert!(config.teacher_mode().grad && config.teacher_mode().train);
    let vs = VarStore::new(Device::Cpu);
    let model = config.distill(&vs.root(), &student, &teacher).unwrap();
    let (student_endpoint, teacher_endpoint) = (&model.student_endpoints()[0], &model.teacher_endpoints()[0]);
    assert_eq!((student_endpoint.port(), teacher_endpoint.port()), (Port::Input, Port::Input));
    assert!(student_endpoint.all_calls() && !teacher_endpoint.all_calls());
    let mode = model.teacher_mode("teacher").unwrap();
    assert!(mode.grad && mode.train);
    let xs = batch();
    // The file's `L1` compares widths 64 and 256, the classifier's inputs (the pooled features) on
    // the student and the teacher: the distillation's forward checks every pair.
    let err = model.forward_t(&xs, false).unwrap_err();
    let DistillError::ShapeMismatch { pair, student, teacher, .. } = &err else { panic!("{err:?}") };
    assert_eq!((pair.as_str(), student, teacher), ("in", &vec![8, 64], &vec![8, 256]));
}

#[test]
fn a_scheduled_weight_follows_the_step() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(7);
    let text = [
        one_pair("student = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nweight = { kind = \"warmup\", from = 0.0, to = 2.0, steps = 100 }"),
        "[[pair]]\nname = \"q\"\nstudent = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\n\
         weight = { kind = \"steps\", initial = 1.0, changes = [[10, 0.5], [20, 0.25]] }\n"
            .to_owned(),
    ]
    .concat();
    let config = Config::parse(&text, "exp.toml").unwrap();
    let vs = VarStore::new(Device::Cpu);
    let mut model = config.distill(&vs.root(), &student, &teacher).unwrap();
    let weighting = model.criterion("p").and_then(|criterion| criterion.weighting());
    let Some(Weighting::Scheduled(schedule, _)) = weighting else { panic!("{weighting:?}") };
    assert_eq!((schedule, schedule.value(25)), (&Schedule::warmup(0.0, 2.0, 100), 0.5));
    // Without a step, a scheduled pair is an error naming it, never step 0.
    let err = model.forward_t(&batch(), false).unwrap_err();
    assert!(matches!(&err, DistillError::MissingStep { pair } if pair == "p"), "{err:?}");
    for (step, p, q) in [(0, 0.0, 1.0), (25, 0.5, 0.25), (10, 0.2, 0.5), (500, 2.0, 0.25)] {
        model.set_step(step);
        let out = model.forward_t(&batch(), false).unwrap();
        let mse = Mse.loss(&out.student_output, &out.teacher_outputs[0]).double_value(&[]);
        let at = out.f_losses().unwrap();
        let value = |name| at.get(name).unwrap().double_value(&[]);
        assert!((value("p") - p * mse).abs() <= 1e-6 * mse, "step {step}: {} vs {}", value("p"), p * mse);
        assert!((value("q") - q * mse).abs() <= 1e-6 * mse, "step {step}");
    }

    let weight =
        |value: &str| one_pair(&format!("student = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nweight = {value}"));
    let cases = [
        (weight("{ kind = \"warmpu\", steps = 3 }"), "exp.toml:6:19: `pair[0].weight.kind`: unknown schedule `warmpu` (did you mean `warmup`?)"),
        (weight("{ kind = \"linear\", from = 0, to = 1, start = 5, end = 2 }"), "exp.toml:6:10: `pair[0].weight`: the schedule's ramp ends (step 2) before it starts (step 5)"),
        (weight("{ kind = \"warmup\", from = 0, to = 1, steps = -3 }"), "exp.toml:6:55: `pair[0].weight.steps`: a step must be ≥ 0, got -3"),
        (weight("{ kind = \"steps\", initial = 1, changes = [[1, 2, 3]] }"), "exp.toml:6:52: `pair[0].weight.changes[0]`: expected `[[step, value], …]`, e.g. `[[1000, 0.1]]`, found an array"),
    ];
    for (text, expected) in cases {
        assert_eq!(config_error(&text).0, expected, "{text}");
    }
}

#[test]
fn a_file_that_cannot_be_read_keeps_the_operating_systems_error() {
    let missing = std::env::temp_dir().join(format!("distill-config-missing-{}.toml", std::process::id()));
    let err = Config::from_file(&missing).unwrap_err();
    let name = missing.display().to_string();
    assert!(err.to_string().starts_with(&format!("{name}:1:1: cannot read the file: ")), "{err}");
    let DistillError::Config(ConfigError { cause: Some(cause), .. }) = &err else { panic!("{err:?}") };
    let DistillError::Io { action: "read", path, source } = cause.as_ref() else { panic!("{cause:?}") };
    assert_eq!((path.as_str(), source.kind()), (name.as_str(), std::io::ErrorKind::NotFound));
    // The chain reaches the operating system's error.
    let source = std::error::Error::source(&err).and_then(std::error::Error::source);
    assert!(source.is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some()), "{err:?}");
}

#[test]
fn an_adapter_on_a_layer_of_another_type_leaves_the_store_without_variables() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(8);
    // The first pair's adapter would build; the second's names a block, not its conv.
    let text = "[[pair]]\nname = \"ok\"\nstudent = \"features.2.conv\"\nteacher = \"features.2.conv\"\n\
                teacher_adapter = \"learned_conv2d_adapter\"\ncriterion = \"Mse\"\n\
                [[pair]]\nname = \"bad\"\nstudent = \"features.1\"\nteacher = \"features.1\"\n\
                teacher_adapter = \"conv2d_adapter\"\ncriterion = \"Mse\"\n";
    let config = Config::parse(text, "exp.toml").unwrap();
    let vs = VarStore::new(Device::Cpu);
    let err = config.distill(&(vs.root() / "kd"), &student, &teacher).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "exp.toml:11:19: `pair[1].teacher_adapter`: `conv2d_adapter` needs a `distill::nn::Conv2D` at the teacher's `features.1`"
        ),
        "{err}"
    );
    assert_eq!(names(&vs), Vec::<String>::new(), "no adapter was built");
    // Built again in the same store once the file is right, the adapters take their own names.
    let fixed = text.replace("\"features.1\"", "\"features.1.conv\"");
    let _model = Config::parse(&fixed, "exp.toml").unwrap().distill(&(vs.root() / "kd"), &student, &teacher).unwrap();
    assert_eq!(names(&vs), ["kd.bad.weight", "kd.ok.weight"]);
}
