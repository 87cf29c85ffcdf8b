//! The binding to the C++ shim (`csrc/shim.cpp`): the only module of this crate with `unsafe`.
//!
//! Each handle owns one reference to a c10d object and releases it on drop. Every shim function
//! returns a status and, on failure, a heap message, turned here into [`DdpError::Backend`] naming
//! the operation, or [`DdpError::OutOfMemory`] when an allocation failed.

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr;
use std::time::Duration;

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::DdpError;

#[repr(C)]
struct RawStore {
    _opaque: [u8; 0],
}

#[repr(C)]
struct RawGroup {
    _opaque: [u8; 0],
}

/// The shim's statuses (`csrc/shim.cpp` has the same values).
const OK: c_int = 0;
const ERROR: c_int = 1;
const OUT_OF_MEMORY: c_int = 2;

/// Where a shim function puts its message on failure.
type ErrorSlot = *mut *mut c_char;

extern "C" {
    fn ddp_free_message(message: *mut c_char);
    fn ddp_has_nccl() -> c_int;
    fn ddp_store_tcp(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawStore,
        error: ErrorSlot,
    ) -> c_int;
    fn ddp_store_prefixed(
        base: *const RawStore,
        prefix: *const c_char,
        out: *mut *mut RawStore,
        error: ErrorSlot,
    ) -> c_int;
    fn ddp_store_set(
        store: *const RawStore,
        key: *const c_char,
        value: *const u8,
        len: usize,
        error: ErrorSlot,
    ) -> c_int;
    fn ddp_store_get(
        store: *const RawStore,
        key: *const c_char,
        timeout_ms: i64,
        out: *mut *mut u8,
        len: *mut usize,
        error: ErrorSlot,
    ) -> c_int;
    fn ddp_store_free(store: *mut RawStore);
    fn ddp_group_gloo(
        store: *const RawStore,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        interfaces: *const *const c_char,
        n_interfaces: usize,
        hostname: *const c_char,
        threads: c_int,
        out: *mut *mut RawGroup,
        error: ErrorSlot,
    ) -> c_int;
    fn ddp_group_nccl(
        store: *const RawStore,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
        error: ErrorSlot,
    ) -> c_int;
    fn ddp_group_free(group: *mut RawGroup);
    fn ddp_broadcast(
        group: *mut RawGroup,
        tensor: *const C_tensor,
        root: c_int,
        timeout_ms: i64,
        error: ErrorSlot,
    ) -> c_int;
    fn ddp_allreduce_sum(
        group: *mut RawGroup,
        tensors: *const *const C_tensor,
        n: usize,
        timeout_ms: i64,
        error: ErrorSlot,
    ) -> c_int;
    fn ddp_barrier(group: *mut RawGroup, timeout_ms: i64, error: ErrorSlot) -> c_int;
    fn ddp_set_grad(param: *const C_tensor, grad: *const C_tensor, error: ErrorSlot) -> c_int;
    #[cfg(test)]
    fn ddp_raise_for_tests(kind: c_int, error: ErrorSlot) -> c_int;
}

/// Runs `call` with an error slot for the shim function it calls, and turns the status it returns
/// into a `Result`. The slot is valid for the call; the shim leaves NULL or a message in it.
fn call(op: &'static str, call: impl FnOnce(ErrorSlot) -> c_int) -> Result<(), DdpError> {
    let mut message = ptr::null_mut();
    let status = call(&mut message);
    check(op, status, message)
}

/// Turns a shim status and its message into a `Result`, freeing the message.
fn check(op: &'static str, status: c_int, message: *mut c_char) -> Result<(), DdpError> {
    let text = (!message.is_null()).then(|| {
        // SAFETY: a non-null message is a NUL-terminated string malloc'ed by the shim, read once
        // here and then released with the shim's matching free.
        let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
        // SAFETY: `message` came from the shim and is freed exactly once.
        unsafe { ddp_free_message(message) };
        text
    });
    match status {
        OK => Ok(()),
        // The shim could not allocate (its `new`, a copy, or a libtorch allocator): `text` is
        // libtorch's message when there was room to copy it.
        OUT_OF_MEMORY => Err(DdpError::OutOfMemory { op, message: text }),
        ERROR => Err(DdpError::Backend {
            op,
            message: text.unwrap_or_else(|| "the shim reported a failure without a message".to_owned()),
        }),
        other => Err(DdpError::Backend { op, message: format!("the shim returned the unknown status {other}") }),
    }
}

fn c_string(what: &'static str, value: &str) -> Result<CString, DdpError> {
    CString::new(value).map_err(|_| DdpError::NulByte { what, value: value.to_owned() })
}

fn millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn c_int_of(what: &'static str, value: usize) -> Result<c_int, DdpError> {
    c_int::try_from(value).map_err(|_| DdpError::TooLarge { what, value })
}

/// Whether the shim was compiled with NCCL (the `cuda` feature against a CUDA libtorch).
pub(crate) fn has_nccl() -> bool {
    // SAFETY: a constant query without arguments.
    unsafe { ddp_has_nccl() != 0 }
}

