//! Typed errors of the fast path: setting up or opening a channel ([`IpcError`]), publishing
//! into it ([`PublishError`]), and the structural damage that quarantines a channel
//! ([`Quarantine`]).

/// Errors from creating, opening or consuming a channel.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// The channel name cannot be turned into a shared-memory object name.
    #[error("invalid channel name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    /// The channel's size or lane count cannot form a valid region.
    #[error("channel {channel:?}: {why}")]
    InvalidSpec { channel: String, why: String },
    /// No region exists under the channel's name.
    #[error("channel {channel:?} does not exist (no /dev/shm/triggerd.{channel}): is triggerd running with this [[channel]]?")]
    NoSuchChannel { channel: String },
    /// The region exists but its owner/group/mode do not let the caller open it read-write.
    #[error("permission denied for channel {channel:?}: the channel's owner, group and mode do not allow this user to publish")]
    PermissionDenied { channel: String },
    /// The region exists but does not hold a compatible triggerd channel.
    #[error("channel {channel:?}: not a usable triggerd channel region: {why}")]
    BadRegion { channel: String, why: &'static str },
    /// Every publisher lane is held by a live process.
    #[error("channel {channel:?}: all {lanes} publisher lanes are held by live publishers")]
    NoFreeLane { channel: String, lanes: usize },
    /// The consumer found structural damage in the region and stopped reading it.
    #[error("channel {channel:?} quarantined: {reason}")]
    Quarantined { channel: String, reason: Quarantine },
    /// `run` was called while another `run` on the same channel is active.
    #[error("channel {channel:?}: a consumer is already running")]
    AlreadyRunning { channel: String },
    /// A system call failed.
    #[error("channel {channel:?}: {op}: {source}")]
    Os {
        channel: String,
        op: &'static str,
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
        lane: usize,
        head: u64,
        tail: u64,
        lane_bytes: usize,
    },
    /// A record's sequence number does not match its position.
    #[error("lane {lane}: record at {pos} carries sequence {found:#x}, expected {expected:#x}")]
    BadSequence {
        lane: usize,
        pos: u64,
        found: u32,
        expected: u32,
    },
    /// A record's length exceeds the maximum, the published bytes, or the lane's end.
    #[error("lane {lane}: record at {pos} claims {len} bytes (max {max}, {available} available)")]
    BadLength {
        lane: usize,
        pos: u64,
        len: usize,
        max: usize,
        available: usize,
    },
    /// A padding record does not end exactly at the end of the lane.
    #[error("lane {lane}: padding at {pos} of {len} bytes does not end at the lane's end")]
    BadPadding { lane: usize, pos: u64, len: usize },
}

/// Errors from [`crate::Publisher`]'s publish calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The publisher's lane is full: the consumer has not caught up. Nothing was written.
    #[error("channel full: would block")]
    WouldBlock,
    /// The message is longer than the channel accepts.
    #[error("message of {len} bytes exceeds the channel's maximum of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The daemon removed the channel (stopped, or dropped the `[[channel]]`); reconnect once
    /// it is back. Nothing was written.
    #[error("channel closed by triggerd: reconnect")]
    Closed,
    /// The lane's shared counters are impossible (another process wrote garbage into the region).
    #[error("channel region corrupted: {0}")]
    Corrupt(&'static str),
}
