//! Benchmark of the shared-memory fast path against the kernel's local transports, all in one
//! run with the same message sizes (64 B and 1 KiB): a triggerd channel (`triggerd-ipc`) vs a
//! Unix datagram socket pair vs a pipe vs a write(2) into a triggerd trigger file (FUSE, the
//! other way a local program hands triggerd a message). Producer and consumer are two threads.
//!
//! Throughput: messages per second, unbatched (one call per message) and batched (64 per call:
//! `publish_batch` vs `sendmmsg`/`recvmmsg`); median of several runs.
//! One-way latency: the producer stamps each message, the consumer subtracts from its clock;
//! one message in flight at a time. "spinning": the consumer polls (the channel's adaptive spin,
//! a non-blocking `recv` loop for the socket); "woken": the consumer sleeps before each message
//! (doorbell futex via io_uring vs a blocking `recv`). Prints p50/p99 and ratios.
//!
//! Run: `cargo run --release -p triggerd-benches --bin ipc_channel [-- --quick]`

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use triggerd_fusefs::{Message, MessageSink, MountOptions, Split, TriggerFs, TriggerSpec};
use triggerd_ipc::{Channel, ChannelSpec, PublishError, Publisher};

const BATCH: usize = 64;
/// Room a producer that found its lane full waits for before writing again.
const WAIT_FOR_BYTES: usize = 128 << 10;
const SIZES: [usize; 2] = [64, 1024];

struct Plan {
    messages: u64,
    runs: usize,
    latency_samples: usize,
    woken_samples: usize,
}

fn clock() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn stamped(size: usize) -> Vec<u8> {
    let mut m = vec![0x5a; size];
    m[..8].copy_from_slice(&clock().to_le_bytes());
    m
}

fn stamp_of(m: &[u8]) -> u64 {
    m.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn unique_channel() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn channel_spec(name: &str) -> ChannelSpec {
    ChannelSpec {
        capacity_bytes: 4 << 20,
        lanes: 4,
        ..ChannelSpec::new(name)
    }
}

/// Runs a channel consumer on a thread calling `on_message` until `total` messages arrived.
fn spawn_consumer(
    channel: Arc<Channel>,
    total: u64,
    mut on_message: impl FnMut(&[u8]) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let stopper = channel.stopper();
        let mut seen = 0;
        channel
            .run(|m| {
                on_message(m);
                seen += 1;
                if seen == total {
                    stopper.stop();
                }
            })
            .expect("consumer failed");
    })
}

fn shm_throughput(size: usize, n: u64, batched: bool) -> f64 {
    let name = unique_channel();
    let channel = Arc::new(Channel::create(&channel_spec(&name)).expect("create channel"));
    let consumer = spawn_consumer(Arc::clone(&channel), n, |m| {
        black_box(m);
    });
    let publisher = Publisher::connect(&name).expect("connect");
    let msg = vec![0x5a; size];
    let batch: Vec<&[u8]> = vec![&msg; BATCH];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let want = if batched {
            (n - sent).min(BATCH as u64) as usize
        } else {
            1
        };
        match publisher.publish_batch(&batch[..want]) {
            Ok(k) => sent += k as u64,
            // A full lane: sleep until the consumer has freed a good share of it (like a
            // blocking send on the socket).
            Err(PublishError::WouldBlock) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                publisher.wait_for_space(WAIT_FOR_BYTES, deadline);
            }
            Err(e) => panic!("publish: {e}"),
        }
    }
    consumer.join().expect("consumer thread");
    let rate = n as f64 / start.elapsed().as_secs_f64();
    if std::env::var_os("IPC_BENCH_VERBOSE").is_some() {
        let s = channel.stats();
        eprintln!(
            "  [shm {size} B batched={batched}: consumer sleeps {}, full-lane waits {}]",
            s.sleeps, s.full_ring_waits
        );
    }
    rate
}

fn unix_throughput(size: usize, n: u64, batched: bool) -> f64 {
    let (tx, rx) = UnixDatagram::pair().expect("socketpair");
    let consumer = std::thread::spawn(move || {
        let mut got = 0;
        let mut bufs = vec![vec![0u8; size]; BATCH];
        while got < n {
            got += if batched {
                recv_many(&rx, &mut bufs) as u64
            } else {
                black_box(rx.recv(&mut bufs[0]).expect("recv"));
                1
            };
        }
    });
    let msg = vec![0x5a; size];
    let batch: Vec<&[u8]> = vec![&msg; BATCH];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        if batched {
            let want = (n - sent).min(BATCH as u64) as usize;
            sent += send_many(&tx, &batch[..want]) as u64;
        } else {
            tx.send(&msg).expect("send");
            sent += 1;
        }
    }
    consumer.join().expect("consumer thread");
    n as f64 / start.elapsed().as_secs_f64()
}

