//! Durable spool: an append-only, segmented log on disk that keeps events for the broker
//! through broker outages and daemon restarts, and hands them back in order.
//!
//! Layout in the spool directory: `origin` (a random 64-bit id that, with a record's sequence
//! number, makes a request id unique across restarts), `acked` (the first sequence number not
//! yet acknowledged, replaced atomically), and segments `<first-seq>.seg`, each a run of
//! records ([`disk`]). The directory is 0700 and every file 0600: payloads are other users'
//! data. An append reaches the kernel before it returns, and one that fails (ENOSPC, EIO) is
//! rolled back to the end of the last whole record and refused, so a refused event never
//! leaves a torn record for later ones to hide behind. A torn or damaged tail of the last
//! segment is cut off on open; a whole record whose checksum fails is skipped and counted
//! (`corrupt`) but keeps its sequence number, and each segment's records are numbered from its
//! file name, so damage never shifts the numbers of later records. Invariants: sequence
//! numbers are dense and increase by one per record; records below `acked` are never handed
//! out again once the ack is persisted; a segment is deleted only when every record in it is
//! acknowledged (or dropped by [`FullPolicy::DropOldest`]). The spool is bounded by
//! `max_bytes`; what happens when full is explicit ([`FullPolicy`]) and counted.

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod disk;

use disk::{encode, open_append, private_dir, read_record, scan, sync_dir, write_atomically};
use disk::{Next, HEADER};

/// Largest record accepted (and believed when reading a length field).
pub const MAX_RECORD: usize = 64 * 1024 * 1024;
/// Acks are persisted at most this often (and on drop); a crash re-delivers the rest.
const ACK_PERSIST_INTERVAL: Duration = Duration::from_millis(100);

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync after every append (slowest, loses nothing acknowledged by `append`).
    Always,
    /// fsync when the last one is older than this (loses at most this window on power loss).
    Interval(Duration),
    /// Leave it to the kernel (survives a daemon crash, not a power loss).
    Never,
}

/// What `append` does when the spool holds `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Refuse the new record ([`SpoolError::Full`]); counted in `rejected`.
    Reject,
    /// Delete the oldest segment, acknowledged or not; its records count in `dropped`.
    DropOldest,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Directory holding the spool (created if missing).
    pub dir: PathBuf,
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
    /// Upper bound of all segments together.
    pub max_bytes: u64,
    /// fsync policy.
    pub sync: SyncPolicy,
    /// Policy when full.
    pub full: FullPolicy,
}

impl SpoolOptions {
    /// Defaults: 8 MiB segments, 1 GiB bound, fsync every 100 ms, reject when full.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolOptions {
        SpoolOptions {
            dir: dir.into(),
            segment_bytes: 8 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
            full: FullPolicy::Reject,
        }
    }
}

/// Counters since the spool was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records appended.
    pub appended: u64,
    /// Records refused because the spool was full.
    pub rejected: u64,
    /// Unacknowledged records deleted to make room.
    pub dropped: u64,
    /// Records not yet acknowledged.
    pub pending: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Records skipped on reading because their checksum failed (or lost to a damaged
    /// segment's unreadable rest).
    pub corrupt: u64,
    /// Appends refused because the disk failed them (ENOSPC, EIO); each was rolled back.
    pub errors: u64,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Disk I/O failed.
    #[error("spool {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The spool is full and the policy is [`FullPolicy::Reject`].
    #[error("spool full ({0} bytes)")]
    Full(u64),
    /// The record is larger than [`MAX_RECORD`].
    #[error("record of {0} bytes is too large")]
    TooLarge(usize),
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    bytes: u64,
}

/// An open spool.
pub struct Spool {
    options: SpoolOptions,
    origin: u64,
    segments: Vec<Segment>,
    /// The last segment, opened for appending; it holds exactly `end` valid bytes unless
    /// `torn` (a failed rollback, retried before the next append).
    writer: File,
    end: u64,
    torn: bool,
    scratch: Vec<u8>,
    next_seq: u64,
    acked: u64,
    persisted_ack: u64,
    last_ack_write: Instant,
    last_sync: Instant,
    reader: Option<(usize, BufReader<File>)>,
    read_seq: u64,
    stats: SpoolStats,
}

