//! The spool's files on disk: the record format (`[u32 LE length][u32 LE FNV-1a of the
//! payload][payload]`), scanning a segment, and files that only root can read (directories
//! 0700, files 0600) made durable with a directory fsync after each create, rename or
//! removal.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{io_err, SpoolError, MAX_RECORD};

pub(super) const HEADER: usize = 8;

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut hash = 0x811c_9dc5_u32;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Appends one encoded record (header and payload) to `out`.
pub(super) fn encode(payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&fnv1a(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What the next bytes of a segment hold.
pub(super) enum Next {
    Record(Vec<u8>),
    /// A whole record whose checksum does not match: it still takes its sequence number.
    Corrupt(u64),
    /// End of data, or a torn record (short, or a length nothing could have written).
    End,
}

pub(super) fn read_record(reader: &mut impl Read) -> Next {
    let mut header = [0u8; HEADER];
    if reader.read_exact(&mut header).is_err() {
        return Next::End;
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let sum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        return Next::End;
    }
    let mut payload = vec![0u8; len];
    if reader.read_exact(&mut payload).is_err() {
        return Next::End;
    }
    if fnv1a(&payload) == sum {
        Next::Record(payload)
    } else {
        Next::Corrupt((HEADER + len) as u64)
    }
}

/// A segment's records up to its last whole, valid one: (records, corrupt among them, bytes).
/// Whatever follows the last valid record is a torn or damaged tail.
pub(super) fn scan(path: &Path) -> Result<(u64, u64, u64), SpoolError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let (mut seen, mut corrupt, mut offset) = (0u64, 0u64, 0u64);
    let (mut count, mut counted_corrupt, mut bytes) = (0u64, 0u64, 0u64);
    loop {
        match read_record(&mut reader) {
            Next::Record(payload) => {
                seen += 1;
                offset += (HEADER + payload.len()) as u64;
                (count, counted_corrupt, bytes) = (seen, corrupt, offset);
            }
            Next::Corrupt(size) => {
                seen += 1;
                corrupt += 1;
                offset += size;
            }
            Next::End => return Ok((count, counted_corrupt, bytes)),
        }
    }
}

pub(super) fn private_dir(dir: &Path) -> Result<(), SpoolError> {
    triggerd_support::private_dir(dir).map_err(io_err(dir))
}

/// Opens `path` for appending, created 0600 (an existing file is made 0600 too).
pub(super) fn open_append(path: &Path) -> Result<File, SpoolError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    Ok(file)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    triggerd_support::sync_dir(dir).map_err(io_err(dir))
}

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    triggerd_support::write_atomically(path, bytes).map_err(io_err(path))
}
