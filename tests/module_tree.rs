//! The module tree: blanket impls, listings, and path resolution.

use distill::__private::resolve;
use distill::module::{named_modules, Child, Distillable, PathError};
use distill::nn::{self, VarStore};
use distill::{DistillError, Side};
use tch::Device;

#[derive(Debug)]
struct Holder {
    boxed: Box<nn::Linear>,
    maybe: Option<nn::Linear>,
    absent: Option<nn::Linear>,
    array: [nn::ReLU; 2],
    list: Vec<nn::Conv2D>,
    tapped: nn::Tap<tch::nn::Linear>,
}

impl Distillable for Holder {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        visit(Child::field("boxed", &self.boxed));
        visit(Child::field("maybe", &self.maybe));
        visit(Child::field("absent", &self.absent));
        visit(Child::field("array", &self.array));
        visit(Child::field("list", &self.list));
        visit(Child::field("tapped", &self.tapped));
    }
}

fn holder(vs: &VarStore) -> Holder {
    let p = vs.root();
    Holder {
        boxed: Box::new(nn::linear(&p / "boxed", 2, 2, Default::default())),
        maybe: Some(nn::linear(&p / "maybe", 2, 2, Default::default())),
        absent: None,
        array: [nn::relu(), nn::relu()],
        list: (0..3).map(|i| nn::conv2d(&p / "list" / i, 1, 1, 1, Default::default())).collect(),
        tapped: nn::tap(tch::nn::linear(&p / "tapped", 2, 2, Default::default())),
    }
}

#[test]
fn blanket_impls_name_and_record_their_elements() {
    let vs = VarStore::new(Device::Cpu);
    let h = holder(&vs);
    let listed: Vec<(String, bool)> = named_modules(&h).into_iter().map(|m| (m.path, m.tap.is_some())).collect();
    let expected = [
        ("", false),
        ("boxed", true),
        ("maybe", true),
        ("absent", false),
        ("array", false),
        ("array.0", true),
        ("array.1", true),
        ("list", false),
        ("list.0", true),
        ("list.1", true),
        ("list.2", true),
        ("tapped", true),
    ];
    assert_eq!(listed, expected.map(|(p, r)| (p.to_owned(), r)));

    assert_eq!(resolve(&h, Side::Student, "list.2").unwrap().tap, h.list[2].own_tap());
    assert_eq!(resolve(&h, Side::Student, "boxed").unwrap().tap, h.boxed.own_tap());
    let err = resolve(&h, Side::Teacher, "list.3").unwrap_err();
    assert!(matches!(err, DistillError::Path(PathError::IndexOutOfRange { index: 3, len: 3, .. })), "{err:?}");
    let err = resolve(&h, Side::Teacher, "absent.weight").unwrap_err();
    assert!(matches!(err, DistillError::Path(PathError::UnknownPath { .. })), "{err:?}");
}
