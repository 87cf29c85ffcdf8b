//! One runtime under three front ends: the same distillation declared with `distill!`, with a
//! `Mapping` of criteria and adapters and in a configuration file is one `Distillation`, giving the
//! same pairs, the same dry run and the same losses; a tch module of one's own is an adapter through `ModuleAdapter`.

#[path = "common/fashion.rs"]
mod fashion;
#[path = "../examples/fashion_mnist/model.rs"]
#[allow(dead_code)]
mod model;
#[path = "../examples/fashion_mnist/prune.rs"]
mod prune;

use distill::adapter::{Adapter, ModuleAdapter};
use distill::config::Config;
use distill::nn::VarStore;
use distill::prelude::*;
use tch::{Device, Kind, Tensor};

use fashion::teacher_and_student;
use model::Net;

distill! {
    struct Logits for Net => Net {
        kd: student => teacher with KlDiv::new(4.0) * 0.5;
        pooled: student.classifier => fitted_linear_adapter(teacher.classifier) with Mse, input;
    }
}

/// A random teacher with the example's widths and its pruned student (25% of the filters).
fn batch() -> Tensor {
    tch::manual_seed(11);
    Tensor::randn([6, 1, 28, 28], (Kind::Float, Device::Cpu))
}

fn bits(tensor: &Tensor) -> u64 {
    tensor.double_value(&[]).to_bits()
}

#[test]
fn the_three_front_ends_build_one_runtime_with_the_same_losses() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(1);
    let xs = batch();

    // `distill!`: a typed view over a `Distillation`.
    let dsl_vs = VarStore::new(Device::Cpu);
    let dsl = Logits::new(dsl_vs.root() / "kd", &student, &teacher).unwrap();
    assert_eq!(dsl.distillation().labels().collect::<Vec<_>>(), ["kd", "pooled"]);

    // A configuration file of the same pairs, with the adapter under the same path.
    let text = "[[pair]]\nname = \"kd\"\nstudent = \"\"\nteacher = \"\"\ncriterion = { kind = \"KlDiv\", temperature = 4.0 }\nweight = 0.5\n\
                [[pair]]\nname = \"pooled\"\nstudent = \"classifier\"\nteacher = \"classifier\"\nstudent_input = true\nteacher_input = true\nteacher_adapter = \"fitted_linear_adapter\"\ncriterion = \"Mse\"\n";
    let config = Config::parse(text, "kd.toml").unwrap();
    let file_vs = VarStore::new(Device::Cpu);
    let from_file = config.distill(&(file_vs.root() / "kd"), &student, &teacher).unwrap();

    // One dry run with one meaning: it fits the adapters and reports the pairs' shapes after them,
    // from every front end.
    let dsl_report = dsl.dry_run(&xs).unwrap();
    let file_report = from_file.dry_run(&xs).unwrap();
    assert_eq!(dsl_report, file_report);
    assert_eq!(file_report.pairs[1].teacher_raw, [6, 256]);
    assert_eq!(file_report.pairs[1].teacher, [6, 64]);
    // The fitted adapters start random: give the file's the `distill!` one's values.
    for name in ["kd.pooled.weight", "kd.pooled.bias"] {
        file_vs.variables()[name].shallow_clone().set_data(&dsl_vs.variables()[name]);
    }

    // Evaluation mode: both forwards see the same running statistics.
    let dsl_out = dsl.forward_t(&xs, false).unwrap();
    let file_out = from_file.forward_t(&xs, false).unwrap();
    let dsl_losses = dsl_out.f_losses().unwrap();
    let file_losses = file_out.f_losses().unwrap();
    for (label, expected) in dsl_losses.iter() {
        let got = file_losses.get(label).unwrap();
        assert_eq!(bits(got), bits(expected), "{label}");
    }
    assert_eq!(bits(&file_out.f_loss().unwrap()), bits(&dsl_out.f_loss().unwrap()));
    assert!(file_out.student_output.equal(&dsl_out.student_output));

    // A `Mapping` of the same pairs: a criterion, and a criterion with its adapter (`Adapted`),
    // created under the same path.
    let mapping_vs = VarStore::new(Device::Cpu);
    let pooled = fitted_linear_adapter(mapping_vs.root() / "kd" / "pooled", &teacher.classifier, &student.classifier);
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("", "", Adapted::new(KlDiv::new(4.0) * 0.5)).unwrap();
    let classifier = Endpoint::path("classifier").input();
    mapping.add(classifier.clone(), classifier, Adapted::new(Mse).teacher_adapter(pooled.unwrap())).unwrap();
    let dynamic = Distillation::from_mapping(&student, mapping).unwrap();
    assert_eq!(
        dynamic.labels().collect::<Vec<_>>(),
        ["(output) => (output)", "classifier (input) => classifier (input)"]
    );
    let shapes = |report: distill::DryRun| {
        report.pairs.into_iter().map(|p| (p.student, p.teacher, p.student_raw, p.teacher_raw))
    };
    assert!(shapes(dynamic.dry_run(&xs).unwrap()).eq(shapes(dsl_report)));
    for name in ["kd.pooled.weight", "kd.pooled.bias"] {
        mapping_vs.variables()[name].shallow_clone().set_data(&dsl_vs.variables()[name]);
    }
    let out = dynamic.forward_t(&xs, false).unwrap();
    let losses = out.f_losses().unwrap();
    let terms: Vec<u64> = losses.iter().map(|(_, loss)| bits(loss)).collect();
    assert_eq!(terms, [bits(&dsl_losses.kd), bits(&dsl_losses.pooled)]);
    assert_eq!(bits(&out.f_loss().unwrap()), bits(&dsl_out.f_loss().unwrap()));

    // Plain criteria are payloads too: the logits pair alone.
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("", "", KlDiv::new(4.0) * 0.5).unwrap();
    let logits = Distillation::from_mapping(&student, mapping).unwrap();
    assert_eq!(bits(&logits.forward_t(&xs, false).unwrap().f_loss().unwrap()), bits(&dsl_losses.kd));
}

