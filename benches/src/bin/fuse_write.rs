//! 200-byte write(2) throughput and per-write latency into a trigger file, against a tmpfs
//! file and a null FUSE filesystem (accepts and discards writes, DIRECT_IO, same fuser mount
//! options and threads) measured in the same run, for one and two writers.
//!
//! Usage: `cargo run --release -p triggerd-benches --bin fuse_write [WRITES_PER_WRITER] [ROUNDS]`
//! (as root: FUSE mounts with allow_other). Prints per-round medians and ratios.
//! `fuse_write --serve-null MOUNTPOINT` only mounts the null filesystem (file `null`) until
//! stdin closes: the FUSE baseline of `benches/nginx_access_log.sh`.

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    ReplyXattr, Request, SessionACL, WriteFlags,
};
use triggerd_fusefs::{Message, MessageSink, MountOptions, Split, TriggerFs, TriggerSpec};

const PAYLOAD: usize = 200;
/// FUSE threads of both filesystems: `TRIGGERFS_THREADS`, default 2 (the crate's default).
fn threads() -> usize {
    std::env::var("TRIGGERFS_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2)
}

/// The baseline: one file that accepts and discards every write, with DIRECT_IO.
struct NullFs;

const NULL_INO: u64 = 2;

fn null_attr(ino: u64) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind: if ino == 1 {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if ino == 1 { 0o755 } else { 0o666 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for NullFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match name.to_str() {
            Some("null") => NULL_INO,
            Some("null2") => NULL_INO + 1,
            _ => 0,
        };
        if parent.0 == 1 && ino != 0 {
            reply.entry(&Duration::from_secs(1), &null_attr(ino), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }
    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&Duration::from_secs(1), &null_attr(ino.0));
    }
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(1), FopenFlags::FOPEN_DIRECT_IO);
    }
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.written(data.len() as u32);
    }
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, r: ReplyXattr) {
        r.error(Errno::ENOSYS);
    }
}

/// The daemon's side reduced to its minimum: accept and count.
#[derive(Default)]
struct CountingSink(AtomicU64);

impl MessageSink for CountingSink {
    fn offer(&self, msg: Message, _wait: Duration) -> bool {
        drop(msg);
        self.0.fetch_add(1, Ordering::Relaxed);
        true
    }
}

