//! The byte layout of a channel's shared region, and the geometry (lane count, lane size) that
//! both sides derive offsets from. Nothing here touches memory: it only computes offsets and
//! validates numbers, so every other module reaches the region through offsets checked here.
//!
//! ```text
//! page 0      header: magic, version, lanes, lane_bytes, closed | doorbell word | active-lane mask | full-ring waits
//! page 1..    lane headers, 512 B each: owner | tail (written by the lane's publisher) | head (written by the consumer) | space doorbell
//! then        lane data, `lane_bytes` each (a power of two): records of 8-byte header + payload padded to 8
//! ```
//! Each shared word sits on its own pair of cache lines, so the publisher's tail, the consumer's
//! head and the doorbells do not false-share.

/// "TRGDSHM1", little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"TRGDSHM1");
/// Layout version; a publisher refuses any other.
pub(crate) const VERSION: u32 = 1;
const PAGE: usize = 4096;
/// Hot words sit 128 bytes apart: adjacent-line prefetchers move 64-byte lines in pairs.
const SPACING: usize = 128;

pub(crate) const OFF_MAGIC: usize = 0;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_LANES: usize = 12;
pub(crate) const OFF_LANE_BYTES: usize = 16;
/// Non-zero once the consumer has removed the channel: publishing into it would be lost.
pub(crate) const OFF_CLOSED: usize = 24;
/// The doorbell word (u32): 1 while the consumer sleeps (or is about to), else 0. It is also the
/// futex the consumer waits on.
pub(crate) const OFF_SLEEPING: usize = SPACING;
/// Bit i set: lane i has (or had) a publisher; the consumer scans only these lanes.
pub(crate) const OFF_ACTIVE: usize = 2 * SPACING;
/// Publishers count here each time they find their lane full.
pub(crate) const OFF_FULL_WAITS: usize = 3 * SPACING;

const LANE_HEADERS_AT: usize = PAGE;
const LANE_HEADER_SIZE: usize = 4 * SPACING;
const LANE_OWNER: usize = 0;
const LANE_TAIL: usize = SPACING;
const LANE_HEAD: usize = 2 * SPACING;
const LANE_SPACE_WAIT: usize = 3 * SPACING;

/// Size of a record header: `u32` length (high bit = padding) then `u32` sequence.
pub(crate) const RECORD_HEADER: usize = 8;
/// Records start on 8-byte boundaries.
pub(crate) const RECORD_ALIGN: usize = 8;
/// Set in a record's length word: the record is padding up to the end of the lane.
pub(crate) const PAD_FLAG: u32 = 0x8000_0000;
/// Lanes are a bitmask in one `u64`.
pub const MAX_LANES: usize = 64;
/// Every channel accepts messages of at least this many bytes.
pub const MIN_MAX_MESSAGE: usize = 64 * 1024;
/// Smallest lane: twice the largest record, so a record always fits once the lane drains.
pub const MIN_LANE_BYTES: usize = 2 * (MIN_MAX_MESSAGE + RECORD_HEADER).next_power_of_two();
/// Largest lane (keeps positions and offsets far from overflow and regions reasonable).
pub(crate) const MAX_LANE_BYTES: usize = 1 << 30;

/// Lane count and lane size of one region; every offset derives from these two numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    lanes: usize,
    lane_bytes: usize,
}

impl Geometry {
    /// Validates a lane count (1..=64) and lane size (a power of two in
    /// `MIN_LANE_BYTES..=MAX_LANE_BYTES`).
    pub(crate) fn new(lanes: usize, lane_bytes: usize) -> Result<Self, String> {
        if lanes == 0 || lanes > MAX_LANES {
            return Err(format!("lanes must be 1..={MAX_LANES}, got {lanes}"));
        }
        if !lane_bytes.is_power_of_two() || !(MIN_LANE_BYTES..=MAX_LANE_BYTES).contains(&lane_bytes)
        {
            return Err(format!(
                "lane size must be a power of two in {MIN_LANE_BYTES}..={MAX_LANE_BYTES}, got {lane_bytes}"
            ));
        }
        Ok(Self { lanes, lane_bytes })
    }

    /// Splits a total data capacity over `lanes`, rounding each lane down to a power of two.
    pub(crate) fn from_capacity(capacity_bytes: usize, lanes: usize) -> Result<Self, String> {
        let per_lane = capacity_bytes.checked_div(lanes).unwrap_or(0);
        if per_lane < MIN_LANE_BYTES {
            return Err(format!(
                "capacity {capacity_bytes} B over {lanes} lanes gives less than {MIN_LANE_BYTES} B per lane"
            ));
        }
        let rounded = 1usize << (usize::BITS - 1 - per_lane.leading_zeros());
        Self::new(lanes, rounded.min(MAX_LANE_BYTES))
    }

    pub(crate) fn lanes(&self) -> usize {
        self.lanes
    }

