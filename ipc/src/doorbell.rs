//! The doorbell: a `u32` futex word in the shared header. The consumer sets it to
//! [`ASLEEP`] before it sleeps and waits on it; a publisher that sees [`ASLEEP`] after
//! publishing swaps it to [`AWAKE`] and wakes the consumer, so only one futex wake happens per
//! sleep, however many publishers race. The consumer waits through io_uring
//! (`IORING_OP_FUTEX_WAIT`, kernel ≥ 6.7) and falls back to the `futex(2)` syscall where that
//! opcode is missing. (An eventfd is no fallback here: publishers find the channel by name and
//! never receive the consumer's file descriptors.)
//!
//! No-lost-wakeup invariant: the consumer stores ASLEEP, then re-checks every lane's tail before
//! waiting with "expected value ASLEEP"; a publisher stores its tail, then reads the word. All
//! four accesses are SeqCst, so one of the two always sees the other's store. The same protocol,
//! roles swapped, runs on each lane's space doorbell for a publisher waiting for room.

use io_uring::{opcode, types::SubmitArgs, types::Timespec, IoUring};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub(crate) const AWAKE: u32 = 0;
pub(crate) const ASLEEP: u32 = 1;

/// futex2 flag: the futex is 32 bits wide (shared, not process-private).
const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX_BITSET_MATCH_ANY: u64 = 0xffff_ffff;
const WAIT_TAG: u64 = 1;

/// Wakes up to `waiters` threads waiting on `word`, in any process that maps it.
pub(crate) fn futex_wake(word: &AtomicU32, waiters: i32) {
    // SAFETY: FUTEX_WAKE only reads the address to find the wait queue; `word` is a live
    // reference for the duration of the call. The result (number woken, or an error for a
    // word that nobody waits on) needs no handling.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            waiters,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Blocks while `word == expected`, for at most `timeout` (may return early or spuriously).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the kernel reads the futex word at a live, aligned address and the timespec from
    // a live local; FUTEX_WAIT writes nothing. Errors (EAGAIN, ETIMEDOUT, EINTR) all mean
    // "return to the caller's loop", which re-checks state.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Rings the doorbell if its sleeper said it sleeps. Called after a SeqCst store of whatever the
/// sleeper waits for (a tail, a head).
pub(crate) fn ring_if_asleep(word: &AtomicU32) -> bool {
    if word.load(Ordering::SeqCst) == ASLEEP && word.swap(AWAKE, Ordering::AcqRel) == ASLEEP {
        futex_wake(word, i32::MAX);
        return true;
    }
    false
}

/// How the consumer sleeps: through io_uring while the kernel supports futex waits there.
pub(crate) struct Sleeper {
    ring: Option<IoUring>,
    /// A FutexWait is queued in the kernel and its completion not yet reaped. It stays valid
    /// across a timed-out wait: a queued waiter is woken by any later futex wake.
    armed: bool,
}

impl Sleeper {
    pub(crate) fn new() -> Self {
        Self {
            ring: IoUring::new(4).ok(),
            armed: false,
        }
    }

    /// True while waits go through io_uring (false after falling back to `futex(2)`).
    pub(crate) fn uses_io_uring(&self) -> bool {
        self.ring.is_some()
    }

    /// Sleeps while `word == expected`, at most `timeout`. `word` must stay mapped for as long
    /// as this sleeper lives (a queued wait keeps its address until the ring is dropped).
    pub(crate) fn sleep(&mut self, word: &AtomicU32, expected: u32, timeout: Duration) {
        match self.ring.as_mut() {
            Some(ring) => {
                if let Err(unsupported) =
                    Self::ring_wait(ring, &mut self.armed, word, expected, timeout)
                {
                    if unsupported {
                        self.ring = None;
                        self.armed = false;
                    }
                    futex_wait(word, expected, timeout);
                }
            }
            None => futex_wait(word, expected, timeout),
        }
    }

    /// `Err(true)`: the kernel lacks futex waits on io_uring; `Err(false)`: a transient failure.
    fn ring_wait(
        ring: &mut IoUring,
        armed: &mut bool,
        word: &AtomicU32,
        expected: u32,
        timeout: Duration,
    ) -> Result<(), bool> {
        if !*armed {
            let entry = opcode::FutexWait::new(
                word.as_ptr().cast_const(),
                u64::from(expected),
                FUTEX_BITSET_MATCH_ANY,
                FUTEX2_SIZE_U32,
            )
            .build()
            .user_data(WAIT_TAG);
            // SAFETY: the entry points at the futex word, which the caller keeps mapped for the
            // sleeper's lifetime (dropping the ring cancels the wait before the mapping can go).
            unsafe { ring.submission().push(&entry) }.map_err(|_| false)?;
            *armed = true;
        }
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
            Err(_) => return Err(false),
        }
        let mut unsupported = false;
        for cqe in ring.completion() {
            if cqe.user_data() == WAIT_TAG {
                *armed = false;
                unsupported |= matches!(
                    -cqe.result(),
                    libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS
                );
            }
        }
        if unsupported {
            Err(true)
        } else {
            Ok(())
        }
    }
}

impl Default for Sleeper {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn sleeper_returns_at_once_when_word_differs() {
        let word = AtomicU32::new(AWAKE);
        let mut sleeper = Sleeper::new();
        let start = Instant::now();
        sleeper.sleep(&word, ASLEEP, Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(20));
        assert!(
            sleeper.uses_io_uring(),
            "kernel 6.7+ expected to support futex waits"
        );
    }

    #[test]
    fn ring_wakes_a_sleeper_and_swaps_the_flag() {
        let word = Arc::new(AtomicU32::new(ASLEEP));
        let sleeper_word = Arc::clone(&word);
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut sleeper = Sleeper::new();
            while sleeper_word.load(Ordering::Acquire) == ASLEEP {
                sleeper.sleep(&sleeper_word, ASLEEP, Duration::from_secs(30));
            }
            tx.send(()).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        assert!(ring_if_asleep(&word));
        assert_eq!(word.load(Ordering::Acquire), AWAKE);
        assert!(!ring_if_asleep(&word), "second ring must not wake again");
        rx.recv_timeout(deadline - Instant::now())
            .expect("sleeper not woken");
        handle.join().unwrap();
    }

    #[test]
    fn timed_out_sleep_leaves_a_wait_that_a_later_wake_completes() {
        let word = AtomicU32::new(ASLEEP);
        let mut sleeper = Sleeper::new();
        sleeper.sleep(&word, ASLEEP, Duration::from_millis(1));
        futex_wake(&word, 1);
        let start = Instant::now();
        sleeper.sleep(&word, ASLEEP, Duration::from_secs(30));
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "queued wait was not completed by the wake"
        );
    }
}
