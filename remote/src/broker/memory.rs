//! How the broker's allocator treats large frames. glibc raises its mmap threshold each time
//! a large mmapped block is freed (up to 32 MiB), after which frames of that size come from
//! arenas that keep their memory: a peer sending many 1 MiB frames would leave the broker's
//! resident size at the high water of what was ever in flight. A fixed threshold keeps every
//! frame of 128 KiB or more in its own mapping, returned to the kernel when it is dropped.

/// Frames at least this large get a mapping of their own.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes the allocator's mmap threshold (see the module comment); false if glibc refused.
pub fn return_large_frames_to_the_kernel() -> bool {
    // SAFETY: mallopt only changes allocator tuning; it takes no pointers, and M_MMAP_THRESHOLD
    // with a value below the documented maximum is a supported setting at any time.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_threshold_is_accepted() {
        assert!(super::return_large_frames_to_the_kernel());
    }
}
