//! Devices: checking that a device exists in this process before a model is put on it.
//!
//! Where things live: a distillation runs on the student's device. Teacher outputs and captures
//! are moved to the device of the student's output (the teacher may live elsewhere, e.g. on the
//! CPU or another GPU); a teacher cache is held in CPU memory and each batch read from it is moved
//! there too; adapters are created on their `VarStore`'s device, and fitted adapters on the device
//! of the weights they fit; checkpoints are read into the variables wherever those live.
//!
//! tch panics (or libtorch aborts) when a tensor is put on a CUDA device the process does not
//! have; [`check_device`] and [`to_device`] report it as [`DistillError::NoCudaDevice`] instead.

use tch::nn::VarStore;
use tch::Device;

use crate::error::{DistillError, Result};

/// How many CUDA devices this process sees (0 without a GPU, a driver, or a libtorch with CUDA).
pub fn cuda_device_count() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

/// Checks that this process can put tensors on `device`: the CPU always, `Device::Cuda(i)` when it
/// sees more than `i` CUDA devices.
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::device::{check_device, cuda_device_count};
/// use tch::Device;
/// assert!(check_device(Device::Cpu).is_ok());
/// let missing = Device::Cuda(cuda_device_count());
/// assert!(check_device(missing).unwrap_err().to_string().starts_with("no CUDA device is available"));
/// ```
///
/// # Errors
/// [`DistillError::NoCudaDevice`] naming the device and how many this process has.
pub fn check_device(device: Device) -> Result<()> {
    if let Device::Cuda(index) = device {
        let available = cuda_device_count();
        if index >= available {
            return Err(DistillError::NoCudaDevice { device: index, available });
        }
    }
    Ok(())
}

/// Moves every variable of `vs` (a model, with its adapters when they were built in it) to
/// `device`, and makes it the device of variables created in `vs` later.
///
/// # Errors
/// [`DistillError::NoCudaDevice`] when the device does not exist (nothing is moved then);
/// [`DistillError::Torch`] when libtorch fails to move a variable (e.g. out of device memory).
pub fn to_device(vs: &mut VarStore, device: Device) -> Result<()> {
    check_device(device)?;
    tch::no_grad(|| -> Result<()> {
        for (_, mut variable) in vs.variables() {
            if variable.device() != device {
                let moved = variable.f_to_device(device)?;
                variable.f_set_data(&moved)?;
            }
        }
        Ok(())
    })?;
    // Every variable is on `device` now, so this only records the device for new variables.
    vs.set_device(device);
    Ok(())
}
