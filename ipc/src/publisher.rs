//! The publishing side: a [`Publisher`] owns one lane of a channel (a single-producer ring), so
//! publishers never contend with each other on the hot path. It writes records into free space,
//! then makes them visible with one release store of the lane's tail, and rings the doorbell only
//! when the consumer has said it sleeps.
//!
//! Lane ownership: a lane's owner word holds `pid | (publisher number << 32)`, or 0 when free.
//! `connect` takes a free lane, or one whose owner process no longer exists (a publisher killed
//! mid-write): its tail is consistent, because a record becomes visible only by the tail store,
//! so the new owner simply continues from it. Limits: owners are checked by pid, so publishers
//! must share the daemon's pid namespace, and a `Publisher` must not be used across `fork`.

use crate::doorbell;
use crate::error::{IpcError, PublishError};
use crate::layout::{self, Geometry, PAD_FLAG, RECORD_HEADER};
use crate::region::Region;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A connection to one channel, holding one lane. `Send` but not `Sync`: give each thread its
/// own publisher (each takes its own lane).
pub struct Publisher {
    region: Region,
    lane: usize,
    owner_tag: u64,
    /// Our private copy of the lane's tail: the shared one is only ever written from it.
    tail: Cell<u64>,
    /// The consumer's head as last read (space up to it is known free).
    head: Cell<u64>,
    _not_sync: PhantomData<Cell<()>>,
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // Signal 0 checks existence only; EPERM means it exists but belongs to someone else.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

impl Publisher {
    /// Opens the channel named `channel` (`/dev/shm/triggerd.<channel>`) and takes a lane.
    /// Fails with `NoSuchChannel`, `PermissionDenied` (the channel's owner/group/mode exclude
    /// this user), `BadRegion`, or `NoFreeLane`.
    pub fn connect(channel: &str) -> Result<Self, IpcError> {
        static PUBLISHERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let region = Region::open(channel)?;
        let geometry = region.geometry();
        let owner_tag = u64::from(std::process::id())
            | u64::from(PUBLISHERS.fetch_add(1, Ordering::Relaxed)) << 32;
        for lane in 0..geometry.lanes() {
            let owner = region.u64_at(geometry.lane_owner(lane));
            let current = owner.load(Ordering::Acquire);
            let free = current == 0 || !process_alive(current as u32);
            if !free
                || owner
                    .compare_exchange(current, owner_tag, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                continue;
            }
            let tail = region
                .u64_at(geometry.lane_tail(lane))
                .load(Ordering::Acquire);
            let head = region
                .u64_at(geometry.lane_head(lane))
                .load(Ordering::Acquire);
            if !lane_counters_valid(&geometry, head, tail) {
                owner.store(current, Ordering::Release);
                return Err(IpcError::BadRegion {
                    channel: channel.to_owned(),
                    why: "a free lane has impossible counters",
                });
            }
            region
                .u64_at(layout::OFF_ACTIVE)
                .fetch_or(1 << lane, Ordering::SeqCst);
            return Ok(Self {
                region,
                lane,
                owner_tag,
                tail: Cell::new(tail),
                head: Cell::new(head),
                _not_sync: PhantomData,
            });
        }
        Err(IpcError::NoFreeLane {
            channel: channel.to_owned(),
            lanes: geometry.lanes(),
        })
    }

    /// Largest message this channel accepts (at least 64 KiB).
    pub fn max_message(&self) -> usize {
        self.region.geometry().max_message()
    }

    /// Publishes one message, or returns `WouldBlock` at once if the lane is full.
    pub fn publish(&self, msg: &[u8]) -> Result<(), PublishError> {
        self.publish_batch(&[msg]).map(drop)
    }

    /// Publishes one message, waiting up to `timeout` for space (asleep on the lane's space
    /// doorbell, which the consumer rings when it frees space and we said we wait). Returns
    /// `WouldBlock` once the timeout has passed.
    pub fn publish_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), PublishError> {
        let deadline = Instant::now() + timeout;
        let mut counted = false;
        loop {
            match self.try_publish(&[msg]) {
                Err(PublishError::WouldBlock) => {
                    if !counted {
                        self.count_full_wait();
                        counted = true;
                    }
                    let need = layout::record_span(msg.len()) * 2;
                    if !self.wait_for_space(need, deadline) {
                        return Err(PublishError::WouldBlock);
                    }
                }
                other => return other.map(drop),
            }
        }
    }

