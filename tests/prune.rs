//! The layer pruning helpers of `distill::prune`: a pruned copy computes exactly the kept channels
//! of its source, following the tensors the source holds rather than what its config claims.

use distill::nn::{self, BatchNorm, BatchNormConfig, Conv2D, ConvConfig, ConvConfigND, Module, ModuleT, VarStore};
use distill::prune::{prune_batch_norm, prune_conv2d};
use distill::vision::prune::prune_depthwise_conv2d;
use tch::{Device, Kind, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

/// The 2-D config tch derives from `config` (1×1 kernels, so one value per dimension is enough).
fn conv_config(config: ConvConfig) -> ConvConfigND<[i64; 2]> {
    ConvConfigND {
        stride: [config.stride; 2],
        padding: [config.padding; 2],
        dilation: [config.dilation; 2],
        groups: config.groups,
        bias: config.bias,
        ws_init: config.ws_init,
        bs_init: config.bs_init,
        padding_mode: config.padding_mode,
    }
}

#[test]
fn a_pruned_conv_keeps_the_bias_its_source_holds_whatever_its_config_says() {
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let keep = [3, 0];
    let xs = Tensor::randn([2, 2, 3, 3], (Kind::Float, Device::Cpu));
    let kept = |full: Tensor| full.index_select(1, &Tensor::from_slice(&keep));

    // A conv with a bias, wrapped with a config that says it has none.
    let with_bias = tch::nn::conv2d(vs.root() / "a", 2, 4, 1, Default::default());
    let _ = tch::no_grad(|| with_bias.bs.as_ref().unwrap().shallow_clone().fill_(3.0));
    let no_bias = ConvConfig { bias: false, ..Default::default() };
    let source = Conv2D::from_tch_with_config(with_bias, conv_config(no_bias));
    let pruned = prune_conv2d(vs.root() / "pa", &source, &keep, None).unwrap();
    assert!(pruned.bs.is_some());
    assert_eq!(max_abs_diff(&pruned.forward(&xs), &kept(source.forward(&xs))), 0.0);

    // A conv without one, wrapped with a config that says it has one (initialised away from 0).
    let without = tch::nn::conv2d(vs.root() / "b", 2, 4, 1, no_bias);
    let claims = ConvConfig { bs_init: tch::nn::Init::Const(5.0), ..Default::default() };
    let source = Conv2D::from_tch_with_config(without, conv_config(claims));
    let pruned = prune_conv2d(vs.root() / "pb", &source, &keep, None).unwrap();
    assert!(pruned.bs.is_none());
    assert_eq!(max_abs_diff(&pruned.forward(&xs), &kept(source.forward(&xs))), 0.0);
    let mut names: Vec<String> = vs.variables().into_keys().filter(|name| name.starts_with('p')).collect();
    names.sort();
    assert_eq!(names, ["pa.bias", "pa.weight", "pb.weight"]);
}

#[test]
fn a_pruned_batch_norm_is_affine_as_its_source_is_whatever_its_config_says() {
    tch::manual_seed(2);
    let vs = VarStore::new(Device::Cpu);
    let keep = [2, 1];
    let xs = Tensor::randn([3, 4, 2, 2], (Kind::Float, Device::Cpu));
    let kept = |full: Tensor| full.index_select(1, &Tensor::from_slice(&keep));
    let input = xs.index_select(1, &Tensor::from_slice(&keep));
    let set = |tensor: Option<&Tensor>, value: f64| {
        let _ = tch::no_grad(|| tensor.unwrap().shallow_clone().fill_(value));
    };

    // Affine, wrapped with a config that says it is not.
    let affine = tch::nn::batch_norm2d(vs.root() / "a", 4, Default::default());
    set(affine.ws.as_ref(), 3.0);
    set(affine.bs.as_ref(), -2.0);
    let not_affine = BatchNormConfig { affine: false, ..Default::default() };
    let source = BatchNorm::from_tch_with_config(affine, not_affine);
    let pruned = prune_batch_norm(vs.root() / "pa", &source, &keep).unwrap();
    assert!(pruned.ws.is_some() && pruned.bs.is_some());
    assert_eq!(max_abs_diff(&pruned.forward_t(&input, false), &kept(source.forward_t(&xs, false))), 0.0);

    // Not affine, wrapped with a config that says it is (initialised away from the identity).
    let plain = tch::nn::batch_norm2d(vs.root() / "b", 4, not_affine);
    let claims = BatchNormConfig {
        ws_init: tch::nn::Init::Const(7.0),
        bs_init: tch::nn::Init::Const(5.0),
        ..Default::default()
    };
    let source = BatchNorm::from_tch_with_config(plain, claims);
    let pruned = prune_batch_norm(vs.root() / "pb", &source, &keep).unwrap();
    assert!(pruned.ws.is_none() && pruned.bs.is_none());
    assert_eq!(max_abs_diff(&pruned.forward_t(&input, false), &kept(source.forward_t(&xs, false))), 0.0);

    // Half affine (its shift removed): the copy's shift is 0, as the source computes without one.
    let mut half = nn::batch_norm2d(
        vs.root() / "c",
        4,
        BatchNormConfig { bs_init: tch::nn::Init::Const(5.0), ..Default::default() },
    );
    set(half.ws.as_ref(), 3.0);
    half.bs = None;
    let pruned = prune_batch_norm(vs.root() / "pc", &half, &keep).unwrap();
    assert_eq!(max_abs_diff(&pruned.forward_t(&input, false), &kept(half.forward_t(&xs, false))), 0.0);
}

#[test]
fn a_pruned_depthwise_conv_keeps_the_bias_its_source_holds_whatever_its_config_says() {
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let keep = [3, 0];
    let xs = Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu));
    let depthwise = ConvConfig { groups: 4, ..Default::default() };
    let with_bias = tch::nn::conv2d(vs.root() / "a", 4, 4, 1, depthwise);
    let _ = tch::no_grad(|| with_bias.bs.as_ref().unwrap().shallow_clone().fill_(3.0));
    let source = Conv2D::from_tch_with_config(with_bias, conv_config(ConvConfig { bias: false, ..depthwise }));
    let pruned = prune_depthwise_conv2d(vs.root() / "pa", &source, &keep).unwrap();
    assert!(pruned.bs.is_some());
    // Pruning a depthwise conv's input prunes its output: the kept channels in, the same out.
    let kept = |full: Tensor| full.index_select(1, &Tensor::from_slice(&keep));
    assert_eq!(max_abs_diff(&pruned.forward(&kept(xs.shallow_clone())), &kept(source.forward(&xs))), 0.0);
}
