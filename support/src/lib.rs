//! Small pieces every triggerd crate needs the same way: files replaced so that a crash leaves
//! the old or the new content (the rename made durable by fsyncing the directory), private
//! (0700) directories, locks that survive a panicking holder, and giving freed heap memory
//! back to the kernel.

#![warn(missing_docs, unreachable_pub)]

mod file;
mod memory;

pub use file::{private_dir, sync_dir, write_atomically};
pub use memory::release_free_heap;

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the data even when a panicking holder poisoned it: every value guarded
/// this way is kept consistent at each unlock, so a panic elsewhere must not stop the daemon.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
