//! Typed errors of the fast path: setting up or opening a channel ([`IpcError`]), publishing
//! into it ([`PublishError`]), and the structural damage that quarantines a channel
//! ([`Quarantine`]).

/// Errors from creating, opening or consuming a channel.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// The channel name cannot be turned into a shared-memory object name.
    #[error("invalid channel name {name:?}: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks (length, characters).
        why: &'static str,
    },
    /// The channel's size or lane count cannot form a valid region.
    #[error("channel {channel:?}: {why}")]
    InvalidSpec {
        /// The channel's name, as configured in `[[channel]]`.
        channel: String,
        /// Which limit the size or lane count breaks.
        why: String,
    },
    /// No region exists under the channel's name.
    #[error("channel {channel:?} does not exist (no /dev/shm/triggerd.{channel}): is triggerd running with this [[channel]]?")]
    NoSuchChannel {
        /// The channel's name, as configured in `[[channel]]`.
        channel: String,
    },
    /// The region exists but its owner/group/mode do not let the caller open it read-write.
    #[error("permission denied for channel {channel:?}: the channel's owner, group and mode do not allow this user to publish")]
    PermissionDenied {
        /// The channel's name, as configured in `[[channel]]`.
        channel: String,
    },
    /// The region exists but does not hold a compatible triggerd channel.
    #[error("channel {channel:?}: not a usable triggerd channel region: {why}")]
    BadRegion {
        /// The channel's name, as configured in `[[channel]]`.
        channel: String,
        /// What is wrong, e.g. "unsupported layout version" or "region is not sealed against resizing".
        why: &'static str,
    },
    /// Every publisher lane is held by a live process.
    #[error("channel {channel:?}: all {lanes} publisher lanes are held by live publishers")]
    NoFreeLane {
        /// The channel's name, as configured in `[[channel]]`.
        channel: String,
        /// How many lanes the region has.
        lanes: usize,
    },
    /// The consumer found structural damage in the region and stopped reading it.
    #[error("channel {channel:?} quarantined: {reason}")]
    Quarantined {
        /// The channel's name, as configured in `[[channel]]`.
        channel: String,
        /// The damage that was found.
        reason: Quarantine,
    },
    /// `run` was called while another `run` on the same channel is active.
    #[error("channel {channel:?}: a consumer is already running")]
    AlreadyRunning {
        /// The channel's name, as configured in `[[channel]]`.
        channel: String,
    },
    /// A system call failed.
    #[error("channel {channel:?}: {op}: {source}")]
    Os {
        /// The channel's name, as configured in `[[channel]]`.
        channel: String,
        /// What was being done, e.g. "mmap" or "connect".
        op: &'static str,
        /// The error the system call returned.
        #[source]
        source: std::io::Error,
    },
}

/// Structural damage found by the consumer in a channel's region. Any of these quarantines the
/// channel: the consumer stops reading it for good (until the daemon re-creates it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Quarantine {
    /// A lane's published tail is behind the consumer, too far ahead, or misaligned.
    #[error("lane {lane}: tail {tail} impossible for head {head} and lane size {lane_bytes}")]
    TailOutOfRange {
        /// Index of the lane in the region.
        lane: usize,
        /// The consumer's private head: the position up to which it has read.
        head: u64,
        /// The tail the publisher stored: the position up to which records are complete.
        tail: u64,
        /// The ring's size in bytes; a tail may be at most this far ahead of the head.
        lane_bytes: usize,
    },
    /// A record's sequence number does not match its position.
    #[error("lane {lane}: record at {pos} carries sequence {found:#x}, expected {expected:#x}")]
    BadSequence {
        /// Index of the lane in the region.
        lane: usize,
        /// The record's position: bytes written to the lane before it, never wrapped.
        pos: u64,
        /// The sequence number in the record's header.
        found: u32,
        /// The sequence number its position implies (`pos / 8`, truncated to 32 bits).
        expected: u32,
    },
    /// A record's length exceeds the maximum, the published bytes, or the lane's end.
    #[error("lane {lane}: record at {pos} claims {len} bytes (max {max}, {available} available)")]
    BadLength {
        /// Index of the lane in the region.
        lane: usize,
        /// The record's position: bytes written to the lane before it, never wrapped.
        pos: u64,
        /// The payload length in the record's header, in bytes.
        len: usize,
        /// The channel's largest message, in bytes.
        max: usize,
        /// Bytes from the record to the published tail or the lane's end, whichever is nearer.
        available: usize,
    },
    /// A padding record does not end exactly at the end of the lane.
    #[error("lane {lane}: padding at {pos} of {len} bytes does not end at the lane's end")]
    BadPadding {
        /// Index of the lane in the region.
        lane: usize,
        /// The padding record's position: bytes written to the lane before it, never wrapped.
        pos: u64,
        /// The padding length in its header, in bytes (header excluded).
        len: usize,
    },
}

/// Errors from [`crate::Publisher`]'s publish calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The publisher's lane is full: the consumer has not caught up. Nothing was written.
    #[error("channel full: would block")]
    WouldBlock,
    /// The message is longer than the channel accepts.
    #[error("message of {len} bytes exceeds the channel's maximum of {max} bytes")]
    TooLarge {
        /// The message's length, in bytes.
        len: usize,
        /// The channel's largest message, in bytes.
        max: usize,
    },
    /// The daemon removed the channel (stopped, or dropped the `[[channel]]`); reconnect once
    /// it is back. Nothing was written.
    #[error("channel closed by triggerd: reconnect")]
    Closed,
    /// The lane's shared counters are impossible (another process wrote garbage into the region).
    #[error("channel region corrupted: {0}")]
    Corrupt(&'static str),
}
