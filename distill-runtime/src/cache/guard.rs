//! A shard file that shrinks while it is memory-mapped turns a read of its lost pages into an
//! error instead of a crash.
//!
//! Reading a page of a mapping that lies beyond the end of its file raises `SIGBUS`, whose default
//! action ends the process. On Linux, the first [`Guard`] installs a `SIGBUS` handler that acts only
//! on faults inside a registered mapping: it maps a page of zeros over the rest of that mapping
//! (from the faulting page on), counts the fault, and returns, so the read completes with zeros.
//! The reader then sees the count and reports the shard as corrupt instead of returning what it
//! read. Every other `SIGBUS` goes to the disposition installed before (the Rust runtime's, or the
//! default), as if this handler were not there.
//!
//! Elsewhere the guard counts nothing: a shard truncated in the instant between the reader's check
//! of its length and its copy can still raise `SIGBUS` there.

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::UnsafeCell;
    use std::mem::MaybeUninit;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Once;

    /// Mappings guarded at once; a mapping registered beyond them is not guarded (its reads are
    /// still checked before and after, only the instant between is not).
    const SLOTS: usize = 4096;

    /// A registered mapping `[start, end)`. `start` 0 is a free slot, 1 a slot being filled or
    /// emptied; the handler ignores both.
    struct Slot {
        start: AtomicUsize,
        end: AtomicUsize,
        faults: AtomicUsize,
    }

    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: Slot = Slot { start: AtomicUsize::new(0), end: AtomicUsize::new(0), faults: AtomicUsize::new(0) };
    static REGISTRY: [Slot; SLOTS] = [EMPTY; SLOTS];
    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    static INSTALL: Once = Once::new();
    static INSTALLED: AtomicBool = AtomicBool::new(false);

    /// The disposition of `SIGBUS` before the handler, written once before it is installed.
    struct Previous(UnsafeCell<MaybeUninit<libc::sigaction>>);
    // SAFETY: written once inside `INSTALL.call_once`, before the handler that reads it exists.
    unsafe impl Sync for Previous {}
    static PREVIOUS: Previous = Previous(UnsafeCell::new(MaybeUninit::uninit()));

    fn install() {
        INSTALL.call_once(|| {
            // SAFETY: plain libc calls on owned, initialised structures; `PREVIOUS` is written
            // before the handler can run.
            unsafe {
                let page = libc::sysconf(libc::_SC_PAGESIZE);
                if page > 0 {
                    PAGE.store(page as usize, Ordering::Relaxed);
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                let previous = (*PREVIOUS.0.get()).as_mut_ptr();
                if libc::sigaction(libc::SIGBUS, &action, previous) == 0 {
                    INSTALLED.store(true, Ordering::Release);
                }
            }
        });
    }

    extern "C" fn handler(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let address = unsafe { (*info).si_addr() } as usize;
        let page = PAGE.load(Ordering::Relaxed);
        for slot in &REGISTRY {
            let start = slot.start.load(Ordering::Acquire);
            if start < 2 || address < start {
                continue;
            }
            let end = slot.end.load(Ordering::Acquire);
            if address >= end {
                continue;
            }
            let base = address & !(page - 1);
            // SAFETY: replaces pages of a mapping this process registered and still holds (it
            // unregisters before unmapping) with private zero pages; nothing else lives there.
            let mapped = unsafe {
                libc::mmap(
                    base as *mut libc::c_void,
                    end - base,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                slot.faults.fetch_add(1, Ordering::AcqRel);
                return;
            }
        }
        // Not a guarded mapping: the disposition from before.
        // SAFETY: `PREVIOUS` was initialised before this handler was installed.
        unsafe {
            let previous = (*PREVIOUS.0.get()).assume_init_ref();
            let action = previous.sa_sigaction;
            if previous.sa_flags & libc::SA_SIGINFO != 0 && action != libc::SIG_DFL && action != libc::SIG_IGN {
                let chained: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(action);
                chained(signal, info, context);
            } else if action == libc::SIG_DFL || action == libc::SIG_IGN {
                // Back to the default action; the faulting access runs again and takes its course.
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut default.sa_mask);
                libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
            } else {
                let chained: extern "C" fn(libc::c_int) = std::mem::transmute(action);
                chained(signal);
            }
        }
    }

    /// The registration of one mapping `[start, start + len)`; unregistered when dropped, which
    /// must happen before the mapping is unmapped.
    #[derive(Debug)]
    pub(crate) struct Guard {
        slot: Option<usize>,
    }

    impl Guard {
        pub(crate) fn register(start: *const u8, len: usize) -> Guard {
            install();
            if !INSTALLED.load(Ordering::Acquire) || len == 0 {
                return Guard { slot: None };
            }
            let start = start as usize;
            for (index, slot) in REGISTRY.iter().enumerate() {
                if slot.start.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    slot.faults.store(0, Ordering::Release);
                    slot.end.store(start + len, Ordering::Release);
                    slot.start.store(start.max(2), Ordering::Release);
                    return Guard { slot: Some(index) };
                }
            }
            Guard { slot: None }
        }

        /// How many faults of the mapping the handler answered with zeros.
        pub(crate) fn faults(&self) -> usize {
            self.slot.map_or(0, |index| REGISTRY[index].faults.load(Ordering::Acquire))
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(index) = self.slot {
                let slot = &REGISTRY[index];
                slot.start.store(1, Ordering::Release);
                slot.end.store(0, Ordering::Release);
                slot.start.store(0, Ordering::Release);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    /// Counts nothing where no handler is installed.
    #[derive(Debug)]
    pub(crate) struct Guard;

    impl Guard {
        pub(crate) fn register(_start: *const u8, _len: usize) -> Guard {
            Guard
        }

        pub(crate) fn faults(&self) -> usize {
            0
        }
    }
}

pub(crate) use imp::Guard;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_read_past_the_end_of_a_truncated_mapping_reads_zeros_and_is_counted() {
        let path = std::env::temp_dir().join(format!("distill-guard-{}", std::process::id()));
        let page = 4096 * 4;
        std::fs::write(&path, vec![7u8; 3 * page]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the test owns the file; the truncation below is what the guard is for.
        let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
        let guard = Guard::register(map.as_ptr(), map.len());
        // SAFETY: in bounds of the mapping.
        assert_eq!(unsafe { std::ptr::read_volatile(map.as_ptr().add(2 * page)) }, 7);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(page as u64).unwrap();
        assert_eq!(guard.faults(), 0);
        // SAFETY: in bounds of the mapping; past the file's new end, which the guard answers.
        let past = unsafe { std::ptr::read_volatile(map.as_ptr().add(2 * page + 5)) };
        assert_eq!(past, 0);
        assert_eq!(guard.faults(), 1);
        // The pages still in the file read as before.
        // SAFETY: in bounds.
        assert_eq!(unsafe { std::ptr::read_volatile(map.as_ptr().add(10)) }, 7);
        drop(guard);
        drop(map);
        std::fs::remove_file(&path).unwrap();
    }
}
