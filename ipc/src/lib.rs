//! The local fast path: local programs publish messages into a channel's shared-memory region
//! (`/dev/shm/triggerd.<name>`, access controlled by the file's owner, group and mode) and the
//! daemon's consumer hands each one to the dispatcher.
//!
//! Each publisher owns a lane, a single-producer ring of variable-length records (8-byte header:
//! length and a sequence number equal to the record's position, then the payload padded to 8).
//! A record becomes visible with one release store of the lane's tail, so a publisher killed
//! mid-write never leaves anything for the consumer to wait on. The consumer spins while messages
//! flow and otherwise sleeps on a futex doorbell through io_uring; publishers ring it only when
//! the consumer has said it sleeps. The consumer treats every byte of the region as hostile:
//! impossible tails, lengths or sequence numbers quarantine the channel.
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

mod consumer;
mod doorbell;
mod error;
pub mod ffi;
mod layout;
mod publisher;
mod region;

pub use consumer::{Channel, ChannelSpec, ChannelStats, Stopper};
pub use error::{IpcError, PublishError, Quarantine};
pub use layout::MIN_MAX_MESSAGE;
pub use publisher::Publisher;
pub use region::NAME_PREFIX;
