//! The shared-memory object of one channel: naming (`/dev/shm/triggerd.<name>`), creation with
//! the channel's owner/group/mode, opening by publishers, mapping, and the only code that turns
//! region offsets into memory accesses. Every accessor bounds-checks its offset against the
//! mapping, so a wrong offset panics instead of touching memory outside the region; offsets
//! themselves come from [`Geometry`], never from bytes read out of the region.

use crate::error::IpcError;
use crate::layout::{self, Geometry};
use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{fchmod, fstat, Mode};
use nix::unistd::{fchown, ftruncate, Gid, Uid};
use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Prefix of every channel's shared-memory object name.
pub const NAME_PREFIX: &str = "/triggerd.";

/// The shared-memory object name of a channel, after checking the channel name is a plain
/// word (letters, digits, `_`, `-`, `.`; 1 to 200 bytes; not starting with `.`).
pub fn object_name(channel: &str) -> Result<String, IpcError> {
    let bad = |why| IpcError::InvalidName {
        name: channel.to_owned(),
        why,
    };
    if channel.is_empty() || channel.len() > 200 {
        return Err(bad("must be 1 to 200 bytes long"));
    }
    if channel.starts_with('.') {
        return Err(bad("must not start with '.'"));
    }
    if !channel
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(bad("may contain only letters, digits, '_', '-' and '.'"));
    }
    Ok(format!("{NAME_PREFIX}{channel}"))
}

/// One mapped channel region and its geometry.
pub struct Region {
    map: MmapRaw,
    geometry: Geometry,
}

fn os<'a>(channel: &'a str, op: &'static str) -> impl FnOnce(Errno) -> IpcError + 'a {
    move |errno| IpcError::Os {
        channel: channel.to_owned(),
        op,
        source: errno.into(),
    }
}

impl Region {
    /// Creates the region for `channel` (replacing a stale one left by an earlier daemon), owned
    /// by `uid:gid` with permission bits `mode`, and writes its header.
    pub fn create(
        channel: &str,
        geometry: Geometry,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<Self, IpcError> {
        let name = object_name(channel)?;
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
        let fd = match shm_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR) {
            Err(Errno::EEXIST) => {
                shm_unlink(name.as_str()).map_err(os(channel, "shm_unlink (stale region)"))?;
                shm_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR)
            }
            other => other,
        }
        .map_err(os(channel, "shm_open"))?;
        let file = File::from(fd);
        let setup = || -> Result<Self, IpcError> {
            fchown(&file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(os(channel, "fchown"))?;
            fchmod(&file, Mode::from_bits_truncate(mode & 0o777)).map_err(os(channel, "fchmod"))?;
            let len = geometry.region_len();
            ftruncate(&file, len as i64).map_err(os(channel, "ftruncate"))?;
            let region = Self::map(channel, &file, len, geometry)?;
            region
                .u32_at(layout::OFF_VERSION)
                .store(layout::VERSION, Ordering::Relaxed);
            region
                .u32_at(layout::OFF_LANES)
                .store(geometry.lanes() as u32, Ordering::Relaxed);
            region
                .u64_at(layout::OFF_LANE_BYTES)
                .store(geometry.lane_bytes() as u64, Ordering::Relaxed);
            // The magic goes last: a publisher that sees it also sees the geometry.
            region
                .u64_at(layout::OFF_MAGIC)
                .store(layout::MAGIC, Ordering::Release);
            Ok(region)
        };
        setup().inspect_err(|_| {
            let _ = shm_unlink(name.as_str());
        })
    }

    /// Opens and maps an existing region read-write, reading its geometry from the header and
    /// checking it against the object's size.
    pub fn open(channel: &str) -> Result<Self, IpcError> {
        let name = object_name(channel)?;
        let fd = shm_open(name.as_str(), OFlag::O_RDWR, Mode::empty()).map_err(|e| match e {
            Errno::ENOENT => IpcError::NoSuchChannel {
                channel: channel.to_owned(),
            },
            Errno::EACCES | Errno::EPERM => IpcError::PermissionDenied {
                channel: channel.to_owned(),
            },
            other => os(channel, "shm_open")(other),
        })?;
        let file = File::from(fd);
        let bad = |why| IpcError::BadRegion {
            channel: channel.to_owned(),
            why,
        };
        let size = fstat(&file).map_err(os(channel, "fstat"))?.st_size;
        let size = usize::try_from(size).map_err(|_| bad("negative size"))?;
        let header = Geometry::new(1, layout::MIN_LANE_BYTES).map_err(|_| bad("internal"))?;
        if size < header.region_len() {
            return Err(bad("smaller than the smallest channel"));
        }
        // Map the header alone first: the geometry it states is untrusted until it matches the size.
        let probe = Self::map(channel, &file, header.region_len(), header)?;
        if probe.u64_at(layout::OFF_MAGIC).load(Ordering::Acquire) != layout::MAGIC {
            return Err(bad(
                "no triggerd magic (not a channel, or not yet initialised)",
            ));
        }
        if probe.u32_at(layout::OFF_VERSION).load(Ordering::Relaxed) != layout::VERSION {
            return Err(bad("unsupported layout version"));
        }
        let lanes = probe.u32_at(layout::OFF_LANES).load(Ordering::Relaxed) as usize;
        let lane_bytes = probe.u64_at(layout::OFF_LANE_BYTES).load(Ordering::Relaxed);
        let lane_bytes = usize::try_from(lane_bytes).map_err(|_| bad("lane size overflows"))?;
        let geometry = Geometry::new(lanes, lane_bytes).map_err(|_| bad("invalid geometry"))?;
        if geometry.region_len() != size {
            return Err(bad("size does not match the stated geometry"));
        }
        drop(probe);
        Self::map(channel, &file, size, geometry)
    }

