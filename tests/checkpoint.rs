//! `distill::nn` layers create the same variables as tch's, so checkpoints load unchanged.

use distill::nn::{self as dnn, Module, ModuleT, VarStore};
use tch::nn::{self as tnn, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// The same architecture on tch layers and on distill layers, created under the same paths.
macro_rules! model {
    ($name:ident, $nn:ident, $relu:expr) => {
        struct $name {
            conv: $nn::Conv2D,
            bn: $nn::BatchNorm,
            norm: $nn::LayerNorm,
            fc: $nn::Linear,
            emb: $nn::Embedding,
        }

        impl $name {
            fn new(vs: &VarStore) -> Self {
                let p = vs.root();
                $name {
                    conv: $nn::conv2d(&p / "features" / 0 / "conv", 1, 4, 3, Default::default()),
                    bn: $nn::batch_norm2d(&p / "features" / 0 / "bn", 4, Default::default()),
                    norm: $nn::layer_norm(&p / "norm", vec![4], Default::default()),
                    fc: $nn::linear(&p / "fc", 4, 3, Default::default()),
                    emb: $nn::embedding(&p / "emb", 5, 3, Default::default()),
                }
            }

            fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
                let h = xs.apply(&self.conv).apply_t(&self.bn, train);
                let h = $relu(h).mean_dim([2, 3].as_slice(), false, Kind::Float);
                h.apply(&self.norm).apply(&self.fc) + self.emb.forward(&Tensor::from_slice(&[1i64, 3]))
            }
        }
    };
}

model!(TchModel, tnn, |h: Tensor| h.relu());
model!(DistillModel, dnn, |h: Tensor| h.apply(&dnn::relu()));

#[test]
fn a_tch_checkpoint_loads_into_distill_layers_and_back() {
    let dir = std::env::temp_dir().join(format!("distill-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let xs = Tensor::randn([2, 1, 5, 5], (Kind::Float, Device::Cpu));

    // Train the tch model a little so that running statistics and weights are not the defaults.
    let tch_vs = VarStore::new(Device::Cpu);
    let tch_model = TchModel::new(&tch_vs);
    let mut opt = tnn::Sgd::default().build(&tch_vs, 0.1).unwrap();
    for _ in 0..3 {
        opt.backward_step(&tch_model.forward(&xs, true).square().mean(Kind::Float));
    }
    let expected = tch::no_grad(|| tch_model.forward(&xs, false));

    for file in ["model.safetensors", "model.ot"] {
        let path = dir.join(file);
        tch_vs.save(&path).unwrap();
        let mut ours = VarStore::new(Device::Cpu);
        let model = DistillModel::new(&ours);
        let before = tch::no_grad(|| model.forward(&xs, false));
        assert!(!before.allclose(&expected, 1e-3, 1e-3, false), "{file}: fresh weights already equal");
        ours.load(&path).unwrap();
        let got = tch::no_grad(|| model.forward(&xs, false));
        assert!(got.allclose(&expected, 1e-6, 1e-6, false), "{file}: outputs differ after loading");
        let mut names: Vec<String> = ours.variables().into_keys().collect();
        names.sort();
        let mut tch_names: Vec<String> = tch_vs.variables().into_keys().collect();
        tch_names.sort();
        assert_eq!(names, tch_names, "{file}: variable names");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn layers_are_tch_modules() {
    fn takes_module<M: Module>(_: &M) {}
    fn takes_module_t<M: ModuleT>(_: &M) {}
    let vs = VarStore::new(Device::Cpu);
    takes_module(&dnn::conv2d(vs.root() / "c", 1, 1, 1, Default::default()));
    takes_module(&dnn::linear(vs.root() / "l", 1, 1, Default::default()));
    takes_module(&dnn::relu());
    takes_module_t(&dnn::batch_norm1d(vs.root() / "b", 1, Default::default()));
    takes_module_t(&dnn::dropout(0.5));
    takes_module_t(&dnn::seq().add(dnn::gelu()));
    takes_module_t(&dnn::Seq::<dnn::Tanh>::new());
    takes_module_t(&dnn::tap(tnn::linear(vs.root() / "t", 1, 1, Default::default())));
}
