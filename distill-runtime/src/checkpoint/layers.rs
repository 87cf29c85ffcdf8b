//! The variables a model's layers hold, found by walking its module tree: what makes a variable of a
//! `VarStore` the student's (or the teacher's) by identity, not by name.

use tch::Tensor;

use crate::adapter::{Conv1x1Adapter, Conv2DAdapter, InvertedConv2DAdapter, LinearAdapter};
use crate::module::{join, Distillable};
use crate::nn;

/// One tensor a layer holds, and where: the layer's path in the tree and the tensor's role.
pub(super) struct LayerTensor {
    pub layer: String,
    pub role: &'static str,
    pub tensor: Tensor,
}

/// Every tensor held by a layer of `root`'s tree whose type is known (the layers of `distill::nn`,
/// the adapters, tch's own layers), depth first.
pub(super) fn layer_tensors(root: &dyn Distillable) -> Vec<LayerTensor> {
    let mut out = Vec::new();
    collect(root, "", &mut out);
    out
}

fn collect(module: &dyn Distillable, path: &str, out: &mut Vec<LayerTensor>) {
    if let Some(any) = module.as_any() {
        let mut push = |role: &'static str, tensor: &Tensor| {
            out.push(LayerTensor { layer: path.to_owned(), role, tensor: tensor.shallow_clone() })
        };
        let mut weight_bias = |ws: &Tensor, bs: Option<&Tensor>| {
            push("weight", ws);
            if let Some(bs) = bs {
                push("bias", bs);
            }
        };
        if let Some(conv) = any.downcast_ref::<nn::Conv1D>() {
            weight_bias(&conv.ws, conv.bs.as_ref());
        } else if let Some(conv) = any.downcast_ref::<nn::Conv2D>() {
            weight_bias(&conv.ws, conv.bs.as_ref());
        } else if let Some(conv) = any.downcast_ref::<nn::Conv3D>() {
            weight_bias(&conv.ws, conv.bs.as_ref());
        } else if let Some(linear) = any.downcast_ref::<nn::Linear>() {
            weight_bias(&linear.ws, linear.bs.as_ref());
        } else if let Some(bn) = any.downcast_ref::<nn::BatchNorm>() {
            batch_norm(bn, out, path);
        } else if let Some(norm) = any.downcast_ref::<nn::LayerNorm>() {
            optional_affine(norm.ws.as_ref(), norm.bs.as_ref(), out, path);
        } else if let Some(embedding) = any.downcast_ref::<nn::Embedding>() {
            weight_bias(&embedding.ws, None);
        } else if let Some(adapter) = any.downcast_ref::<Conv2DAdapter>() {
            weight_bias(adapter.weight(), None);
        } else if let Some(adapter) = any.downcast_ref::<InvertedConv2DAdapter>() {
            weight_bias(adapter.weight(), None);
        } else if let Some(adapter) = any.downcast_ref::<Conv1x1Adapter>() {
            weight_bias(adapter.weight(), None);
        } else if let Some(adapter) = any.downcast_ref::<LinearAdapter>() {
            weight_bias(adapter.weight(), None);
        } else {
            tch_layer(any, out, path);
        }
    }
    module.visit_children(&mut |child| collect(child.module, &join(path, child.name), out));
}

/// tch's own layers, held directly or inside a `Tap`.
fn tch_layer(any: &dyn std::any::Any, out: &mut Vec<LayerTensor>, path: &str) {
    let mut push = |role: &'static str, tensor: Option<&Tensor>| {
        if let Some(tensor) = tensor {
            out.push(LayerTensor { layer: path.to_owned(), role, tensor: tensor.shallow_clone() });
        }
    };
    if let Some(conv) = any.downcast_ref::<tch::nn::Conv1D>() {
        push("weight", Some(&conv.ws));
        push("bias", conv.bs.as_ref());
    } else if let Some(conv) = any.downcast_ref::<tch::nn::Conv2D>() {
        push("weight", Some(&conv.ws));
        push("bias", conv.bs.as_ref());
    } else if let Some(conv) = any.downcast_ref::<tch::nn::Conv3D>() {
        push("weight", Some(&conv.ws));
        push("bias", conv.bs.as_ref());
    } else if let Some(linear) = any.downcast_ref::<tch::nn::Linear>() {
        push("weight", Some(&linear.ws));
        push("bias", linear.bs.as_ref());
    } else if let Some(bn) = any.downcast_ref::<tch::nn::BatchNorm>() {
        push("weight", bn.ws.as_ref());
        push("bias", bn.bs.as_ref());
        push("running_mean", Some(&bn.running_mean));
        push("running_var", Some(&bn.running_var));
    } else if let Some(norm) = any.downcast_ref::<tch::nn::LayerNorm>() {
        push("weight", norm.ws.as_ref());
        push("bias", norm.bs.as_ref());
    } else if let Some(norm) = any.downcast_ref::<tch::nn::GroupNorm>() {
        push("weight", norm.ws.as_ref());
        push("bias", norm.bs.as_ref());
    } else if let Some(embedding) = any.downcast_ref::<tch::nn::Embedding>() {
        push("weight", Some(&embedding.ws));
    }
}

fn batch_norm(bn: &nn::BatchNorm, out: &mut Vec<LayerTensor>, path: &str) {
    optional_affine(bn.ws.as_ref(), bn.bs.as_ref(), out, path);
    for (role, tensor) in [("running_mean", &bn.running_mean), ("running_var", &bn.running_var)] {
        out.push(LayerTensor { layer: path.to_owned(), role, tensor: tensor.shallow_clone() });
    }
}

fn optional_affine(ws: Option<&Tensor>, bs: Option<&Tensor>, out: &mut Vec<LayerTensor>, path: &str) {
    for (role, tensor) in [("weight", ws), ("bias", bs)] {
        if let Some(tensor) = tensor {
            out.push(LayerTensor { layer: path.to_owned(), role, tensor: tensor.shallow_clone() });
        }
    }
}

/// Whether `a` and `b` are the same variable: the same storage, offset, sizes and strides.
pub(super) fn same_variable(a: &Tensor, b: &Tensor) -> bool {
    a.data_ptr() == b.data_ptr() && a.f_is_set_to(b).unwrap_or(false)
}
