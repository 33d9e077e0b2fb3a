//! The consumer side of a channel, owned by the daemon: creates the region, drains every lane
//! in batches, validates every record it reads (the region is hostile ground), spins adaptively
//! while messages flow and sleeps on the doorbell when idle, and keeps the channel's counters.
//!
//! The consumer never waits for a publisher: a publisher makes a record visible with one
//! release store of its lane's tail after writing it, so the consumer only ever reads records
//! that are complete. A publisher killed mid-write leaves its tail where it was; there is no
//! claimed-but-uncommitted state for the consumer to wait on or skip.

use crate::doorbell::{self, Sleeper, ASLEEP, AWAKE};
use crate::error::{IpcError, Quarantine};
use crate::handout::Handout;
use crate::layout::{self, Geometry, PAD_FLAG, RECORD_HEADER};
use crate::region::{self, Region};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

/// How the daemon declares a channel (one per `[[channel]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Channel name; the region is `/dev/shm/triggerd.<name>`.
    pub name: String,
    /// Total ring capacity in bytes, split evenly over the lanes (each rounded down to a power
    /// of two, at least 256 KiB).
    pub capacity_bytes: usize,
    /// How many publishers may be connected at once (1..=64); each gets its own lane.
    pub lanes: usize,
    /// Owner of the region (the channel's `owner`).
    pub uid: u32,
    /// Group of the region (the channel's `group`).
    pub gid: u32,
    /// Permission bits of the region (the channel's `mode`): who may open it is who may publish.
    pub mode: u32,
}

impl ChannelSpec {
    /// Default capacity: 16 lanes × 256 KiB.
    pub const DEFAULT_CAPACITY: usize = 4 << 20;
    /// Default number of concurrent publishers.
    pub const DEFAULT_LANES: usize = 16;

    /// A spec with the default size, owned by the calling user, mode 0600.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            capacity_bytes: Self::DEFAULT_CAPACITY,
            lanes: Self::DEFAULT_LANES,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mode: 0o600,
        }
    }

    fn geometry(&self) -> Result<Geometry, IpcError> {
        Geometry::from_capacity(self.capacity_bytes, self.lanes).map_err(|why| {
            IpcError::InvalidSpec {
                channel: self.name.clone(),
                why,
            }
        })
    }
}

/// A snapshot of a channel's counters (for `triggerctl status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages delivered.
    pub messages: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Times the channel was quarantined (0 or 1 for one `Channel`).
    pub quarantines: u64,
    /// Times a publisher found its lane full (counted by publishers in the shared header, so a
    /// hostile process can falsify it; it is a statistic, never a control input).
    pub full_ring_waits: u64,
    /// Times the consumer went to sleep on the doorbell.
    pub sleeps: u64,
    /// True while the consumer is asleep (or about to be) on the doorbell.
    pub asleep: bool,
    /// True if the last sleep went through io_uring (false: the `futex(2)` fallback, or never slept).
    pub sleeps_via_io_uring: bool,
    /// Why the channel is quarantined, if it is.
    pub quarantine: Option<Quarantine>,
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
    quarantines: AtomicU64,
    sleeps: AtomicU64,
    io_uring: AtomicBool,
}

/// Consumer-private state: the authoritative read position of every lane. It is never read
/// back from the region (a publisher could have overwritten the shared copy).
struct Cursor {
    heads: Vec<u64>,
    buf: Vec<u8>,
}

struct Shared {
    name: String,
    region: Region,
    stop: AtomicBool,
    counters: Counters,
    cursor: Mutex<Cursor>,
    quarantine: Mutex<Option<Quarantine>>,
}

/// The consumer side of one channel. Dropping it marks the region closed (connected publishers
/// then get `PublishError::Closed`) and removes its name.
pub struct Channel {
    shared: Arc<Shared>,
    /// Hands the region's memfd to publishers; dropped (socket removed) with the channel.
    handout: Option<Handout>,
}

/// Stops a running [`Channel::run`] promptly, even while it sleeps. Cheap to clone; may outlive
/// the channel.
#[derive(Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl Stopper {
    /// Makes `run` return `Ok(())` as soon as it has delivered the message in hand.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Clearing the word makes a futex wait that is about to start return at once; the wake
        // covers one already sleeping (see the doorbell invariant).
        let word = self.shared.region.u32_at(layout::OFF_SLEEPING);
        word.store(AWAKE, Ordering::SeqCst);
        doorbell::futex_wake(word, i32::MAX);
    }
}

/// Records drained from one lane before moving to the next (keeps lanes fair).
const LANE_BATCH: usize = 256;
/// Adaptive spin bounds before sleeping on the doorbell.
const SPIN_MIN: Duration = Duration::from_micros(2);
const SPIN_START: Duration = Duration::from_micros(20);
const SPIN_MAX: Duration = Duration::from_micros(200);
/// Idle polls before the spin starts yielding the CPU between polls (a few microseconds).
const PURE_SPIN_POLLS: u32 = 256;
/// Longest single sleep: a safety net if a hostile process clears the doorbell word.
const MAX_SLEEP: Duration = Duration::from_secs(1);

