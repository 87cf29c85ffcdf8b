//! Captured tensors equal the intermediates computed by hand with the same weights.

mod common;

use common::{by_hand, Mlp, Net};
use distill::nn::{ModuleT, VarStore};
use distill::{distill, Endpoint, Mapping};
use tch::{Device, Kind, Tensor};

fn assert_close(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    let diff = f64::try_from((actual - expected).abs().max()).unwrap();
    assert!(diff < 1e-5, "{what}: max abs difference {diff}");
}

fn input(seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu))
}

fn nets() -> (VarStore, Net, VarStore, Net) {
    tch::manual_seed(0);
    let svs = VarStore::new(Device::Cpu);
    let student = Net::new(&svs.root(), &[4, 6, 8], 5);
    let tvs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&tvs.root(), &[8, 12, 16], 5);
    // Non-trivial running statistics, so evaluation-mode batch norm is not the identity.
    for vs in [&svs, &tvs] {
        tch::no_grad(|| {
            for (name, mut var) in vs.variables() {
                if name.ends_with("running_var") {
                    let _ = var.uniform_(0.5, 2.0);
                } else if name.ends_with("running_mean") {
                    let _ = var.uniform_(-0.5, 0.5);
                }
            }
        });
    }
    (svs, student, tvs, teacher)
}

#[test]
fn every_endpoint_form_captures_the_hand_computed_tensor() {
    let (_svs, student, _tvs, teacher) = nets();
    let xs = input(1);
    let s = by_hand::net_eval(&student, &xs);
    let t = by_hand::net_eval(&teacher, &xs);

    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("stem", "stem", "stem").unwrap();
    mapping.add(student.features.slot(0), "features.0", "block0 (slot + path)").unwrap();
    mapping.add(&student.features[1].conv, &teacher.features[1].conv, "conv1 (by reference)").unwrap();
    mapping.add("features.1.bn", "features.1.bn", "bn1").unwrap();
    mapping.add(Endpoint::path("features.1.conv").input(), "features.0.act", "conv1 input").unwrap();
    mapping.add("head.0", "head.0", "pool").unwrap();
    mapping.add("head.1", "head.1", "flatten").unwrap();
    mapping.add("head.2", "head.2", "closure").unwrap();
    mapping.add(&student.classifier, "classifier", "classifier").unwrap();
    mapping.add("", Endpoint::root(), "root").unwrap();
    mapping.add("features", &teacher.features, "whole Seq").unwrap();

    let dm = distill(&student, &teacher, mapping);
    let out = dm.forward_t(&xs, false).unwrap();
    let expected: Vec<(&Tensor, &Tensor)> = vec![
        (&s.stem, &t.stem),
        (&s.block[0], &t.block[0]),
        (&s.conv[1], &t.conv[1]),
        (&s.bn[1], &t.bn[1]),
        (&s.block[0], &t.block[0]),
        (&s.pooled, &t.pooled),
        (&s.flat, &t.flat),
        (&s.doubled, &t.doubled),
        (&s.logits, &t.logits),
        (&s.logits, &t.logits),
        (&s.block[1], &t.block[1]),
    ];
    assert_eq!(out.len(), expected.len());
    for ((student_tensor, teacher_tensor, label), (s_exp, t_exp)) in out.pairs().zip(expected) {
        assert_close(student_tensor, s_exp, &format!("student {label}"));
        assert_close(teacher_tensor, t_exp, &format!("teacher {label}"));
    }
    assert_close(&out.student_output, &s.logits, "student output");
    assert_close(&out.teacher_output, &t.logits, "teacher output");
}

#[test]
fn student_and_teacher_of_different_types_three_levels_deep() {
    tch::manual_seed(3);
    let svs = VarStore::new(Device::Cpu);
    let student = Mlp::new(&svs.root(), 16, 5);
    let (_v, _n, _tvs, teacher) = nets();
    let xs = input(2);

    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("body.inner.fc", "features.1.bn", ()).unwrap();
    mapping.add(&student.body, "classifier", ()).unwrap();
    let dm = distill(&student, &teacher, mapping);
    let out = dm.forward_t(&xs, false).unwrap();

    let fc = by_hand::linear(&xs.flatten(1, -1), &student.body.inner.fc);
    let hidden = fc.gelu("none");
    let t = by_hand::net_eval(&teacher, &xs);
    let pairs: Vec<_> = out.pairs().collect();
    assert_close(pairs[0].0, &fc, "body.inner.fc");
    assert_close(pairs[0].1, &t.bn[1], "teacher features.1.bn");
    assert_close(pairs[1].0, &hidden, "Tap<Hidden>");
    assert_close(pairs[1].1, &t.logits, "teacher classifier");
    assert_close(&out.student_output, &by_hand::linear(&hidden, &student.out), "student output");
}