    pub(crate) fn lane_bytes(&self) -> usize {
        self.lane_bytes
    }

    /// Mask of the bits of the active-lane word that name real lanes.
    pub(crate) fn lane_mask(&self) -> u64 {
        if self.lanes == MAX_LANES {
            u64::MAX
        } else {
            (1u64 << self.lanes) - 1
        }
    }

    /// Largest payload: half a lane minus the record header, so any record fits in an empty
    /// lane even after padding to the lane's end.
    pub(crate) fn max_message(&self) -> usize {
        self.lane_bytes / 2 - RECORD_HEADER
    }

    fn data_at(&self) -> usize {
        LANE_HEADERS_AT + (self.lanes * LANE_HEADER_SIZE).next_multiple_of(PAGE)
    }

    /// Total size of the region in bytes.
    pub(crate) fn region_len(&self) -> usize {
        self.data_at() + self.lanes * self.lane_bytes
    }

    fn lane_header(&self, lane: usize) -> usize {
        assert!(lane < self.lanes, "lane index out of range");
        LANE_HEADERS_AT + lane * LANE_HEADER_SIZE
    }

    pub(crate) fn lane_owner(&self, lane: usize) -> usize {
        self.lane_header(lane) + LANE_OWNER
    }

    pub(crate) fn lane_tail(&self, lane: usize) -> usize {
        self.lane_header(lane) + LANE_TAIL
    }

    pub(crate) fn lane_head(&self, lane: usize) -> usize {
        self.lane_header(lane) + LANE_HEAD
    }

    /// The lane's space doorbell (u32 futex): 1 while its publisher waits for the consumer to
    /// free space.
    pub(crate) fn lane_space_wait(&self, lane: usize) -> usize {
        self.lane_header(lane) + LANE_SPACE_WAIT
    }

    /// Offset in the region of byte position `pos` of `lane`'s data (positions wrap).
    pub(crate) fn lane_byte(&self, lane: usize, pos: u64) -> usize {
        assert!(lane < self.lanes, "lane index out of range");
        self.data_at() + lane * self.lane_bytes + self.offset_in_lane(pos)
    }

    /// Where position `pos` falls inside a lane.
    pub(crate) fn offset_in_lane(&self, pos: u64) -> usize {
        // lane_bytes is a power of two no larger than 2^30, so the mask fits any usize.
        (pos & (self.lane_bytes as u64 - 1)) as usize
    }

    /// Bytes from `pos` to the end of the lane (a record may not cross it).
    pub(crate) fn contiguous_from(&self, pos: u64) -> usize {
        self.lane_bytes - self.offset_in_lane(pos)
    }
}

/// Bytes a record of `len` payload bytes occupies (header + payload padded to 8).
pub(crate) fn record_span(len: usize) -> usize {
    RECORD_HEADER + len.next_multiple_of(RECORD_ALIGN)
}

/// The sequence number a record at byte position `pos` must carry: its position in 8-byte
/// units, truncated. A stale record from an earlier lap or a misplaced write fails this check.
pub(crate) fn sequence_at(pos: u64) -> u32 {
    (pos / RECORD_ALIGN as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_rejects_bad_numbers() {
        assert!(Geometry::new(0, MIN_LANE_BYTES).is_err());
        assert!(Geometry::new(65, MIN_LANE_BYTES).is_err());
        assert!(Geometry::new(1, MIN_LANE_BYTES + 8).is_err());
        assert!(Geometry::new(1, MIN_LANE_BYTES / 2).is_err());
        assert!(Geometry::from_capacity(MIN_LANE_BYTES * 4 - 1, 4).is_err());
        assert!(Geometry::from_capacity(1 << 20, 0).is_err());
    }

    #[test]
    fn geometry_offsets_do_not_overlap() {
        let g = Geometry::from_capacity(3 << 20, 3).unwrap();
        assert_eq!(g.lane_bytes(), 1 << 20);
        assert!(g.max_message() >= MIN_MAX_MESSAGE);
        assert!(g.lane_head(2) + 8 <= g.lane_byte(0, 0));
        assert_eq!(g.lane_byte(2, (1 << 20) * 5 + 8), g.lane_byte(2, 8));
        assert_eq!(g.lane_byte(2, (1 << 20) - 1) + 1, g.region_len());
        assert_eq!(g.lane_mask(), 0b111);
        assert_eq!(
            Geometry::new(64, MIN_LANE_BYTES).unwrap().lane_mask(),
            u64::MAX
        );
    }

    #[test]
    fn records_are_aligned_and_sequenced() {
        assert_eq!(record_span(0), 8);
        assert_eq!(record_span(1), 16);
        assert_eq!(record_span(64), 72);
        assert_eq!(sequence_at(80), 10);
        assert_eq!(sequence_at(8 << 32), 0);
    }
}