    /// Waits until the consumer has freed room for `bytes` (capped at the lane size), the
    /// channel is closed (the next publish reports it), or `deadline` passes; returns false only
    /// in the last case. Use after `WouldBlock` from `publish_batch`.
    pub fn wait_for_space(&self, bytes: usize, deadline: Instant) -> bool {
        let geometry = self.region.geometry();
        let bytes = bytes.min(geometry.lane_bytes()) as u64;
        let word = self.region.u32_at(geometry.lane_space_wait(self.lane));
        let head_word = self.region.u64_at(geometry.lane_head(self.lane));
        let closed = self.region.u32_at(layout::OFF_CLOSED);
        let tail = self.tail.get();
        // A hostile head past our tail wraps to a huge distance: never "roomy", so we time out.
        let roomy = |head: u64| {
            tail.wrapping_sub(head).saturating_add(bytes) <= geometry.lane_bytes() as u64
                || closed.load(Ordering::SeqCst) != 0
        };
        let mut spins = 0u32;
        loop {
            if roomy(head_word.load(Ordering::Acquire)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            // Say we wait, then look again: the consumer stores its head then reads this word
            // (both SeqCst), so either it sees our 1 and wakes us, or we see its new head.
            word.swap(doorbell::ASLEEP, Ordering::SeqCst);
            if roomy(head_word.load(Ordering::SeqCst)) {
                word.store(doorbell::AWAKE, Ordering::Relaxed);
                return true;
            }
            // Bounded, in case a hostile process clears the word without waking us.
            let nap = (deadline - now).min(Duration::from_millis(100));
            doorbell::futex_wait(word, doorbell::ASLEEP, nap);
        }
    }

    /// Publishes as many of `msgs` as fit, in order, with one tail store and at most one doorbell
    /// ring. Returns how many were published; `WouldBlock` if none fit; `TooLarge` if the first
    /// message is too large (a later too-large message ends the batch early instead).
    pub fn publish_batch(&self, msgs: &[&[u8]]) -> Result<usize, PublishError> {
        let result = self.try_publish(msgs);
        if result == Err(PublishError::WouldBlock) {
            self.count_full_wait();
        }
        result
    }

    fn count_full_wait(&self) {
        self.region
            .u64_at(layout::OFF_FULL_WAITS)
            .fetch_add(1, Ordering::Relaxed);
    }

    fn try_publish(&self, msgs: &[&[u8]]) -> Result<usize, PublishError> {
        if self
            .region
            .u32_at(layout::OFF_CLOSED)
            .load(Ordering::Acquire)
            != 0
        {
            return Err(PublishError::Closed);
        }
        let mut written = 0;
        for msg in msgs {
            match self.write_record(msg) {
                Ok(()) => written += 1,
                Err(e) if written == 0 => return Err(e),
                Err(_) => break,
            }
        }
        if written > 0 {
            let geometry = self.region.geometry();
            // SeqCst (an xchg on x86, no separate fence): orders the tail store before the
            // doorbell read, pairing with the consumer's SeqCst "asleep" store and tail reads.
            self.region
                .u64_at(geometry.lane_tail(self.lane))
                .swap(self.tail.get(), Ordering::SeqCst);
            doorbell::ring_if_asleep(self.doorbell());
        }
        Ok(written)
    }

    fn doorbell(&self) -> &AtomicU32 {
        self.region.u32_at(layout::OFF_SLEEPING)
    }

    /// Writes one record (and padding before it if it would cross the lane's end) after the
    /// private tail, without publishing it.
    fn write_record(&self, msg: &[u8]) -> Result<(), PublishError> {
        let geometry = self.region.geometry();
        if msg.len() > geometry.max_message() {
            return Err(PublishError::TooLarge {
                len: msg.len(),
                max: geometry.max_message(),
            });
        }
        let span = layout::record_span(msg.len());
        let tail = self.tail.get();
        let contiguous = geometry.contiguous_from(tail);
        let padding = if span > contiguous { contiguous } else { 0 };
        self.reserve(padding + span)?;
        let mut pos = tail;
        if padding > 0 {
            self.write_header(pos, PAD_FLAG | (padding - RECORD_HEADER) as u32);
            pos += padding as u64;
        }
        self.region
            .write(geometry.lane_byte(self.lane, pos) + RECORD_HEADER, msg);
        self.write_header(pos, msg.len() as u32);
        self.tail.set(pos + span as u64);
        Ok(())
    }

    fn write_header(&self, pos: u64, word: u32) {
        let mut header = [0u8; RECORD_HEADER];
        header[..4].copy_from_slice(&word.to_le_bytes());
        header[4..].copy_from_slice(&layout::sequence_at(pos).to_le_bytes());
        self.region
            .write(self.region.geometry().lane_byte(self.lane, pos), &header);
    }

    /// Ensures `bytes` after the private tail are free, re-reading the consumer's head if needed.
    fn reserve(&self, bytes: usize) -> Result<(), PublishError> {
        let geometry = self.region.geometry();
        let lane_bytes = geometry.lane_bytes() as u64;
        let tail = self.tail.get();
        if tail - self.head.get() + bytes as u64 <= lane_bytes {
            return Ok(());
        }
        let head = self
            .region
            .u64_at(geometry.lane_head(self.lane))
            .load(Ordering::Acquire);
        if !lane_counters_valid(&geometry, head, tail) || head < self.head.get() {
            return Err(PublishError::Corrupt(
                "consumer head moved backwards or past our tail",
            ));
        }
        self.head.set(head);
        if tail - head + bytes as u64 <= lane_bytes {
            Ok(())
        } else {
            Err(PublishError::WouldBlock)
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let geometry = self.region.geometry();
        let _ = self
            .region
            .u64_at(geometry.lane_owner(self.lane))
            .compare_exchange(self.owner_tag, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// A lane's counters are consistent when the head is at most a lane behind the tail, both aligned.
fn lane_counters_valid(geometry: &Geometry, head: u64, tail: u64) -> bool {
    head <= tail
        && tail - head <= geometry.lane_bytes() as u64
        && head % layout::RECORD_ALIGN as u64 == 0
        && tail % layout::RECORD_ALIGN as u64 == 0
}