/// A c10d key-value store (TCPStore, or a prefixed view of one).
pub(crate) struct Store {
    raw: *mut RawStore,
}

// SAFETY: c10d stores are thread-safe (a TCPStore client serialises its requests); the handle is
// only a counted reference.
unsafe impl Send for Store {}

impl Store {
    /// The server of a TCPStore at `port`, or a client of the store at `host:port`, which connects
    /// within `timeout`; that also bounds every later wait on a key.
    pub(crate) fn tcp(
        host: &str,
        port: u16,
        is_server: bool,
        world_size: usize,
        timeout: Duration,
    ) -> Result<Self, DdpError> {
        let host = c_string("host", host)?;
        let world = c_int_of("world size", world_size)?;
        let mut raw = ptr::null_mut();
        call("TCPStore", |error| {
            // SAFETY: `host` is a valid C string for the call; `raw` is written only on success.
            unsafe {
                ddp_store_tcp(host.as_ptr(), port, c_int::from(is_server), world, millis(timeout), &mut raw, error)
            }
        })?;
        Ok(Self { raw })
    }

    /// A view of this store whose keys start with `prefix`.
    pub(crate) fn prefixed(&self, prefix: &str) -> Result<Self, DdpError> {
        let prefix = c_string("store prefix", prefix)?;
        let mut raw = ptr::null_mut();
        // SAFETY: `self.raw` is a live handle; `prefix` is a valid C string for the call.
        call("PrefixStore", |error| unsafe { ddp_store_prefixed(self.raw, prefix.as_ptr(), &mut raw, error) })?;
        Ok(Self { raw })
    }
}

impl Store {
    /// Sets `key` to `value`.
    pub(crate) fn set(&self, key: &str, value: &[u8]) -> Result<(), DdpError> {
        let key = c_string("store key", key)?;
        call("TCPStore set", |error| {
            // SAFETY: `self.raw` is live; `key` and `value` are valid for the call, which copies them.
            unsafe { ddp_store_set(self.raw, key.as_ptr(), value.as_ptr(), value.len(), error) }
        })
    }

    /// The value of `key`, waiting up to `timeout` for another rank to set it.
    pub(crate) fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, DdpError> {
        let key = c_string("store key", key)?;
        let (mut out, mut len) = (ptr::null_mut::<u8>(), 0usize);
        // SAFETY: `self.raw` is live, `key` is valid for the call; `out` and `len` are written only
        // on success.
        call("TCPStore get", |error| unsafe {
            ddp_store_get(self.raw, key.as_ptr(), millis(timeout), &mut out, &mut len, error)
        })?;
        // SAFETY: on success `out` points at `len` bytes malloc'ed by the shim, copied here and then
        // released once with the shim's matching free.
        let value = unsafe { std::slice::from_raw_parts(out, len) }.to_vec();
        // SAFETY: as above: `out` came from the shim's malloc and is freed exactly once.
        unsafe { ddp_free_message(out.cast()) };
        Ok(value)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `raw` was created by the shim and is released once, here.
        unsafe { ddp_store_free(self.raw) }
    }
}

