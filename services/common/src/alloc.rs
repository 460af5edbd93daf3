//! Bounding the memory glibc's allocator keeps after churn.
//!
//! glibc gives every thread that allocates under contention its own arena, up to 8 per CPU on
//! 64-bit, and freed memory stays in its arena. A daemon whose streams come and go (GStreamer
//! streaming threads, tokio's blocking pool) therefore grows with churn and does not give the
//! memory back: 100 killed client sessions took punktfunk-media from 202 to 886 MB RSS, all of
//! it returned by `malloc_trim(0)` (issue #9, defect 8).
//!
//! * [`limit_arenas`] caps the arena count; call it first thing in `main`, before any thread
//!   exists;
//! * [`trim`] hands free memory of every arena back to the kernel; call it after a large
//!   teardown (a stream stopped).
//!
//! Both are no-ops on other C libraries.

/// Arenas per process: glibc's main arena plus a few for the busiest threads. Allocation-heavy
/// threads then share arenas (a little lock contention), and the freed memory they retain is
/// bounded by this many arenas instead of 8 per CPU.
pub const MAX_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`MAX_ARENAS`]. Returns false if glibc refused (or on another
/// C library); the daemon runs either way.
///
/// Call it at the start of `main`, before any thread is spawned: arenas already created stay.
pub fn limit_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator tunable (M_ARENA_MAX with a positive value is
        // documented) and takes glibc's own lock, so it is sound at any time; it is called
        // before threads exist only so that the cap holds for every arena.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns free memory of every malloc arena to the kernel (`malloc_trim(0)`). Takes a few
/// milliseconds on a large heap: call it off the async workers, after a teardown.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and only releases memory
    // that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cap_is_accepted_and_trim_runs() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(super::limit_arenas(), "glibc refused M_ARENA_MAX");
        let v: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 << 10]).collect();
        assert_eq!(v.iter().map(Vec::len).sum::<usize>(), 64 * (64 << 10));
        drop(v);
        super::trim();
    }
}