impl Spool {
    /// Opens (or creates) the spool; reading resumes at the first unacknowledged record.
    pub fn open(options: SpoolOptions) -> Result<Spool, SpoolError> {
        let dir = options.dir.clone();
        private_dir(&dir)?;
        // Older spools were created world-readable: close every file up.
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600));
        }
        let origin_path = dir.join("origin");
        let origin = match fs::read_to_string(&origin_path) {
            Ok(text) => u64::from_str_radix(text.trim(), 16).ok(),
            Err(_) => None,
        };
        let origin = match origin {
            Some(o) => o,
            None => {
                let o = rand::random::<u64>() | 1;
                write_atomically(&origin_path, format!("{o:016x}\n").as_bytes())?;
                o
            }
        };
        let mut acked = fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let mut segments = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let bytes = entry.metadata().map_err(io_err(&entry.path()))?.len();
            segments.push(Segment {
                first,
                path: entry.path(),
                bytes,
            });
        }
        segments.sort_by_key(|s| s.first);
        if segments.is_empty() {
            let path = dir.join(format!("{acked:020}.seg"));
            open_append(&path)?;
            sync_dir(&dir)?;
            segments.push(Segment {
                first: acked,
                path,
                bytes: 0,
            });
        }
        // Only the last segment can have a torn tail: count its valid records and cut there.
        let last = segments.len() - 1;
        let (count, _, valid_bytes) = scan(&segments[last].path)?;
        let file = open_append(&segments[last].path)?;
        file.set_len(valid_bytes)
            .map_err(io_err(&segments[last].path))?;
        segments[last].bytes = valid_bytes;
        let next_seq = segments[last].first + count;
        acked = acked.clamp(segments[0].first, next_seq);
        let now = Instant::now();
        let mut spool = Spool {
            options,
            origin,
            segments,
            writer: file,
            end: valid_bytes,
            torn: false,
            scratch: Vec::new(),
            next_seq,
            acked,
            persisted_ack: acked,
            last_ack_write: now,
            last_sync: now,
            reader: None,
            read_seq: acked,
            stats: SpoolStats::default(),
        };
        spool.delete_acked_segments()?;
        spool.stats.bytes = spool.segments.iter().map(|s| s.bytes).sum();
        Ok(spool)
    }

    /// The spool's random, persistent id.
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// Sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// First sequence number not yet acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Counters.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            pending: self.next_seq - self.acked,
            ..self.stats
        }
    }

    /// Appends one record and returns its sequence number.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        if payload.len() > MAX_RECORD {
            return Err(SpoolError::TooLarge(payload.len()));
        }
        let size = (HEADER + payload.len()) as u64;
        while self.stats.bytes + size > self.options.max_bytes {
            match self.options.full {
                FullPolicy::Reject => {
                    self.stats.rejected += 1;
                    return Err(SpoolError::Full(self.options.max_bytes));
                }
                FullPolicy::DropOldest => {
                    if !self.drop_oldest()? {
                        self.stats.rejected += 1;
                        return Err(SpoolError::Full(self.options.max_bytes));
                    }
                }
            }
        }
        if self
            .segments
            .last()
            .is_some_and(|s| s.bytes >= self.options.segment_bytes)
        {
            self.roll()?;
        }
        if let Err(e) = self.write_record(payload) {
            self.stats.errors += 1;
            self.rollback();
            return Err(e);
        }
        self.end += size;
        if let Some(s) = self.segments.last_mut() {
            s.bytes += size;
        }
        self.stats.bytes += size;
        self.stats.appended += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        if let SyncPolicy::Interval(every) = self.options.sync {
            if self.last_sync.elapsed() >= every {
                // The record is with the kernel already; a failed fsync is retried later.
                if let Err(e) = self.sync() {
                    tracing::warn!("spool: {e}");
                }
            }
        }
        Ok(seq)
    }

    /// Writes one record at `end` (with `sync = "always"`, to disk).
    fn write_record(&mut self, payload: &[u8]) -> Result<(), SpoolError> {
        let path = self.current_path();
        if self.torn {
            self.writer.set_len(self.end).map_err(io_err(&path))?;
            self.torn = false;
        }
        encode(payload, &mut self.scratch);
        self.writer
            .write_all(&self.scratch)
            .map_err(io_err(&path))?;
        if self.options.sync == SyncPolicy::Always {
            self.writer.sync_data().map_err(io_err(&path))?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Cuts the segment back to its last whole record after a failed write.
    fn rollback(&mut self) {
        self.torn = self.writer.set_len(self.end).is_err();
        if self.torn {
            tracing::error!(path = %self.current_path().display(), "spool: cannot cut a failed append back; retried before the next one");
        }
    }

    /// Forces records to disk when the sync policy's interval has passed, and persists
    /// acknowledgements a failure left behind. Call it regularly (the forwarder does).
    pub fn tick(&mut self) -> Result<(), SpoolError> {
        if self.persisted_ack != self.acked && self.last_ack_write.elapsed() >= ACK_PERSIST_INTERVAL
        {
            self.persist_ack()?;
            self.delete_acked_segments()?;
        }
        match self.options.sync {
            SyncPolicy::Interval(every) if self.last_sync.elapsed() >= every => self.sync(),
            _ => Ok(()),
        }
    }

    /// Forces appended records to disk.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let path = self.current_path();
        if self.options.sync != SyncPolicy::Never {
            self.writer.sync_data().map_err(io_err(&path))?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    fn roll(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let path = self.options.dir.join(format!("{:020}.seg", self.next_seq));
        let file = open_append(&path)?;
        sync_dir(&self.options.dir)?;
        self.writer = file;
        self.end = 0;
        self.torn = false;
        self.segments.push(Segment {
            first: self.next_seq,
            path,
            bytes: 0,
        });
        Ok(())
    }

    /// Deletes the oldest segment to make room; false when only the current one is left.
    fn drop_oldest(&mut self) -> Result<bool, SpoolError> {
        if self.segments.len() < 2 {
            return Ok(false);
        }
        let end = self.segments[1].first;
        let lost = end.saturating_sub(self.acked.max(self.segments[0].first));
        self.stats.dropped += lost;
        tracing::warn!(records = lost, "spool full: dropped the oldest segment");
        if self.acked < end {
            self.acked = end;
            self.persist_ack()?;
        }
        if self.read_seq < end {
            self.read_seq = end;
            self.reader = None;
        }
        self.remove_first_segment()?;
        Ok(true)
    }

    /// Reads up to `max` records from the read position on (the first call after open starts
    /// at the first unacknowledged one); returns `(seq, payload)` pairs in order.
    pub fn read(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, SpoolError> {
        let mut out = Vec::new();
        if self.read_seq >= self.next_seq || max == 0 {
            return Ok(out);
        }
        if self.reader.is_none() {
            self.reader = Some(self.position_reader(self.read_seq)?);
        }
        while out.len() < max && self.read_seq < self.next_seq {
            let Some((index, reader)) = self.reader.as_mut() else {
                break;
            };
            match read_record(reader) {
                Next::Record(payload) => {
                    out.push((self.read_seq, payload));
                    self.read_seq += 1;
                }
                Next::Corrupt(_) => {
                    self.stats.corrupt += 1;
                    tracing::error!(
                        seq = self.read_seq,
                        "spool record fails its checksum; skipped"
                    );
                    self.read_seq += 1;
                }
                Next::End => {
                    // End of this segment: the next one's records are numbered from its name,
                    // whatever this one's damage swallowed.
                    let next = *index + 1;
                    let Some(segment) = self.segments.get(next) else {
                        break;
                    };
                    if segment.first > self.read_seq {
                        self.stats.corrupt += segment.first - self.read_seq;
                        tracing::error!(
                            lost = segment.first - self.read_seq,
                            "spool segment damaged; its unreadable rest skipped"
                        );
                        self.read_seq = segment.first;
                    }
                    let file = File::open(&segment.path).map_err(io_err(&segment.path))?;
                    self.reader = Some((next, BufReader::with_capacity(256 * 1024, file)));
                }
            }
        }
        Ok(out)
    }

    /// Opens the segment holding `seq` and skips to it.
    fn position_reader(&self, seq: u64) -> Result<(usize, BufReader<File>), SpoolError> {
        let index = self
            .segments
            .iter()
            .rposition(|s| s.first <= seq)
            .unwrap_or(0);
        let segment = &self.segments[index];
        let file = File::open(&segment.path).map_err(io_err(&segment.path))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        for _ in segment.first..seq {
            if let Next::End = read_record(&mut reader) {
                break;
            }
        }
        Ok((index, reader))
    }

    /// Sequence number the next [`Spool::read`] starts at.
    pub fn read_position(&self) -> u64 {
        self.read_seq
    }

    /// Moves the read position back to the first unacknowledged record (to re-send).
    pub fn rewind(&mut self) {
        self.read_seq = self.acked;
        self.reader = None;
    }

    /// Acknowledges every record below `upto`; whole segments below it are deleted.
    pub fn ack(&mut self, upto: u64) -> Result<(), SpoolError> {
        let upto = upto.min(self.next_seq);
        if upto <= self.acked {
            return Ok(());
        }
        self.acked = upto;
        if self.last_ack_write.elapsed() >= ACK_PERSIST_INTERVAL {
            self.persist_ack()?;
        }
        self.delete_acked_segments()
    }

    fn persist_ack(&mut self) -> Result<(), SpoolError> {
        if self.persisted_ack != self.acked {
            write_atomically(
                &self.options.dir.join("acked"),
                format!("{}\n", self.acked).as_bytes(),
            )?;
            self.persisted_ack = self.acked;
        }
        self.last_ack_write = Instant::now();
        Ok(())
    }

    fn delete_acked_segments(&mut self) -> Result<(), SpoolError> {
        // Segment i is fully acked when the next one starts at or below `acked`.
        while self.segments.len() >= 2 && self.segments[1].first <= self.acked {
            // The ack must be on disk before the records it covers disappear.
            self.persist_ack()?;
            self.remove_first_segment()?;
        }
        Ok(())
    }

    /// Deletes the first segment; a reader inside it is re-positioned lazily from `read_seq`.
    fn remove_first_segment(&mut self) -> Result<(), SpoolError> {
        let gone = self.segments.remove(0);
        self.stats.bytes -= gone.bytes;
        match &mut self.reader {
            Some((0, _)) => self.reader = None,
            Some((index, _)) => *index -= 1,
            None => {}
        }
        fs::remove_file(&gone.path).map_err(io_err(&gone.path))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.sync();
        let _ = self.persist_ack();
    }
}
