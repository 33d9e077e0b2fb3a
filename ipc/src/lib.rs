//! The local fast path: local programs publish messages into a channel's shared-memory region
//! and the daemon's consumer hands each one to the dispatcher. The region is a memfd sealed
//! against resizing, handed to publishers over the Unix socket `/dev/shm/triggerd.<name>`
//! (access controlled by the socket's owner, group and mode; see `handout`).
//!
//! Design (one region per channel, see `layout` for the bytes):
//! - Each publisher owns a lane, a single-producer ring of variable-length records (8-byte header:
//!   length and a sequence number equal to the record's position, then the payload padded to 8).
//!   Many publishers therefore never contend, and per-publisher order is the lane's order.
//! - Invariant: a record becomes visible only through one release store of its lane's tail,
//!   made after the record is fully written; the consumer reads only between its private head
//!   and that tail. A publisher killed at any instruction leaves either the old tail (its partial
//!   record invisible; the next owner of the lane overwrites it) or the new one (the record is
//!   complete). There is no claimed-but-uncommitted slot, so nothing to wait for or skip, and the
//!   consumer never blocks on a publisher. A dead publisher's lane is taken over by the next
//!   `Publisher::connect` (owners are checked by pid).
//! - The consumer spins adaptively while messages flow and otherwise sleeps on a futex doorbell
//!   through io_uring (`IORING_OP_FUTEX_WAIT`; `futex(2)` fallback); publishers ring it only
//!   when the consumer has said it sleeps. Publishing and draining are batched.
//! - The consumer treats every byte of the region as hostile: geometry comes from its own
//!   memory, every tail, length, padding and sequence number is bounds-checked, and any
//!   impossible value quarantines the channel (`run` returns `IpcError::Quarantined`, counted in
//!   `ChannelStats`) without touching other channels.
//! - Back-pressure: a full lane makes `publish` return `PublishError::WouldBlock` (or
//!   `publish_timeout` wait); nothing is dropped. Messages up to half a lane (at least 64 KiB).
//!
//! The daemon runs `Channel::run` on a thread of its own per channel and stops it with the
//! channel's `Stopper`; local programs use `Publisher` (or the C ABI in `ffi`, header
//! `include/triggerd.h`).
//!
//! ```no_run
//! use triggerd_ipc::{Channel, ChannelSpec, Publisher};
//! let channel = Channel::create(&ChannelSpec::new("metrics"))?;
//! let stopper = channel.stopper();
//! let consumer = std::thread::spawn(move || channel.run(|msg| println!("{} bytes", msg.len())));
//! Publisher::connect("metrics")?.publish(b"cpu=0.5")?;
//! stopper.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs, unreachable_pub)]

mod consumer;
mod doorbell;
mod error;
pub mod ffi;
mod handout;
mod layout;
mod publisher;
mod region;

pub use consumer::{Channel, ChannelSpec, ChannelStats, Stopper};
pub use error::{IpcError, PublishError, Quarantine};
pub use layout::{MAX_LANES, MIN_LANE_BYTES, MIN_MAX_MESSAGE};
pub use publisher::Publisher;
pub use region::{check_name, receive_memfd, socket_path, NAME_PREFIX};