    fn map(channel: &str, file: &File, len: usize, geometry: Geometry) -> Result<Self, IpcError> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(file)
            .map_err(|source| IpcError::Os {
                channel: channel.to_owned(),
                op: "mmap",
                source,
            })?;
        Ok(Self { map, geometry })
    }

    /// Removes the channel's name (existing mappings stay valid until unmapped).
    pub fn unlink(channel: &str) -> Result<(), IpcError> {
        shm_unlink(object_name(channel)?.as_str()).map_err(os(channel, "shm_unlink"))
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn check(&self, offset: usize, len: usize, align: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|end| end <= self.map.len()) && offset % align == 0,
            "region access out of bounds or misaligned"
        );
    }

    /// The `u64` at `offset`, shared with other processes, so only ever accessed atomically.
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: the mapping is page-aligned, `check` proved the 8 bytes at `offset` lie inside it
        // and are 8-aligned, and the mapping lives as long as `self`. Other processes only change
        // these bytes; AtomicU64 has no invalid bit patterns, so any value they write is sound.
        unsafe {
            &*self
                .map
                .as_mut_ptr()
                .wrapping_add(offset)
                .cast::<AtomicU64>()
        }
    }

    /// The `u32` at `offset`, shared with other processes, so only ever accessed atomically.
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: as in `u64_at`, for 4 aligned bytes inside the mapping.
        unsafe {
            &*self
                .map
                .as_mut_ptr()
                .wrapping_add(offset)
                .cast::<AtomicU32>()
        }
    }

    /// Copies `dst.len()` bytes from the region at `offset` into private memory. The source may be
    /// changed concurrently by a hostile process: the copy is then torn, never out of bounds, and
    /// the caller validates what it copied.
    pub fn read(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len(), 1);
        // SAFETY: `check` proved the source range lies inside the mapping; `dst` is private memory
        // that cannot overlap a shared mapping we created. The bytes are plain data (any value valid).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().wrapping_add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }

    /// Copies `src` into the region at `offset`.
    pub fn write(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len(), 1);
        // SAFETY: `check` proved the destination lies inside the writable shared mapping; `src` is
        // caller memory that does not overlap it (a caller passing a slice of the region itself is
        // impossible: the region is never exposed as a slice).
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.map.as_mut_ptr().wrapping_add(offset),
                src.len(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Removes a test's shared-memory object even when the test fails.
    struct Unlink(String);

    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = shm_unlink(self.0.as_str());
        }
    }

    fn unique(tag: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        format!(
            "t{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(object_name("metrics").unwrap(), "/triggerd.metrics");
        for bad in ["", ".hidden", "a/b", "sp ace", &"x".repeat(201)] {
            assert!(object_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn create_open_and_access_within_bounds() {
        let name = unique("region");
        let g = Geometry::new(2, layout::MIN_LANE_BYTES).unwrap();
        let (uid, gid) = (Uid::current().as_raw(), Gid::current().as_raw());
        let created = Region::create(&name, g, uid, gid, 0o600).unwrap();
        let _cleanup = Unlink(object_name(&name).unwrap());
        let opened = Region::open(&name).unwrap();
        assert_eq!(opened.geometry(), g);
        opened.write(g.lane_byte(1, 8), b"hello");
        let mut back = [0u8; 5];
        created.read(g.lane_byte(1, 8), &mut back);
        assert_eq!(&back, b"hello");
        opened.u64_at(g.lane_tail(1)).store(42, Ordering::Release);
        assert_eq!(created.u64_at(g.lane_tail(1)).load(Ordering::Acquire), 42);
        assert!(
            std::panic::catch_unwind(|| created.read(g.region_len() - 2, &mut [0u8; 5])).is_err()
        );
        assert!(std::panic::catch_unwind(|| created.u64_at(g.lane_tail(1) + 4)).is_err());
        Region::unlink(&name).unwrap();
        assert!(matches!(
            Region::open(&name),
            Err(IpcError::NoSuchChannel { .. })
        ));
    }

    #[test]
    fn open_rejects_foreign_or_truncated_objects() {
        let name = unique("foreign");
        let object = object_name(&name).unwrap();
        let _cleanup = Unlink(object.clone());
        let fd = shm_open(
            object.as_str(),
            OFlag::O_CREAT | OFlag::O_RDWR,
            Mode::S_IRWXU,
        )
        .unwrap();
        ftruncate(&fd, 100).unwrap();
        assert!(matches!(
            Region::open(&name),
            Err(IpcError::BadRegion { .. })
        ));
        ftruncate(&fd, 1 << 20).unwrap();
        assert!(matches!(
            Region::open(&name),
            Err(IpcError::BadRegion { .. })
        ));
        shm_unlink(object.as_str()).unwrap();
    }
}