/// Where a Gloo process group opens its sockets.
pub(crate) enum GlooDevices<'a> {
    /// One device per named network interface.
    Interfaces(&'a [String]),
    /// One device bound to this host name or address.
    Hostname(&'a str),
    /// Gloo's default: this machine's host name, or loopback when it does not resolve.
    Default,
}

/// A c10d process group (a `Backend`): Gloo or NCCL.
pub(crate) struct Group {
    raw: *mut RawGroup,
}

// SAFETY: the handle is a counted reference to a c10d backend, which may be used from any thread;
// `Group` is not `Sync`, so collectives are issued from one thread at a time, in program order.
unsafe impl Send for Group {}

impl Group {
    /// A Gloo group of `size` ranks over `store`.
    pub(crate) fn gloo(
        store: &Store,
        rank: usize,
        size: usize,
        timeout: Duration,
        devices: GlooDevices<'_>,
        threads: usize,
    ) -> Result<Self, DdpError> {
        let (rank, size) = (c_int_of("rank", rank)?, c_int_of("world size", size)?);
        let threads = c_int_of("Gloo threads", threads)?;
        let (names, hostname) = match devices {
            GlooDevices::Interfaces(names) => {
                (names.iter().map(|n| c_string("network interface", n)).collect::<Result<Vec<_>, _>>()?, None)
            }
            GlooDevices::Hostname(host) => (Vec::new(), Some(c_string("host name", host)?)),
            GlooDevices::Default => (Vec::new(), None),
        };
        let pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let host_ptr = hostname.as_ref().map_or(ptr::null(), |h| h.as_ptr());
        let mut raw = ptr::null_mut();
        // SAFETY: `store.raw` is live; `pointers` holds `pointers.len()` C strings owned by `names`,
        // and `host_ptr` is null or owned by `hostname`, all alive for the call.
        call("ProcessGroupGloo", |error| unsafe {
            ddp_group_gloo(
                store.raw,
                rank,
                size,
                millis(timeout),
                pointers.as_ptr(),
                pointers.len(),
                host_ptr,
                threads,
                &mut raw,
                error,
            )
        })?;
        Ok(Self { raw })
    }

    /// An NCCL group of `size` ranks over `store` (an error when NCCL is not compiled in).
    pub(crate) fn nccl(store: &Store, rank: usize, size: usize, timeout: Duration) -> Result<Self, DdpError> {
        let (rank, size) = (c_int_of("rank", rank)?, c_int_of("world size", size)?);
        let mut raw = ptr::null_mut();
        // SAFETY: `store.raw` is live; `raw` is written only on success.
        call("ProcessGroupNCCL", |error| unsafe {
            ddp_group_nccl(store.raw, rank, size, millis(timeout), &mut raw, error)
        })?;
        Ok(Self { raw })
    }

    /// Overwrites `tensor` with its value on rank `root`.
    pub(crate) fn broadcast(&self, tensor: &Tensor, root: usize, timeout: Duration) -> Result<(), DdpError> {
        let root = c_int_of("root rank", root)?;
        // SAFETY: `self.raw` is live and `tensor` outlives the call, which blocks until the
        // collective has finished with it.
        call("broadcast", |error| unsafe { ddp_broadcast(self.raw, tensor.as_ptr(), root, millis(timeout), error) })
    }

    /// Sums every tensor across ranks, in place, in one (coalesced) call.
    pub(crate) fn all_reduce_sum(&self, tensors: &[&Tensor], timeout: Duration) -> Result<(), DdpError> {
        let pointers: Vec<*const C_tensor> = tensors.iter().map(|t| t.as_ptr()).collect();
        // SAFETY: `self.raw` is live; `pointers` holds `pointers.len()` tensors borrowed for the call,
        // which blocks until the collective has finished with them.
        call("all_reduce", |error| unsafe {
            ddp_allreduce_sum(self.raw, pointers.as_ptr(), pointers.len(), millis(timeout), error)
        })
    }

    /// Returns once every rank has reached the barrier.
    pub(crate) fn barrier(&self, timeout: Duration) -> Result<(), DdpError> {
        // SAFETY: `self.raw` is live.
        call("barrier", |error| unsafe { ddp_barrier(self.raw, millis(timeout), error) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` was created by the shim and is released once, here.
        unsafe { ddp_group_free(self.raw) }
    }
}

/// Makes `grad` the gradient of `param` (which may have none yet).
pub(crate) fn set_grad(param: &Tensor, grad: &Tensor) -> Result<(), DdpError> {
    // SAFETY: both tensors are live for the call; the shim stores a new reference to `grad`'s
    // storage in `param`'s autograd metadata, which libtorch reference-counts.
    call("set_grad", |error| unsafe { ddp_set_grad(param.as_ptr(), grad.as_ptr(), error) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the shim's `guarded` reports for the failure `kind` of `ddp_raise_for_tests`.
    fn raised(kind: c_int) -> Result<(), DdpError> {
        // SAFETY: a test entry without pointers but the slot `call` provides.
        call("test", |error| unsafe { ddp_raise_for_tests(kind, error) })
    }

    #[test]
    fn allocation_failures_reach_rust_as_out_of_memory() {
        assert!(raised(0).is_ok());
        // `new` or the shim's own allocation failing (std::bad_alloc): no message, since copying
        // one needs memory, and still an error, never a null read as success.
        assert!(matches!(raised(2), Err(DdpError::OutOfMemory { op: "test", message: None })), "{:?}", raised(2));
        // libtorch's allocator failing keeps its message, which names the size.
        match raised(3) {
            Err(DdpError::OutOfMemory { op: "test", message: Some(message) }) => {
                assert!(message.contains("tried to allocate 7 GiB for the tests"), "{message}");
                assert!(!message.contains("Exception raised from"), "no C++ backtrace: {message}");
            }
            other => panic!("{other:?}"),
        }
        let error = raised(2).unwrap_err().to_string();
        assert_eq!(error, "test ran out of memory");
    }

    #[test]
    fn other_failures_stay_backend_errors_with_their_message() {
        match raised(1) {
            Err(DdpError::Backend { op: "test", message }) => assert_eq!(message, "a failure for the tests"),
            other => panic!("{other:?}"),
        }
        match raised(4) {
            Err(DdpError::Backend { op: "test", message }) => {
                assert_eq!(message, "unknown C++ exception in libtorch's c10d")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_without_a_message_are_errors() {
        let null = ptr::null_mut();
        assert!(check("op", OK, null).is_ok());
        assert!(matches!(check("op", OUT_OF_MEMORY, null), Err(DdpError::OutOfMemory { op: "op", message: None })));
        match check("op", ERROR, null) {
            Err(DdpError::Backend { op: "op", message }) => assert!(message.contains("without a message"), "{message}"),
            other => panic!("{other:?}"),
        }
        match check("op", 9, null) {
            Err(DdpError::Backend { op: "op", message }) => assert!(message.contains("unknown status 9"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
