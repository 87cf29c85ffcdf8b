//! Buckets: many tensors flattened into a few contiguous buffers, so that a collective runs once
//! per bucket instead of once per tensor.

use tch::{Kind, Tensor};

use crate::error::DdpError;

/// Where one tensor sits in its bucket's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The tensor's index in the list the buckets were planned for.
    pub index: usize,
    pub offset: i64,
    pub numel: i64,
}

/// A buffer holding a run of consecutive tensors of one kind and device, and optionally one presence
/// flag per tensor after them.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub flat: Tensor,
    pub slots: Vec<Slot>,
    /// How many elements of `flat` hold the tensors; the flags, if any, follow.
    values: i64,
    flagged: bool,
}

/// Splits `tensors` into buckets of consecutive tensors of one kind and device, each closed once it
/// reaches `cap_bytes` (a tensor larger than the cap gets a bucket of its own). With `flags`, each
/// buffer ends with one element per tensor that [`gather`](Bucket::gather) sets to 1 where it had a
/// tensor and 0 where it had none: summed across ranks with the values, it tells which tensors no
/// rank had, in the same collective.
pub(crate) fn plan(tensors: &[Tensor], cap_bytes: usize, flags: bool) -> Result<Vec<Bucket>, DdpError> {
    let mut buckets = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut bytes = 0usize;
    let mut current: Option<(Kind, tch::Device)> = None;
    let close = |slots: &mut Vec<Slot>,
                 current: Option<(Kind, tch::Device)>,
                 buckets: &mut Vec<Bucket>|
     -> Result<(), DdpError> {
        if let (false, Some((kind, device))) = (slots.is_empty(), current) {
            let values = slots.iter().map(|s| s.numel).sum::<i64>();
            let numel = values + if flags { slots.len() as i64 } else { 0 };
            let flat = Tensor::f_zeros([numel], (kind, device))?;
            buckets.push(Bucket { flat, slots: std::mem::take(slots), values, flagged: flags });
        }
        Ok(())
    };
    for (index, tensor) in tensors.iter().enumerate() {
        let key = (tensor.f_kind()?, tensor.device());
        let size = tensor.numel() * key.0.elt_size_in_bytes();
        if current != Some(key) || (bytes > 0 && bytes.saturating_add(size) > cap_bytes) {
            close(&mut slots, current, &mut buckets)?;
            current = Some(key);
            bytes = 0;
        }
        let offset = slots.last().map_or(0, |s| s.offset + s.numel);
        slots.push(Slot { index, offset, numel: tensor.numel() as i64 });
        bytes = bytes.saturating_add(size);
    }
    close(&mut slots, current, &mut buckets)?;
    Ok(buckets)
}

impl Bucket {
    /// The part of the buffer that belongs to `slot`, shaped like `like`.
    pub fn view(&self, slot: &Slot, like: &Tensor) -> Result<Tensor, DdpError> {
        Ok(self.flat.f_narrow(0, slot.offset, slot.numel)?.f_view_as(like)?)
    }

    /// The part of the buffer that holds the tensors' values (all of it in a bucket without flags).
    pub fn values(&self) -> Result<Tensor, DdpError> {
        Ok(self.flat.f_narrow(0, 0, self.values)?)
    }

    /// For each slot, in order, whether its flag is above zero: after a sum across ranks, whether any
    /// rank had a tensor for it. `None` for a bucket planned without flags.
    pub fn flags(&self) -> Result<Option<Vec<bool>>, DdpError> {
        if !self.flagged {
            return Ok(None);
        }
        let flags = self.flat.f_narrow(0, self.values, self.slots.len() as i64)?.f_to_kind(Kind::Double)?;
        // A sum of ones and zeros, rounded in a half-precision buffer for very large groups, is
        // above zero exactly when one rank set its flag.
        Ok(Some(Vec::<f64>::try_from(&flags)?.into_iter().map(|flag| flag > 0.0).collect()))
    }

