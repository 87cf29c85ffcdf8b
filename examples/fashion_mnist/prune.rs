//! Pruning glue: every conv keeps the filters with the largest L1 norm; the next conv's input
//! channels, each batch norm and the classifier's input are sliced to match.

use distill::nn;
use tch::Tensor;

use crate::model::{conv_config, Block, Net, STRIDES};
use shim::{l1_keep, prune_batch_norm, prune_conv2d, prune_linear};

/// A pruned copy of `teacher` under `p`, keeping `keep` (a ratio in (0, 1]) of every conv's filters.
/// Also returns, per block, the teacher channels that were kept (ascending).
pub fn prune_net(teacher: &Net, p: &nn::Path, keep: f64) -> Net {
    let features = p / "features";
    let mut blocks = nn::Seq::new();
    let mut kept_in: Option<Tensor> = None;
    for (i, block) in teacher.features.iter().enumerate() {
        let b = &features / i;
        let kept = l1_keep(&block.conv, keep);
        blocks.push(Block {
            conv: prune_conv2d(&b / "conv", &block.conv, &kept, kept_in.as_ref(), conv_config(STRIDES[i])),
            bn: prune_batch_norm(&b / "bn", &block.bn, &kept),
        });
        kept_in = Some(kept);
    }
    let classifier = prune_linear(p / "classifier", &teacher.classifier, None, kept_in.as_ref());
    Net { features: blocks, classifier }
}

/// TEMPORARY stand-ins for `distill::prune` (issue 3), replaced when it lands on main.
mod shim {
    use distill::nn;
    use tch::{Kind, Tensor};

    fn copy(dst: &Tensor, src: &Tensor) {
        tch::no_grad(|| dst.shallow_clone().copy_(src));
    }

    /// Indices (ascending) of the `round(ratio · n)` filters with the largest L1 norm.
    pub fn l1_keep(conv: &nn::Conv2D, ratio: f64) -> Tensor {
        let out = conv.ws.size()[0];
        let k = ((out as f64 * ratio).round() as i64).clamp(1, out);
        let norms = conv.ws.abs().sum_dim_intlist([1, 2, 3].as_slice(), false, Kind::Float);
        let (_, idx) = norms.topk(k, 0, true, true);
        idx.sort(0, false).0
    }

    pub fn prune_conv2d<'a>(
        p: nn::Path<'a>,
        src: &nn::Conv2D,
        out: &Tensor,
        inp: Option<&Tensor>,
        cfg: nn::ConvConfig,
    ) -> nn::Conv2D {
        let mut w = src.ws.index_select(0, out);
        if let Some(inp) = inp {
            w = w.index_select(1, inp);
        }
        let s = w.size();
        let conv = nn::conv2d(p, s[1], s[0], s[2], cfg);
        copy(&conv.ws, &w);
        if let (Some(dst), Some(b)) = (&conv.bs, &src.bs) {
            copy(dst, &b.index_select(0, out));
        }
        conv
    }

    pub fn prune_batch_norm<'a>(p: nn::Path<'a>, src: &nn::BatchNorm, keep: &Tensor) -> nn::BatchNorm {
        let bn = nn::batch_norm2d(p, keep.size()[0], Default::default());
        copy(&bn.running_mean, &src.running_mean.index_select(0, keep));
        copy(&bn.running_var, &src.running_var.index_select(0, keep));
        if let (Some(d), Some(s)) = (&bn.ws, &src.ws) {
            copy(d, &s.index_select(0, keep));
        }
        if let (Some(d), Some(s)) = (&bn.bs, &src.bs) {
            copy(d, &s.index_select(0, keep));
        }
        bn
    }

    pub fn prune_linear<'a>(p: nn::Path<'a>, src: &nn::Linear, out: Option<&Tensor>, inp: Option<&Tensor>) -> nn::Linear {
        let mut w = src.ws.shallow_clone();
        let mut b = src.bs.as_ref().map(Tensor::shallow_clone);
        if let Some(out) = out {
            w = w.index_select(0, out);
            b = b.map(|b| b.index_select(0, out));
        }
        if let Some(inp) = inp {
            w = w.index_select(1, inp);
        }
        let s = w.size();
        let lin = nn::linear(p, s[1], s[0], nn::LinearConfig { bias: b.is_some(), ..Default::default() });
        copy(&lin.ws, &w);
        if let (Some(d), Some(b)) = (&lin.bs, &b) {
            copy(d, b);
        }
        lin
    }
}
