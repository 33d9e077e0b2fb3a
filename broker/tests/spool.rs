//! The durable spool on a real directory: order, acks across reopen, torn tails, segment
//! rolling and deletion, damage skipped without renumbering, private files, and both full
//! policies with their counters.

use triggerd_remote::spool::{FullPolicy, Spool, SpoolError, SpoolOptions, SyncPolicy};

fn options(dir: &std::path::Path) -> SpoolOptions {
    let mut o = SpoolOptions::new(dir);
    o.sync = SyncPolicy::Never;
    o
}

fn payload(i: u64) -> Vec<u8> {
    format!("event-{i:06}").into_bytes()
}

fn segment_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

#[test]
fn in_order_and_acked_records_never_come_back_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origin;
    {
        let mut spool = Spool::open(options(dir.path())).expect("open");
        origin = spool.origin();
        for i in 0..100 {
            assert_eq!(spool.append(&payload(i)).expect("append"), i);
        }
        let first = spool.read(60).expect("read");
        assert_eq!(first.len(), 60);
        assert!(first.iter().all(|(seq, p)| *p == payload(*seq)));
        spool.ack(40).expect("ack");
    }
    let mut spool = Spool::open(options(dir.path())).expect("reopen");
    assert_eq!(spool.origin(), origin);
    assert_eq!(spool.acked(), 40);
    assert_eq!(spool.next_seq(), 100);
    let rest = spool.read(1000).expect("read");
    let seqs: Vec<u64> = rest.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (40..100).collect::<Vec<_>>());
    assert!(rest.iter().all(|(seq, p)| *p == payload(*seq)));
    spool.rewind();
    assert_eq!(spool.read(1).expect("read")[0].0, 40);
}

#[test]
fn a_torn_or_corrupt_tail_is_cut_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut spool = Spool::open(options(dir.path())).expect("open");
        for i in 0..10 {
            spool.append(&payload(i)).expect("append");
        }
    }
    let segment = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .expect("segment")
        .path();
    // A header promising 100 bytes, then only 3: a crash mid-write.
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes.extend_from_slice(&100u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(b"abc");
    std::fs::write(&segment, &bytes).expect("write");
    let mut spool = Spool::open(options(dir.path())).expect("reopen");
    assert_eq!(spool.next_seq(), 10);
    assert_eq!(spool.append(b"after").expect("append"), 10);
    let all = spool.read(100).expect("read");
    assert_eq!(all.len(), 11);
    assert_eq!(all[10].1, b"after");
    drop(spool);
    // A flipped byte inside a record (here its checksum): that record is skipped and counted,
    // nothing is invented, and every later record keeps its own sequence number.
    let mut bytes = std::fs::read(&segment).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("write");
    let mut spool = Spool::open(options(dir.path())).expect("reopen");
    let all = spool.read(100).expect("read");
    assert!(all.len() < 11);
    let expected = |seq: u64| {
        if seq == 10 {
            b"after".to_vec()
        } else {
            payload(seq)
        }
    };
    assert!(all.iter().all(|(seq, p)| *p == expected(*seq)), "{all:?}");
    assert_eq!(spool.stats().corrupt, 11 - all.len() as u64);
    assert_eq!(spool.next_seq(), 11);
}

#[test]
fn a_damaged_segment_never_shifts_the_numbers_of_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = options(dir.path());
    o.segment_bytes = 200;
    {
        let mut spool = Spool::open(o.clone()).expect("open");
        for i in 0..40 {
            spool.append(&payload(i)).expect("append");
        }
    }
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() > 2);
    // The first segment's second header claims more than the file holds: its rest is lost.
    let mut bytes = std::fs::read(&segments[0]).expect("read");
    bytes[20..24].copy_from_slice(&1_000_000u32.to_le_bytes());
    std::fs::write(&segments[0], &bytes).expect("write");
    let mut spool = Spool::open(o).expect("reopen");
    let all = spool.read(100).expect("read");
    assert!(all.iter().all(|(seq, p)| *p == payload(*seq)), "{all:?}");
    assert_eq!(all[0].0, 0);
    assert_eq!(all.last().map(|r| r.0), Some(39));
    assert_eq!(spool.stats().corrupt, 40 - all.len() as u64);
}

#[test]
fn spool_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let mut spool = Spool::open(options(&spool_dir)).expect("open");
    spool.append(b"secret").expect("append");
    spool.read(1).expect("read");
    spool.ack(1).expect("ack");
    drop(spool);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let segment = std::fs::read_dir(&spool_dir)
        .expect("dir")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .expect("segment")
        .path();
    let other = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "cat",
        ])
        .arg(&segment)
        .output()
        .expect("setpriv");
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("Permission denied"));
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&spool_dir), 0o700);
    for entry in std::fs::read_dir(&spool_dir).expect("dir") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn segments_roll_and_vanish_once_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = options(dir.path());
    o.segment_bytes = 1024;
    let mut spool = Spool::open(o).expect("open");
    for i in 0..1000 {
        spool.append(&payload(i)).expect("append");
    }
    assert!(segment_count(dir.path()) > 10);
    let all = spool.read(2000).expect("read");
    assert_eq!(all.len(), 1000);
    spool.ack(1000).expect("ack");
    assert_eq!(segment_count(dir.path()), 1);
    assert_eq!(spool.stats().pending, 0);
    drop(spool);
    let mut spool = Spool::open(options(dir.path())).expect("reopen");
    assert_eq!(spool.read(10).expect("read"), Vec::new());
    assert_eq!(spool.append(b"x").expect("append"), 1000);
}

#[test]
fn full_with_reject_refuses_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = options(dir.path());
    o.segment_bytes = 512;
    o.max_bytes = 4096;
    o.full = FullPolicy::Reject;
    let mut spool = Spool::open(o).expect("open");
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..1000 {
        match spool.append(&payload(i)) {
            Ok(_) => accepted += 1,
            Err(SpoolError::Full(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(accepted > 0 && refused > 0);
    assert_eq!(spool.stats().rejected, refused);
    assert!(spool.stats().bytes <= 4096);
    // Draining makes room again; nothing accepted was lost.
    let all = spool.read(2000).expect("read");
    assert_eq!(all.len() as u64, accepted);
    spool.ack(spool.next_seq()).expect("ack");
    assert!(spool.append(b"room again").is_ok());
}

#[test]
fn full_with_drop_oldest_keeps_the_newest_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = options(dir.path());
    o.segment_bytes = 512;
    o.max_bytes = 4096;
    o.full = FullPolicy::DropOldest;
    let mut spool = Spool::open(o).expect("open");
    for i in 0..1000 {
        spool.append(&payload(i)).expect("append never refuses");
    }
    let stats = spool.stats();
    assert!(stats.dropped > 0);
    let rest = spool.read(2000).expect("read");
    assert_eq!(rest.len() as u64 + stats.dropped, 1000);
    assert_eq!(rest.last().map(|r| r.0), Some(999));
    assert!(rest.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    assert!(rest.iter().all(|(seq, p)| *p == payload(*seq)));
}