impl Channel {
    /// Creates the channel's region (a sealed memfd) and its socket with the spec's owner,
    /// group and mode, replacing a stale socket of the same name.
    pub fn create(spec: &ChannelSpec) -> Result<Self, IpcError> {
        let geometry = spec.geometry()?;
        let region = Region::create(&spec.name, geometry)?;
        let handout = Handout::start(
            &spec.name,
            region::socket_path(&spec.name)?,
            region.memfd(),
            (spec.uid, spec.gid, spec.mode),
        )?;
        let cursor = Cursor {
            heads: vec![0; geometry.lanes()],
            buf: vec![0; geometry.max_message()],
        };
        Ok(Self {
            shared: Arc::new(Shared {
                name: spec.name.clone(),
                region,
                stop: AtomicBool::new(false),
                counters: Counters::default(),
                cursor: Mutex::new(cursor),
                quarantine: Mutex::new(None),
            }),
            handout: Some(handout),
        })
    }

    /// The channel's name; its socket is `/dev/shm/triggerd.<name>`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Largest message publishers may send on this channel.
    pub fn max_message(&self) -> usize {
        self.shared.region.geometry().max_message()
    }

    /// A handle that stops `run`.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The channel's counters.
    pub fn stats(&self) -> ChannelStats {
        let c = &self.shared.counters;
        let region = &self.shared.region;
        let quarantine = match self.shared.quarantine.lock() {
            Ok(reason) => reason.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        ChannelStats {
            messages: c.messages.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            quarantines: c.quarantines.load(Ordering::Relaxed),
            full_ring_waits: region
                .u64_at(layout::OFF_FULL_WAITS)
                .load(Ordering::Relaxed),
            sleeps: c.sleeps.load(Ordering::Relaxed),
            asleep: region.u32_at(layout::OFF_SLEEPING).load(Ordering::Relaxed) == ASLEEP,
            sleeps_via_io_uring: c.io_uring.load(Ordering::Relaxed),
            quarantine,
        }
    }

    /// Delivers messages to `deliver`, one call per message, lane by lane in batches, until the
    /// [`Stopper`] is used (`Ok(())`) or the channel is quarantined (`Err(Quarantined)`, also on
    /// every later call). Spins adaptively while messages flow, then sleeps on the doorbell
    /// (about zero CPU when idle). `deliver` gets a private copy: the bytes cannot change under it.
    pub fn run(&self, mut deliver: impl FnMut(&[u8])) -> Result<(), IpcError> {
        let shared = &*self.shared;
        let mut cursor = match shared.cursor.try_lock() {
            Ok(cursor) => cursor,
            Err(TryLockError::WouldBlock) => {
                return Err(IpcError::AlreadyRunning {
                    channel: shared.name.clone(),
                })
            }
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        };
        let quarantined = |reason| IpcError::Quarantined {
            channel: shared.name.clone(),
            reason,
        };
        if let Some(reason) = self.stats().quarantine {
            return Err(quarantined(reason));
        }
        let word = shared.region.u32_at(layout::OFF_SLEEPING);
        let mut sleeper = Sleeper::new();
        let mut spin_budget = SPIN_START;
        loop {
            let mut spin_until = Instant::now() + spin_budget;
            let mut idle_polls = 0u32;
            loop {
                if shared.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                match shared.drain(&mut cursor, &mut deliver) {
                    Ok(0) => {}
                    Ok(_) => {
                        spin_budget = (spin_budget * 2).min(SPIN_MAX);
                        spin_until = Instant::now() + spin_budget;
                        idle_polls = 0;
                        continue;
                    }
                    Err(reason) => {
                        shared.counters.quarantines.fetch_add(1, Ordering::Relaxed);
                        *shared.quarantine.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(reason.clone());
                        return Err(quarantined(reason));
                    }
                }
                idle_polls += 1;
                if idle_polls % 32 == 0 && Instant::now() >= spin_until {
                    break;
                }
                // Past a short pure spin, poll between yields: if a publisher shares our CPU
                // (an oversubscribed host), it gets to run instead of waiting out our budget.
                if idle_polls < PURE_SPIN_POLLS {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            spin_budget = (spin_budget / 2).max(SPIN_MIN);
            // Say we sleep, then look once more: a publisher that stored its tail before our
            // store is seen now; one after it sees ASLEEP and rings.
            word.store(ASLEEP, Ordering::SeqCst);
            if !shared.stop.load(Ordering::SeqCst) && !shared.has_pending(&cursor) {
                shared.counters.sleeps.fetch_add(1, Ordering::Relaxed);
                sleeper.sleep(word, ASLEEP, MAX_SLEEP);
                let via_ring = sleeper.uses_io_uring();
                shared.counters.io_uring.store(via_ring, Ordering::Relaxed);
            }
            word.store(AWAKE, Ordering::Relaxed);
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Publishers still mapped see this and fail with `Closed` instead of filling a dead ring.
        self.shared
            .region
            .u32_at(layout::OFF_CLOSED)
            .store(1, Ordering::SeqCst);
        let geometry = self.shared.region.geometry();
        for lane in 0..geometry.lanes() {
            // Clearing the word first makes a wait about to start return at once.
            let word = self.shared.region.u32_at(geometry.lane_space_wait(lane));
            word.store(AWAKE, Ordering::SeqCst);
            doorbell::futex_wake(word, i32::MAX);
        }
        // Removes the socket: no new publisher gets the region.
        drop(self.handout.take());
    }
}

impl Shared {
    fn active_lanes(&self) -> impl Iterator<Item = usize> {
        let geometry = self.region.geometry();
        let mut bits = self
            .region
            .u64_at(layout::OFF_ACTIVE)
            .load(Ordering::SeqCst)
            & geometry.lane_mask();
        std::iter::from_fn(move || {
            let lane = bits.trailing_zeros() as usize;
            (bits != 0).then(|| {
                bits &= bits - 1;
                lane
            })
        })
    }

    /// True if any active lane has a published tail different from our head.
    fn has_pending(&self, cursor: &Cursor) -> bool {
        let geometry = self.region.geometry();
        self.active_lanes().any(|lane| {
            self.region
                .u64_at(geometry.lane_tail(lane))
                .load(Ordering::SeqCst)
                != cursor.heads[lane]
        })
    }

    /// Delivers what every active lane has published (up to a batch per lane); returns how many
    /// messages, or the damage found.
    fn drain(
        &self,
        cursor: &mut Cursor,
        deliver: &mut impl FnMut(&[u8]),
    ) -> Result<usize, Quarantine> {
        let geometry = self.region.geometry();
        let (mut delivered, mut delivered_bytes) = (0, 0);
        for lane in self.active_lanes() {
            let head = cursor.heads[lane];
            let tail = self
                .region
                .u64_at(geometry.lane_tail(lane))
                .load(Ordering::Acquire);
            if tail == head {
                continue;
            }
            let in_range = tail > head && tail - head <= geometry.lane_bytes() as u64;
            if !in_range || tail % layout::RECORD_ALIGN as u64 != 0 {
                return Err(Quarantine::TailOutOfRange {
                    lane,
                    head,
                    tail,
                    lane_bytes: geometry.lane_bytes(),
                });
            }
            let (mut pos, mut count, mut bytes) = (head, 0, 0u64);
            while pos < tail && count < LANE_BATCH {
                match self.read_record(lane, pos, tail, &mut cursor.buf)? {
                    Record::Padding(span) => pos += span as u64,
                    Record::Message(len) => {
                        deliver(&cursor.buf[..len]);
                        pos += layout::record_span(len) as u64;
                        count += 1;
                        bytes += len as u64;
                    }
                }
            }
            cursor.heads[lane] = pos;
            // SeqCst (includes release: our reads of the records happen before the publisher may
            // reuse the space), then the lane's space doorbell: a publisher waiting for room either
            // sees this head or has said it waits and is woken.
            self.region
                .u64_at(geometry.lane_head(lane))
                .swap(pos, Ordering::SeqCst);
            doorbell::ring_if_asleep(self.region.u32_at(geometry.lane_space_wait(lane)));
            delivered += count;
            delivered_bytes += bytes;
        }
        if delivered > 0 {
            // Only the consumer (holding the cursor) writes these: no locked read-modify-write.
            let counters = &self.counters;
            let messages = counters.messages.load(Ordering::Relaxed) + delivered as u64;
            counters.messages.store(messages, Ordering::Relaxed);
            let bytes = counters.bytes.load(Ordering::Relaxed) + delivered_bytes;
            counters.bytes.store(bytes, Ordering::Relaxed);
        }
        Ok(delivered)
    }

    /// Reads and validates the record at `pos` (with `pos < tail`, both 8-aligned and at most a
    /// lane apart), copying a message's payload into `buf`.
    fn read_record(
        &self,
        lane: usize,
        pos: u64,
        tail: u64,
        buf: &mut [u8],
    ) -> Result<Record, Quarantine> {
        let geometry = self.region.geometry();
        let mut header = [0u8; RECORD_HEADER];
        self.region.read(geometry.lane_byte(lane, pos), &mut header);
        let word = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let found = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let expected = layout::sequence_at(pos);
        if found != expected {
            return Err(Quarantine::BadSequence {
                lane,
                pos,
                found,
                expected,
            });
        }
        let available = (tail - pos) as usize;
        let contiguous = geometry.contiguous_from(pos);
        let len = (word & !PAD_FLAG) as usize;
        if word & PAD_FLAG != 0 {
            if RECORD_HEADER + len != contiguous || contiguous > available {
                return Err(Quarantine::BadPadding { lane, pos, len });
            }
            return Ok(Record::Padding(contiguous));
        }
        let span = layout::record_span(len);
        if len > buf.len() || span > available || span > contiguous {
            return Err(Quarantine::BadLength {
                lane,
                pos,
                len,
                max: buf.len(),
                available: available.min(contiguous),
            });
        }
        self.region.read(
            geometry.lane_byte(lane, pos) + RECORD_HEADER,
            &mut buf[..len],
        );
        Ok(Record::Message(len))
    }
}

enum Record {
    Message(usize),
    Padding(usize),
}
