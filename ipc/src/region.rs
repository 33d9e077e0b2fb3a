//! The shared memory of one channel: naming (`/dev/shm/triggerd.<name>`, the socket that hands
//! it out, see `handout`), creation as a sealed memfd, opening by publishers (the memfd received
//! from that socket), mapping, and the only code that turns
//! region offsets into memory accesses. Every accessor bounds-checks its offset against the
//! mapping, so a wrong offset panics instead of touching memory outside the region; offsets
//! themselves come from [`Geometry`], never from bytes read out of the region.

use crate::error::IpcError;
use crate::layout::{self, Geometry};
use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::fstat;
use nix::unistd::ftruncate;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Prefix of every channel's shared-memory object name.
pub const NAME_PREFIX: &str = "/triggerd.";

/// Checks a channel name is a plain word (letters, digits, `_`, `-`, `.`; 1 to 200 bytes; not
/// starting with `.`): it becomes part of a path under /dev/shm. The config validates with it.
pub fn check_name(channel: &str) -> Result<(), IpcError> {
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
    Ok(())
}

/// The shared-memory object name of a channel, after [`check_name`].
pub(crate) fn object_name(channel: &str) -> Result<String, IpcError> {
    check_name(channel)?;
    Ok(format!("{NAME_PREFIX}{channel}"))
}

/// The path of a channel's socket, after checking its name.
pub fn socket_path(channel: &str) -> Result<std::path::PathBuf, IpcError> {
    Ok(crate::handout::socket_path(&object_name(channel)?))
}

/// Receives a channel's sealed memfd as a publisher does (connecting to its socket, which the
/// channel's owner, group and mode guard). Tools and tests map it themselves; the memfd cannot
/// be resized by anyone.
pub fn receive_memfd(channel: &str) -> Result<OwnedFd, IpcError> {
    crate::handout::receive(channel, &socket_path(channel)?)
}

/// One mapped channel region, its geometry, and the sealed memfd behind it.
pub(crate) struct Region {
    map: MmapRaw,
    geometry: Geometry,
    memfd: Arc<OwnedFd>,
}

pub(crate) fn os<'a>(channel: &'a str, op: &'static str) -> impl FnOnce(Errno) -> IpcError + 'a {
    move |errno| IpcError::Os {
        channel: channel.to_owned(),
        op,
        source: errno.into(),
    }
}

impl Region {
    /// Creates the region for `channel` in a new memfd sealed against shrinking and growing,
    /// and writes its header. Publishers get it from [`crate::handout::Handout`].
    pub(crate) fn create(channel: &str, geometry: Geometry) -> Result<Self, IpcError> {
        let name = object_name(channel)?;
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let fd = memfd_create(name.trim_start_matches('/'), flags)
            .map_err(os(channel, "memfd_create"))?;
        let len = geometry.region_len();
        ftruncate(&fd, len as i64).map_err(os(channel, "ftruncate"))?;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(crate::handout::SEALS)).map_err(os(channel, "seal"))?;
        let region = Self::map(channel, Arc::new(fd), len, geometry)?;
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
    }

    /// Receives the channel's sealed memfd from its socket and maps it read-write, reading its
    /// geometry from the header and checking it against the memfd's size.
    pub(crate) fn open(channel: &str) -> Result<Self, IpcError> {
        let fd = receive_memfd(channel)?;
        Self::open_fd(channel, fd)
    }

    fn open_fd(channel: &str, fd: OwnedFd) -> Result<Self, IpcError> {
        let bad = |why| IpcError::BadRegion {
            channel: channel.to_owned(),
            why,
        };
        let size = fstat(&fd).map_err(os(channel, "fstat"))?.st_size;
        let size = usize::try_from(size).map_err(|_| bad("negative size"))?;
        let header = Geometry::new(1, layout::MIN_LANE_BYTES).map_err(|_| bad("internal"))?;
        if size < header.region_len() {
            return Err(bad("smaller than the smallest channel"));
        }
        let fd = Arc::new(fd);
        // Map the header alone first: the geometry it states is untrusted until it matches the size.
        let probe = Self::map(channel, Arc::clone(&fd), header.region_len(), header)?;
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
        Self::map(channel, fd, size, geometry)
    }

    /// The memfd behind the region (the consumer hands it to publishers).
    pub(crate) fn memfd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.memfd)
    }

    fn map(
        channel: &str,
        memfd: Arc<OwnedFd>,
        len: usize,
        geometry: Geometry,
    ) -> Result<Self, IpcError> {
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&*memfd)
            .map_err(|source| IpcError::Os {
                channel: channel.to_owned(),
                op: "mmap",
                source,
            })?;
        Ok(Self {
            map,
            geometry,
            memfd,
        })
    }

    pub(crate) fn geometry(&self) -> Geometry {
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
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
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
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
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
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) {
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
    pub(crate) fn write(&self, offset: usize, src: &[u8]) {
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

    fn reopen(region: &Region) -> Region {
        let fd = region.memfd().try_clone().unwrap();
        Region::open_fd("test", fd).unwrap()
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
        let g = Geometry::new(2, layout::MIN_LANE_BYTES).unwrap();
        let created = Region::create("region", g).unwrap();
        let opened = reopen(&created);
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
    }

    #[test]
    fn the_memfd_cannot_be_resized_or_unsealed() {
        let g = Geometry::new(1, layout::MIN_LANE_BYTES).unwrap();
        let region = Region::create("sealed", g).unwrap();
        let fd = region.memfd();
        for len in [0, 4096, (g.region_len() * 2) as i64] {
            assert_eq!(ftruncate(&*fd, len), Err(nix::errno::Errno::EPERM), "{len}");
        }
        let more = FcntlArg::F_ADD_SEALS(nix::fcntl::SealFlag::F_SEAL_FUTURE_WRITE);
        assert_eq!(fcntl(&*fd, more), Err(nix::errno::Errno::EPERM));
        assert_eq!(fstat(&*fd).unwrap().st_size as usize, g.region_len());
    }

    #[test]
    fn open_rejects_foreign_or_short_memory() {
        let fd = memfd_create("foreign", MFdFlags::MFD_CLOEXEC).unwrap();
        ftruncate(&fd, 100).unwrap();
        let short = Region::open_fd("foreign", fd.try_clone().unwrap());
        assert!(matches!(short, Err(IpcError::BadRegion { .. })));
        ftruncate(&fd, 1 << 20).unwrap();
        let foreign = Region::open_fd("foreign", fd);
        assert!(matches!(foreign, Err(IpcError::BadRegion { .. })));
    }
}