#[test]
fn self_distillation_with_one_model_as_both() {
    let (_svs, net, _tvs, _teacher) = nets();
    let xs = input(4);
    let mut mapping = Mapping::new(&net, &net);
    mapping.add("features.1.conv", "features.1.conv", ()).unwrap();
    mapping.add("stem", "features.0.conv", ()).unwrap();
    let dm = distill(&net, &net, mapping);
    let out = dm.forward_t(&xs, false).unwrap();
    let trace = by_hand::net_eval(&net, &xs);
    let pairs: Vec<_> = out.pairs().collect();
    assert_close(pairs[0].0, &trace.conv[1], "student side");
    assert_close(pairs[0].1, &trace.conv[1], "teacher side");
    assert_close(pairs[1].0, &trace.stem, "stem");
    assert_close(pairs[1].1, &trace.conv[0], "features.0.conv");
}

#[test]
fn teacher_runs_in_eval_mode_unless_asked() {
    let (_svs, student, _tvs, teacher) = nets();
    let xs = input(5);
    let expected_eval = by_hand::net_eval(&teacher, &xs).bn[0].shallow_clone();
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("features.0.bn", "features.0.bn", ()).unwrap();
    let dm = distill(&student, &teacher, mapping);
    let out = dm.forward_t(&xs, true).unwrap();
    let (_, teacher_bn, _) = out.get(0).unwrap();
    assert_close(teacher_bn, &expected_eval, "teacher batch norm with running statistics");

    // In training mode batch norm normalises with the batch's own statistics: per-channel mean 0.
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("features.0.bn", "features.0.bn", ()).unwrap();
    let dm = distill(&student, &teacher, mapping).teacher_train(true);
    let out = dm.forward_t(&xs, true).unwrap();
    let (_, teacher_bn, _) = out.get(0).unwrap();
    let conv = by_hand::net_eval(&teacher, &xs).conv[0].shallow_clone();
    let batch_mean = conv.mean_dim([0, 2, 3].as_slice(), true, Kind::Float);
    let batch_var = conv.var_correction([0, 2, 3].as_slice(), 0, true);
    let bn = &teacher.features[0].bn;
    let view = |t: &Tensor| t.view([1, -1, 1, 1]);
    let expected_train = (&conv - batch_mean) / (batch_var + 1e-5).sqrt() * view(bn.ws.as_ref().unwrap())
        + view(bn.bs.as_ref().unwrap());
    assert_close(teacher_bn, &expected_train, "teacher batch norm with batch statistics");
}

#[test]
fn separate_teacher_input() {
    let (_svs, student, _tvs, teacher) = nets();
    let (xs, xt) = (input(6), input(7));
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("stem", "stem", ()).unwrap();
    let dm = distill(&student, &teacher, mapping);
    let out = dm.forward_t_with(&xs, &xt, false).unwrap();
    let (s, t, _) = out.get(0).unwrap();
    assert_close(s, &by_hand::conv(&xs, &student.stem), "student stem on its input");
    assert_close(t, &by_hand::conv(&xt, &teacher.stem), "teacher stem on its own input");
}

#[test]
fn model_forward_is_unchanged_when_nothing_is_armed() {
    let (_svs, student, _tvs, _teacher) = nets();
    let xs = input(8);
    assert_close(&student.forward_t(&xs, false), &by_hand::net_eval(&student, &xs).logits, "plain forward");
    assert!(!distill::__private::capture::is_armed());
}

#[test]
fn named_modules_lists_every_path() {
    let (_svs, student, _tvs, _teacher) = nets();
    use distill::Distillable;
    let paths: Vec<String> = student.named_modules().into_iter().map(|m| m.path).collect();
    assert_eq!(
        paths,
        [
            "",
            "stem",
            "features",
            "features.0",
            "features.0.conv",
            "features.0.bn",
            "features.0.act",
            "features.1",
            "features.1.conv",
            "features.1.bn",
            "features.1.act",
            "head",
            "head.0",
            "head.1",
            "head.2",
            "classifier"
        ]
    );
}
