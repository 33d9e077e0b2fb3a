//! Gives free heap memory back to the kernel. glibc keeps freed memory in its arenas: after
//! the parse of a config of 50,000 rules, or a flood of requests at the broker, the process's
//! resident size would otherwise stay at that peak for good.

/// Returns the heap's free pages to the kernel (glibc's `malloc_trim`); a no-op elsewhere.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own free lists,
    // under the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn freed_small_allocations_leave_the_resident_set() {
        // 256 MiB in 1 KiB blocks: below the mmap threshold, so they live in the heap proper.
        let blocks: Vec<Box<[u8; 1024]>> = (0..256 * 1024).map(|_| Box::new([1u8; 1024])).collect();
        // Allocated last, it sits above the blocks and keeps free()'s own trimming of the
        // heap's top from returning them: only malloc_trim can.
        let pin = Box::new([2u8; 64]);
        let full = rss_anon_kib();
        drop(blocks);
        super::release_free_heap();
        let after = rss_anon_kib();
        drop(pin);
        assert!(
            after + 128 * 1024 < full,
            "RssAnon {full} KiB with the blocks, {after} KiB after releasing them"
        );
    }
}