    /// Copies each slot's tensor (from `source`; zeros where it gives none) into the buffer, and sets
    /// its flag, if the bucket has flags, to whether `source` gave one.
    pub fn gather(&self, mut source: impl FnMut(usize) -> Result<Option<Tensor>, DdpError>) -> Result<(), DdpError> {
        let mut flags = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let mut part = self.flat.f_narrow(0, slot.offset, slot.numel)?;
            match source(slot.index)? {
                Some(tensor) => {
                    part.f_copy_(&tensor.f_reshape([-1])?)?;
                    flags.push(1.0);
                }
                None => {
                    let _ = part.f_zero_()?;
                    flags.push(0.0);
                }
            }
        }
        if self.flagged {
            let mut part = self.flat.f_narrow(0, self.values, self.slots.len() as i64)?;
            part.f_copy_(&Tensor::from_slice(&flags))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(sizes: &[i64]) -> Vec<Tensor> {
        sizes.iter().map(|&n| Tensor::zeros([n], (Kind::Float, tch::Device::Cpu))).collect()
    }

    fn layout(buckets: &[Bucket]) -> Vec<Vec<(usize, i64, i64)>> {
        buckets.iter().map(|b| b.slots.iter().map(|s| (s.index, s.offset, s.numel)).collect()).collect()
    }

    #[test]
    fn buckets_close_at_the_cap_and_keep_order() {
        // 4 bytes per element, a cap of 40 bytes = 10 elements.
        let buckets = plan(&f32s(&[4, 4, 4, 20, 1]), 40, false).unwrap();
        assert_eq!(
            layout(&buckets),
            vec![vec![(0, 0, 4), (1, 4, 4)], vec![(2, 0, 4)], vec![(3, 0, 20)], vec![(4, 0, 1)]]
        );
        assert_eq!(buckets.iter().map(|b| b.flat.numel()).collect::<Vec<_>>(), vec![8, 4, 20, 1]);
    }

    #[test]
    fn a_change_of_kind_starts_a_bucket() {
        let mut tensors = f32s(&[2, 2]);
        tensors.insert(1, Tensor::zeros([3], (Kind::Int64, tch::Device::Cpu)));
        let buckets = plan(&tensors, 1 << 20, false).unwrap();
        assert_eq!(layout(&buckets), vec![vec![(0, 0, 2)], vec![(1, 0, 3)], vec![(2, 0, 2)]]);
        assert_eq!(buckets[1].flat.kind(), Kind::Int64);
    }

    #[test]
    fn gather_and_view_round_trip() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[5.0f32]);
        let buckets = plan(&[a.shallow_clone(), b.shallow_clone(), b.shallow_clone()], 1 << 20, false).unwrap();
        assert_eq!(buckets.len(), 1);
        let bucket = &buckets[0];
        bucket.gather(|i| Ok((i < 2).then(|| [&a, &b][i].shallow_clone()))).unwrap();
        assert_eq!(Vec::<f32>::try_from(&bucket.flat).unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 0.0]);
        assert_eq!(bucket.view(&bucket.slots[0], &a).unwrap(), a);
        assert_eq!(bucket.flags().unwrap(), None);
    }

    #[test]
    fn flags_follow_the_values_and_say_which_slots_had_a_tensor() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]);
        let buckets = plan(&[a.shallow_clone(), a.shallow_clone(), a.shallow_clone()], 1 << 20, true).unwrap();
        let bucket = &buckets[0];
        bucket.gather(|i| Ok((i != 1).then(|| a.shallow_clone()))).unwrap();
        assert_eq!(Vec::<f32>::try_from(&bucket.flat).unwrap(), vec![1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0]);
        assert_eq!(bucket.values().unwrap().size(), [6]);
        assert_eq!(bucket.flags().unwrap(), Some(vec![true, false, true]));
    }
}
