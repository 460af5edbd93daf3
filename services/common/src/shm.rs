//! A memfd with one shared read/write mapping: the pixel memory a `wl_shm` client shares with
//! its compositor (the test pattern draws into it; the screencopy keeper has the compositor
//! copy frames into it).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

/// A memfd of `len` bytes, mapped shared and writable, unmapped on drop.
pub struct MemfdMap {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

impl MemfdMap {
    /// Creates a memfd named `name` (for `/proc/<pid>/maps`) of `len` bytes and maps it.
    pub fn new(name: &str, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a zero-length shared buffer",
            ));
        }
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        // SAFETY: a fresh shared mapping of a memfd we own and just sized to `len`; nothing
        // else in this process maps it. The peer we hand the fd to may write it (screencopy),
        // which is why readers only look at a region the peer has finished with.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { fd, ptr, len })
    }

    /// The memfd (to share with the compositor).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The whole mapping, to read.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` bytes owned by `self` (unmapped only in
        // drop); `&self` rules out a `&mut` slice over it in this process. The protocol in use
        // guarantees the peer is not writing the region the caller reads (a screencopy frame
        // is read only after `ready`, before the next copy is asked for).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole mapping, to write.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only slice over it in this
        // process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for MemfdMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of `len` bytes; no slice over it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_seen_through_a_second_mapping_of_the_fd() {
        let mut m = MemfdMap::new("punktfunk-test", 4096).unwrap();
        m.as_mut_slice()[..4].copy_from_slice(b"pfpf");
        let dup = m.fd().try_clone_to_owned().unwrap();
        let mut buf = [0u8; 4];
        rustix::io::pread(&dup, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"pfpf");
        assert_eq!(m.as_slice()[..4], *b"pfpf");
        assert!(MemfdMap::new("punktfunk-test", 0).is_err());
    }
}
