//! Pruning glue: every conv keeps the filters with the largest L1 norm (`distill::prune`); the next
//! conv's input channels, each batch norm and the classifier's input are sliced to match.

use distill::nn;
use distill::prune::{keep_count, l1_keep, prune_batch_norm, prune_conv2d, prune_linear};
use distill::DistillError;

use crate::model::{Block, Net};

/// A pruned copy of `teacher` under `p`, keeping `ratio` (in (0, 1]) of every conv's filters.
pub fn prune_net(teacher: &Net, p: &nn::Path, ratio: f64) -> Result<Net, DistillError> {
    let features = p / "features";
    let mut blocks = nn::Seq::new();
    let mut kept_in: Option<Vec<i64>> = None;
    for (i, block) in teacher.features.iter().enumerate() {
        let b = &features / i;
        let kept = l1_keep(&block.conv.ws, keep_count(block.conv.ws.size()[0], ratio)?)?;
        blocks.push(Block {
            conv: prune_conv2d(&b / "conv", &block.conv, &kept, kept_in.as_deref())?,
            bn: prune_batch_norm(&b / "bn", &block.bn, &kept)?,
        });
        kept_in = Some(kept);
    }
    let classifier = prune_linear(p / "classifier", &teacher.classifier, None, kept_in.as_deref())?;
    Ok(Net { features: blocks, classifier })
}