/// Counts messages a trigger file delivers, accepting all.
struct Counting(AtomicU64);

impl MessageSink for Counting {
    fn offer(&self, _message: Message, _wait: Duration) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// One writer into a trigger file (split = write): each write(2) is answered once its message
/// was handed over, so messages/s = writes/s.
fn fuse_throughput(size: usize, n: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mountpoint = dir.path().join("fs");
    let sink = Arc::new(Counting(AtomicU64::new(0)));
    let spec = TriggerSpec {
        file: "bench".into(),
        split: Split::Write,
        mode: 0o600,
        uid: 0,
        gid: 0,
        limits: Default::default(),
    };
    let fs = TriggerFs::mount(
        MountOptions::new(&mountpoint, dir.path().join("state")),
        vec![spec],
        Arc::clone(&sink) as Arc<dyn MessageSink>,
    )
    .expect("mount (as root)");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(mountpoint.join("bench"))
        .expect("open trigger file");
    let msg = vec![0x5a; size];
    let start = Instant::now();
    for _ in 0..n {
        file.write_all(&msg).expect("write");
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(file);
    assert_eq!(sink.0.load(Ordering::Relaxed), n, "every write delivered");
    fs.unmount().expect("unmount");
    rate
}

fn pipe_throughput(size: usize, n: u64) -> f64 {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let (mut r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
    let consumer = std::thread::spawn(move || {
        let mut buf = vec![0u8; size];
        for _ in 0..n {
            r.read_exact(&mut buf).expect("read");
            black_box(&buf);
        }
    });
    let msg = vec![0x5a; size];
    let start = Instant::now();
    for _ in 0..n {
        w.write_all(&msg).expect("write");
    }
    consumer.join().expect("consumer thread");
    n as f64 / start.elapsed().as_secs_f64()
}

/// Sends all of `msgs` as datagrams with `sendmmsg` (looping over partial sends).
fn send_many(sock: &UnixDatagram, msgs: &[&[u8]]) -> usize {
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|m| libc::iovec {
            iov_base: m.as_ptr() as *mut libc::c_void,
            iov_len: m.len(),
        })
        .collect();
    let mut headers = mmsg_headers(&mut iovs);
    let mut done = 0;
    while done < headers.len() {
        let rest = &mut headers[done..];
        // SAFETY: every header points at one live iovec, which points at a live message that
        // outlives the call; the kernel only reads them.
        let n =
            unsafe { libc::sendmmsg(sock.as_raw_fd(), rest.as_mut_ptr(), rest.len() as u32, 0) };
        assert!(n > 0, "sendmmsg: {}", std::io::Error::last_os_error());
        done += n as usize;
    }
    done
}

/// Receives up to `bufs.len()` datagrams with one blocking `recvmmsg`.
fn recv_many(sock: &UnixDatagram, bufs: &mut [Vec<u8>]) -> usize {
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut headers = mmsg_headers(&mut iovs);
    // SAFETY: every header points at one live iovec over a live, writable buffer of the stated
    // length; MSG_WAITFORONE returns after the first datagram if no more are queued.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    assert!(n > 0, "recvmmsg: {}", std::io::Error::last_os_error());
    n as usize
}

fn mmsg_headers(iovs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovs.iter_mut()
        .map(|iov| {
            // SAFETY: msghdr is a plain C struct for which all-zero is a valid value.
            let mut msg_hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            msg_hdr.msg_iov = iov;
            msg_hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr,
                msg_len: 0,
            }
        })
        .collect()
}

struct Latency {
    p50: u64,
    p99: u64,
}

fn summarize(mut samples: Vec<u64>) -> Latency {
    samples.sort_unstable();
    Latency {
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
    }
}

/// One message in flight at a time; if `woken`, each is sent only once the consumer sleeps.
fn shm_latency(size: usize, samples: usize, woken: bool) -> Latency {
    let name = unique_channel();
    let channel = Arc::new(Channel::create(&channel_spec(&name)).expect("create channel"));
    let received = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(samples)));
    let (counter, sink) = (Arc::clone(&received), Arc::clone(&lat));
    let consumer = spawn_consumer(Arc::clone(&channel), samples as u64, move |m| {
        let now = clock();
        sink.lock()
            .expect("samples")
            .push(now.saturating_sub(stamp_of(m)));
        counter.fetch_add(1, Ordering::Release);
    });
    let publisher = Publisher::connect(&name).expect("connect");
    for i in 0..samples as u64 {
        if woken {
            while !channel.stats().asleep {
                std::thread::yield_now();
            }
        }
        publisher.publish(&stamped(size)).expect("publish");
        while received.load(Ordering::Acquire) <= i {
            std::hint::spin_loop();
        }
    }
    consumer.join().expect("consumer thread");
    let samples = std::mem::take(&mut *lat.lock().expect("samples"));
    summarize(samples)
}

