//! Which samples each rank trains on in each epoch.

use crate::error::DdpError;

/// What happens to the samples left over when the data set does not split evenly over the ranks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tail {
    /// Repeat samples from the start of the epoch's order until every rank has the same count
    /// (each rank gets `ceil(len / world_size)`; at most `world_size - 1` samples are seen twice).
    /// PyTorch's `DistributedSampler` default.
    #[default]
    Pad,
    /// Leave out the last `len % world_size` samples of the epoch's order (each rank gets
    /// `floor(len / world_size)`).
    Drop,
}

/// Gives each rank its own shard of a data set's indices, epoch by epoch, like PyTorch's
/// `DistributedSampler`: every rank computes the same global order from its seed value and the epoch
/// (a shuffle, or `0..len`), evens it out by [`Tail`], and takes every `world_size`-th index
/// starting at its rank.
///
/// With a global batch of `B` made of `B / world_size` samples per rank, the ranks' i-th batches
/// together hold exactly positions `i·B .. (i+1)·B` of the global order, the batch a single process
/// would take, so data-parallel training sees the same samples per step as one process would.
///
/// The shuffle is this crate's own (SplitMix64 and Fisher–Yates), identical on every platform and
/// independent of libtorch's random state; it is not the order `torch.randperm` would give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedSampler {
    len: usize,
    rank: usize,
    world_size: usize,
    seed: u64,
    shuffle: bool,
    tail: Tail,
}

impl DistributedSampler {
    /// A shuffling, padding sampler with seed 0 over `len` samples for `rank` of `world_size`.
    pub fn new(len: usize, rank: usize, world_size: usize) -> Result<Self, DdpError> {
        if world_size == 0 || rank >= world_size {
            return Err(DdpError::RankOutOfRange { what: "rank", rank, world_size });
        }
        Ok(Self { len, rank, world_size, seed: 0, shuffle: true, tail: Tail::Pad })
    }

    /// A sampler for this process's rank in `group`.
    pub fn for_group(len: usize, group: &crate::ProcessGroup) -> Result<Self, DdpError> {
        Self::new(len, group.rank(), group.world_size())
    }

    /// Sets the shuffling seed (every rank must use the same).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Shuffles each epoch (the default) or keeps `0..len`.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Sets what happens to the leftover samples.
    pub fn tail(mut self, tail: Tail) -> Self {
        self.tail = tail;
        self
    }

    /// How many indices each rank gets per epoch.
    pub fn samples_per_rank(&self) -> usize {
        match self.tail {
            Tail::Pad => self.len.div_ceil(self.world_size),
            Tail::Drop => self.len / self.world_size,
        }
    }

    /// The whole epoch's order over all ranks, evened out by the tail rule: its length is
    /// `samples_per_rank() * world_size`.
    pub fn global_order(&self, epoch: u64) -> Vec<i64> {
        let mut order: Vec<i64> = (0..self.len as i64).collect();
        if self.shuffle {
            let mut rng = SplitMix64(self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for i in (1..order.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        let total = self.samples_per_rank() * self.world_size;
        if order.is_empty() {
            return order;
        }
        let mut k = 0;
        while order.len() < total {
            order.push(order[k]);
            k += 1;
        }
        order.truncate(total);
        order
    }

    /// This rank's indices for `epoch`, in training order.
    pub fn indices(&self, epoch: u64) -> Vec<i64> {
        self.global_order(epoch).into_iter().skip(self.rank).step_by(self.world_size).collect()
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): a small, well-mixed generator, stable across platforms.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(len: usize, world: usize, tail: Tail, seed: u64, epoch: u64) -> Vec<Vec<i64>> {
        (0..world)
            .map(|r| DistributedSampler::new(len, r, world).unwrap().seed(seed).tail(tail).indices(epoch))
            .collect()
    }

    #[test]
    fn shards_are_disjoint_and_cover_an_even_split() {
        let parts = shards(12, 3, Tail::Pad, 7, 0);
        let mut all: Vec<i64> = parts.concat();
        all.sort();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
        assert!(parts.iter().all(|p| p.len() == 4));
    }

    #[test]
    fn padding_repeats_the_start_of_the_order_and_drop_leaves_the_end_out() {
        let sampler = DistributedSampler::new(10, 0, 4).unwrap().seed(3);
        let order = sampler.global_order(1);
        assert_eq!(order.len(), 12);
        assert_eq!(&order[10..], &order[..2]);
        let mut seen = order[..10].to_vec();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());

        let dropped = sampler.clone().tail(Tail::Drop);
        assert_eq!(dropped.samples_per_rank(), 2);
        assert_eq!(dropped.global_order(1), order[..8].to_vec());
        assert_eq!(shards(10, 4, Tail::Drop, 3, 1).concat().len(), 8);
    }

    #[test]
    fn rank_shards_interleave_the_global_order() {
        let parts = shards(16, 2, Tail::Pad, 11, 2);
        let order = DistributedSampler::new(16, 0, 2).unwrap().seed(11).global_order(2);
        // Batch i of 2 per rank = positions 4i..4i+4 of the global order.
        for i in 0..4 {
            let mut ranks = [&parts[0][2 * i..2 * i + 2], &parts[1][2 * i..2 * i + 2]].concat();
            let mut global = order[4 * i..4 * i + 4].to_vec();
            ranks.sort();
            global.sort();
            assert_eq!(ranks, global);
        }
    }

    #[test]
    fn same_seed_same_order_and_epochs_differ() {
        let a = DistributedSampler::new(100, 0, 1).unwrap().seed(5);
        assert_eq!(a.indices(3), a.clone().indices(3));
        assert_ne!(a.indices(3), a.indices(4));
        assert_ne!(a.indices(3), a.clone().seed(6).indices(3));
        assert_eq!(a.clone().shuffle(false).indices(9), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn tiny_and_empty_data_sets() {
        assert_eq!(shards(1, 3, Tail::Pad, 0, 0), vec![vec![0], vec![0], vec![0]]);
        assert_eq!(shards(1, 3, Tail::Drop, 0, 0), vec![Vec::<i64>::new(); 3]);
        assert_eq!(shards(0, 2, Tail::Pad, 0, 0), vec![Vec::<i64>::new(); 2]);
        assert!(DistributedSampler::new(5, 2, 2).is_err());
    }
}
