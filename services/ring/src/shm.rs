//! The shared mapping and the few primitive accesses made through it.

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use rustix::mm::{MapFlags, ProtFlags};

use crate::error::{Result, RingError};
use crate::layout::HEADER_SIZE;

/// A `MAP_SHARED` read-write mapping of the whole memfd (header + data area).
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Mapping` owns its mapping exclusively (it unmaps it on drop) and exposes only raw
// pointers and atomics into it; moving it to another thread changes nothing about the validity of
// the memory.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared, read-write. `len` must be the file's size, which the
    /// callers guarantee (creator: it just sized it; attacher: it took it from `fstat` of a memfd
    /// sealed against shrinking), so no access inside `len` can fault with SIGBUS.
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize) -> Result<Self> {
        if len < HEADER_SIZE {
            return Err(RingError::Incompatible(format!(
                "mapping of {len} bytes is smaller than the {HEADER_SIZE}-byte header"
            )));
        }
        // SAFETY: we ask the kernel for a fresh mapping (no address hint, no MAP_FIXED), so no
        // existing Rust object is aliased or replaced; the result is checked below.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| RingError::os("mmap", e))?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| RingError::Incompatible("mmap returned a null mapping".into()))?;
        Ok(Self { ptr, len })
    }

    /// An atomic u64 in the ring header. `off` is one of the `layout::OFF_*` constants.
    #[inline]
    pub(crate) fn atomic(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= HEADER_SIZE);
        // SAFETY: `off + 8 <= HEADER_SIZE <= self.len` (checked in `map`), the mapping is
        // page-aligned so `ptr + off` is 8-byte aligned for the 8-multiple offsets we use, and the
        // memory stays mapped for the lifetime of `&self`. Shared memory accessed only through
        // atomics (by both processes) is the intended use of `AtomicU64`.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Reads a u32 of the header once, volatile (the peer may write it concurrently).
    #[inline]
    pub(crate) fn read_header_u32(&self, off: usize) -> u32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= HEADER_SIZE);
        // SAFETY: in bounds and aligned as argued in `atomic`; a volatile read of plain bytes
        // cannot produce an invalid `u32`.
        unsafe { self.ptr.as_ptr().add(off).cast::<u32>().read_volatile() }
    }

    /// Writes a u32 of the header (producer setup only).
    #[inline]
    pub(crate) fn write_header_u32(&self, off: usize, v: u32) {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= HEADER_SIZE);
        // SAFETY: in bounds and aligned as argued in `atomic`.
        unsafe { self.ptr.as_ptr().add(off).cast::<u32>().write_volatile(v) }
    }

    /// Start of the data area (just after the header).
    #[inline]
    pub(crate) fn data(&self) -> *mut u8 {
        // SAFETY: `HEADER_SIZE <= self.len`, so the result is inside (or one past) the mapping.
        unsafe { self.ptr.as_ptr().add(HEADER_SIZE) }
    }

    /// Total mapped length.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `map`, nothing borrowed from
        // it can outlive `self` (all borrows are tied to `&self`), and it is unmapped only here.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