/// The socket baseline: a busy-polling (non-blocking) receiver, or a blocking one that the
/// producer lets fall asleep before each message.
fn unix_latency(size: usize, samples: usize, woken: bool) -> Latency {
    let (tx, rx) = UnixDatagram::pair().expect("socketpair");
    rx.set_nonblocking(!woken).expect("nonblocking");
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let consumer = std::thread::spawn(move || {
        let mut buf = vec![0u8; size];
        let mut out = Vec::with_capacity(samples);
        while out.len() < samples {
            match rx.recv(&mut buf) {
                Ok(_) => {
                    out.push(clock().saturating_sub(stamp_of(&buf)));
                    counter.fetch_add(1, Ordering::Release);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => panic!("recv: {e}"),
            }
        }
        out
    });
    for i in 0..samples as u64 {
        if woken {
            // Give the receiver time to block in recv (no flag to observe, unlike the channel).
            std::thread::sleep(Duration::from_micros(300));
        }
        tx.send(&stamped(size)).expect("send");
        while received.load(Ordering::Acquire) <= i {
            std::hint::spin_loop();
        }
    }
    summarize(consumer.join().expect("consumer thread"))
}

fn rate(r: f64) -> String {
    format!("{:.2} M/s", r / 1e6)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if let Some(size) =
        std::env::args().find_map(|a| a.strip_prefix("--shm-only=").map(str::to_owned))
    {
        // Diagnostic: the channel's batched throughput alone, ten times.
        let size: usize = size.parse().expect("--shm-only=SIZE");
        for _ in 0..10 {
            println!("{}", rate(shm_throughput(size, 200_000, true)));
        }
        return;
    }
    let plan = if quick {
        Plan {
            messages: 200_000,
            runs: 3,
            latency_samples: 20_000,
            woken_samples: 500,
        }
    } else {
        Plan {
            messages: 1_000_000,
            runs: 5,
            latency_samples: 100_000,
            woken_samples: 2_000,
        }
    };
    println!(
        "ipc_channel: triggerd shm channel vs Unix datagram socket vs pipe vs FUSE trigger file; {} messages x {} runs (medians)",
        plan.messages, plan.runs
    );
    println!();
    println!("throughput       size   shm channel   unix dgram         pipe   shm/unix  shm/pipe");
    for size in SIZES {
        for batched in [false, true] {
            let n = plan.messages;
            // Interleave the transports run by run, so drifting load on the host hits all alike.
            let (mut shm, mut unix, mut pipe) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..plan.runs {
                shm.push(shm_throughput(size, n, batched));
                unix.push(unix_throughput(size, n, batched));
                if !batched {
                    pipe.push(pipe_throughput(size, n));
                }
            }
            let (shm, unix) = (median(shm), median(unix));
            let (pipe, pipe_ratio) = if batched {
                ("-".to_owned(), "-".to_owned())
            } else {
                let pipe = median(pipe);
                (rate(pipe), format!("{:.1}x", shm / pipe))
            };
            let mode = if batched { "batch of 64" } else { "unbatched" };
            println!(
                "  {mode:<13} {size:>5} {:>13} {:>12} {pipe:>12} {:>9.1}x {pipe_ratio:>9}",
                rate(shm),
                rate(unix),
                shm / unix
            );
        }
    }
    println!("  (batched unix dgram uses sendmmsg/recvmmsg)");
    println!();
    println!("one writer       size   shm channel   FUSE trigger file   shm/FUSE");
    for size in SIZES {
        // FUSE costs a round trip per write: fewer messages keep the run short.
        let n = (plan.messages / 20).max(10_000);
        let (mut shm, mut fuse) = (Vec::new(), Vec::new());
        for _ in 0..plan.runs {
            shm.push(shm_throughput(size, n, false));
            fuse.push(fuse_throughput(size, n));
        }
        let (shm, fuse) = (median(shm), median(fuse));
        println!(
            "  {:<13} {size:>5} {:>13} {:>19} {:>9.1}x",
            "unbatched",
            rate(shm),
            rate(fuse),
            shm / fuse
        );
    }
    println!();
    println!("one-way latency  size   shm p50/p99 (ns)   unix p50/p99 (ns)   p50 unix/shm");
    for size in SIZES {
        for woken in [false, true] {
            let samples = if woken {
                plan.woken_samples
            } else {
                plan.latency_samples
            };
            let shm = shm_latency(size, samples, woken);
            let unix = unix_latency(size, samples, woken);
            let mode = if woken { "woken" } else { "spinning" };
            println!(
                "  {mode:<13} {size:>5} {:>8} / {:<8} {:>8} / {:<8} {:>10.1}x",
                shm.p50,
                shm.p99,
                unix.p50,
                unix.p99,
                unix.p50 as f64 / shm.p50.max(1) as f64
            );
        }
    }
}