#[test]
fn a_mapping_of_criteria_for_other_models_is_refused() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(2);
    let (_ovs, other, _osvs, _) = teacher_and_student(3);
    let mut mapping = Mapping::new(&other, &teacher);
    mapping.add("", "", Mse).unwrap();
    let err = Distillation::from_mapping(&student, mapping).unwrap_err();
    assert!(matches!(err, DistillError::ModelMismatch), "{err:?}");
}

/// An adapter constructor of one's own, returning a tch layer in a `ModuleAdapter`.
fn my_linear(
    path: nn::Path,
    _teacher: &nn::Linear,
    _student: &nn::Linear,
) -> Result<ModuleAdapter<tch::nn::Linear>, DistillError> {
    Ok(ModuleAdapter(tch::nn::linear(path, 10, 10, Default::default())))
}

distill! {
    struct Own for Net => Net {
        logits: student.classifier => my_linear(teacher.classifier) with Mse;
    }
}

#[test]
fn a_tch_module_is_an_adapter_in_a_module_adapter() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(4);
    let vs = VarStore::new(Device::Cpu);
    let own = Own::new(vs.root() / "own", &student, &teacher).unwrap();
    let xs = batch();
    let out = own.forward_t(&xs, false).unwrap();
    let adapter = ModuleAdapter(tch::nn::linear(vs.root() / "check", 10, 10, Default::default()));
    adapter.0.ws.shallow_clone().set_data(&vs.variables()["own.logits.weight"]);
    adapter.0.bs.as_ref().unwrap().shallow_clone().set_data(&vs.variables()["own.logits.bias"]);
    let expected = adapter.f_adapt(&teacher.forward_t(&xs, false), false).unwrap();
    assert!(out.logits.teacher.equal(&expected));
}

#[test]
fn a_pair_added_twice_to_a_mapping_has_a_label_of_its_own() {
    let (_tvs, teacher, _svs, student) = teacher_and_student(5);
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("", "", Box::new(KlDiv::new(4.0)) as Box<dyn Criterion>).unwrap();
    mapping.add("", "", Box::new(Mse)).unwrap();
    mapping.add("", "", Box::new(Mse * 2.0)).unwrap();
    let mut kd = Distillation::from_mapping(&student, mapping).unwrap();
    let labels: Vec<&str> = kd.labels().collect();
    assert_eq!(labels, ["(output) => (output)", "(output) => (output) #2", "(output) => (output) #3"]);
    kd.set_rescale_to(Some("(output) => (output) #2")).unwrap();
    assert_eq!(kd.rescale_to(), Some("(output) => (output) #2"));

    // Each label names its own term: the second is the MSE of the logits, the third twice that.
    let xs = batch();
    let out = kd.forward_t(&xs, false).unwrap();
    let mse = Mse.loss(&out.student_output, &out.teacher_outputs[0]).double_value(&[]);
    let losses = out.f_losses().unwrap();
    let terms: Vec<(&str, f64, f64)> =
        losses.terms().map(|(label, term)| (label, term.unweighted.double_value(&[]), term.weight)).collect();
    assert_eq!(terms[1], ("(output) => (output) #2", mse, 1.0));
    assert_eq!(terms[2], ("(output) => (output) #3", mse, 2.0));
}