struct Sample {
    writes_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `writers` threads each open a path (writer i takes `paths[i % len]`, with O_APPEND like
/// nginx) and do `n` writes of 200 bytes.
fn measure(paths: &[PathBuf], writers: usize, n: usize) -> Sample {
    let line = {
        let mut l = vec![b'x'; PAYLOAD];
        l[PAYLOAD - 1] = b'\n';
        l
    };
    let start = Instant::now();
    let mut lat: Vec<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let line = &line;
                let path = &paths[i % paths.len()];
                s.spawn(move || {
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(path)
                        .expect("open");
                    let mut lat = Vec::with_capacity(n);
                    for _ in 0..n {
                        let t = Instant::now();
                        f.write_all(line).expect("write");
                        lat.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e3;
    Sample {
        writes_per_sec: (writers * n) as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn fuse_config() -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("nullfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(threads());
    config.clone_fd = true;
    config
}

/// Mounts the null filesystem on `mountpoint` and serves it until stdin is closed.
fn serve_null(mountpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let session = fuser::Session::new(NullFs, mountpoint, &fuse_config())?.spawn()?;
    println!("ready");
    std::io::stdout().flush()?;
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    session.umount_and_join()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--serve-null") {
        let mountpoint = args.nth(1).ok_or("--serve-null MOUNTPOINT")?;
        return serve_null(&mountpoint);
    }
    let n: usize = args.next().map_or(Ok(50_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |a| a.parse())?;

    let dir = tempfile::tempdir()?;
    let null_mnt = dir.path().join("null");
    let trig_mnt = dir.path().join("trig");
    std::fs::create_dir(&null_mnt)?;
    std::fs::create_dir(&trig_mnt)?;
    let shm = tempfile::tempdir_in("/dev/shm")?;
    let tmpfs_file = shm.path().join("file");
    std::fs::write(&tmpfs_file, b"")?;

    let null = fuser::Session::new(NullFs, &null_mnt, &fuse_config())?.spawn()?;
    let sink = Arc::new(CountingSink::default());
    let mut opts = MountOptions::new(&trig_mnt, dir.path().join("state"));
    opts.threads = threads();
    let spec = |file: &str, split| TriggerSpec {
        file: file.into(),
        split,
        mode: 0o666,
        uid: 0,
        gid: 0,
        limits: Default::default(),
    };
    let trig = TriggerFs::mount(
        opts,
        vec![
            spec("bench/write", Split::Write),
            spec("bench/write2", Split::Write),
            spec("bench/line", Split::Line),
        ],
        sink.clone(),
    )?;

    let targets: Vec<(&str, Vec<PathBuf>)> = vec![
        ("trigger (split=write)", vec![trig_mnt.join("bench/write")]),
        ("trigger (split=line)", vec![trig_mnt.join("bench/line")]),
        ("null FUSE", vec![null_mnt.join("null")]),
        ("tmpfs file", vec![tmpfs_file.clone()]),
        (
            "trigger, 1 file/writer",
            vec![trig_mnt.join("bench/write"), trig_mnt.join("bench/write2")],
        ),
        (
            "null FUSE, 1 file/writer",
            vec![null_mnt.join("null"), null_mnt.join("null2")],
        ),
    ];
    println!(
        "200-byte writes, {n} per writer, {rounds} rounds, {} FUSE threads; medians",
        threads()
    );
    for writers in [1, 2] {
        // One file per writer only differs from the shared file with two writers.
        let targets = &targets[..if writers == 1 { 4 } else { targets.len() }];
        let mut rows: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
            vec![(vec![], vec![], vec![]); targets.len()];
        measure(&targets[0].1, writers, n / 10); // warm-up
        for _ in 0..rounds {
            for (i, (_, path)) in targets.iter().enumerate() {
                let s = measure(path, writers, n);
                rows[i].0.push(s.writes_per_sec);
                rows[i].1.push(s.p50_us);
                rows[i].2.push(s.p99_us);
            }
            std::fs::write(&tmpfs_file, b"")?;
        }
        println!("\n{writers} writer(s):");
        println!(
            "{:<26}{:>12}{:>10}{:>10}",
            "target", "writes/s", "p50 µs", "p99 µs"
        );
        let med: Vec<(f64, f64, f64)> = rows
            .into_iter()
            .map(|(w, p50, p99)| (median(w), median(p50), median(p99)))
            .collect();
        for ((name, _), (w, p50, p99)) in targets.iter().zip(&med) {
            println!("{name:<26}{w:>12.0}{p50:>10.1}{p99:>10.1}");
        }
        let (trig_w, null_w, tmpfs_w) = (med[0], med[2], med[3]);
        println!(
            "ratio trigger/null FUSE: writes/s {:.2}, p50 {:.2}x, p99 {:.2}x",
            trig_w.0 / null_w.0,
            trig_w.1 / null_w.1,
            trig_w.2 / null_w.2
        );
        println!(
            "ratio trigger/tmpfs: writes/s {:.2}, p50 {:.2}x",
            trig_w.0 / tmpfs_w.0,
            trig_w.1 / tmpfs_w.1
        );
        if let (Some(t), Some(n)) = (med.get(4), med.get(5)) {
            println!(
                "ratio trigger/null FUSE, 1 file per writer: writes/s {:.2}, p50 {:.2}x",
                t.0 / n.0,
                t.1 / n.1
            );
        }
    }
    let stats = trig.stats();
    let drops: u64 = stats.iter().map(|s| s.drops).sum();
    println!(
        "\nmessages delivered to the sink: {} (drops {drops})",
        sink.0.load(Ordering::Relaxed)
    );
    trig.unmount()?;
    drop(null);
    Ok(())
}
