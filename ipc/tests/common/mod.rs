//! Helpers shared by the integration tests: unique channel names, a consumer running on its own
//! thread (stopped on drop), child processes that re-run this test binary in a "role" (producer,
//! fuzzer, ...) and are killed on drop, and deadline polling. Each test binary that spawns
//! children declares `#[test] fn child_entry() { common::child_entry() }`.
// Each test binary uses a part of the harness.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use triggerd_ipc::{Channel, ChannelSpec, ChannelStats, IpcError, PublishError, Publisher};

pub const ROLE_ENV: &str = "TRIGGERD_IPC_TEST_ROLE";
pub const ARGS_ENV: &str = "TRIGGERD_IPC_TEST_ARGS";

/// A channel name unique to this process and call.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "test{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub use triggerd_testkit::wait_until;

/// A consumer on its own thread, delivering into `sink`; stopped and joined on drop.
pub struct Consumer {
    pub channel: Arc<Channel>,
    done: Option<mpsc::Receiver<Result<(), IpcError>>>,
    thread: Option<JoinHandle<()>>,
}

impl Consumer {
    pub fn start(spec: &ChannelSpec, deliver: impl FnMut(&[u8]) + Send + 'static) -> Self {
        let channel = Arc::new(Channel::create(spec).expect("create channel"));
        Self::run(channel, deliver)
    }

    pub fn run(channel: Arc<Channel>, mut deliver: impl FnMut(&[u8]) + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let runner = Arc::clone(&channel);
        let thread = std::thread::spawn(move || {
            let _ = tx.send(runner.run(&mut deliver));
        });
        Self {
            channel,
            done: Some(rx),
            thread: Some(thread),
        }
    }

    /// A consumer that collects every message.
    pub fn collecting(spec: &ChannelSpec) -> (Self, Arc<Mutex<Vec<Vec<u8>>>>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        let consumer = Self::start(spec, move |m| sink.lock().unwrap().push(m.to_vec()));
        (consumer, got)
    }

    pub fn stats(&self) -> ChannelStats {
        self.channel.stats()
    }

    /// Waits up to `limit` for `run` to return by itself.
    pub fn finished(&mut self, limit: Duration) -> Option<Result<(), IpcError>> {
        let result = self.done.as_ref()?.recv_timeout(limit).ok()?;
        self.done = None;
        Some(result)
    }

    /// Stops the consumer and returns how `run` ended (None if it did not return in `limit`).
    pub fn stop(&mut self, limit: Duration) -> Option<Result<(), IpcError>> {
        self.channel.stopper().stop();
        self.finished(limit)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.channel.stopper().stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A child process running this test binary in a role; killed and reaped on drop.
pub struct ChildProc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProc {
    pub fn spawn(role: &str, args: &[String]) -> Self {
        Self::spawn_with(role, args, |_| {})
    }

    pub fn spawn_with(role: &str, args: &[String], adjust: impl FnOnce(&mut Command)) -> Self {
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            "child_entry",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(ROLE_ENV, role)
        .env(ARGS_ENV, args.join(" "))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line the child printed that starts with `prefix`, waiting up to `limit`.
    pub fn line(&self, prefix: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Some(rest.trim().to_owned());
            }
        }
    }

    /// Waits up to `limit` for the child to exit; returns whether it exited successfully.
    pub fn wait_success(&mut self, limit: Duration) -> bool {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status.is_some_and(|s| s.success())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test message: producer id, sequence number, then filler up to `size` bytes.
pub fn message(id: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size.max(12));
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.resize(size.max(12), (seq as u8) ^ (id as u8));
    m
}

/// Splits a test message into (producer id, sequence), checking its filler.
pub fn parse_message(m: &[u8]) -> Option<(u32, u64)> {
    let id = u32::from_le_bytes(m.get(..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(m.get(4..12)?.try_into().ok()?);
    m[12..]
        .iter()
        .all(|&b| b == (seq as u8) ^ (id as u8))
        .then_some((id, seq))
}

/// Entry point of child processes: does nothing unless the role variable is set.
pub fn child_entry() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let args: Vec<String> = std::env::var(ARGS_ENV)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let code = match role.as_str() {
        "produce" => produce(&args),
        "produce-forever" => produce_forever(&args),
        "fuzz" => fuzz(&args),
        "try-publish" => try_publish(&args),
        other => {
            eprintln!("unknown child role {other}");
            3
        }
    };
    std::process::exit(code);
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("child argument {i} missing or invalid in {args:?}"))
}

/// `produce CHANNEL ID COUNT SIZE BATCH`: publishes COUNT numbered messages, BATCH at a time
/// (1 = unbatched), waiting for space when full.
fn produce(args: &[String]) -> i32 {
    let (channel, id, count, size, batch): (String, u32, u64, usize, usize) = (
        arg(args, 0),
        arg(args, 1),
        arg(args, 2),
        arg(args, 3),
        arg(args, 4),
    );
    let publisher = Publisher::connect(&channel).expect("connect");
    println!("connected");
    let mut seq = 0;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    while seq < count || !pending.is_empty() {
        while pending.len() < batch && seq < count {
            pending.push(message(id, seq, size));
            seq += 1;
        }
        let refs: Vec<&[u8]> = pending.iter().map(Vec::as_slice).collect();
        match publisher.publish_batch(&refs) {
            Ok(n) => drop(pending.drain(..n)),
            Err(PublishError::WouldBlock) => std::thread::yield_now(),
            Err(e) => panic!("publish failed: {e}"),
        }
    }
    println!("done");
    0
}

/// `produce-forever CHANNEL ID`: publishes numbered 100-byte messages until killed.
fn produce_forever(args: &[String]) -> i32 {
    let (channel, id): (String, u32) = (arg(args, 0), arg(args, 1));
    let publisher = Publisher::connect(&channel).expect("connect");
    println!("connected");
    let mut seq = 0;
    loop {
        match publisher.publish(&message(id, seq, 100)) {
            Ok(()) => seq += 1,
            Err(PublishError::WouldBlock) => std::thread::yield_now(),
            Err(e) => panic!("publish failed: {e}"),
        }
    }
}

/// `fuzz CHANNEL`: maps the channel's memfd directly and writes random bytes at random places
/// forever, ringing the doorbell now and then, until killed.
fn fuzz(args: &[String]) -> i32 {
    let channel: String = arg(args, 0);
    // What any permitted publisher can get: the region's memfd, from the channel's socket.
    let file = std::fs::File::from(triggerd_ipc::receive_memfd(&channel).expect("region memfd"));
    let mut map = unsafe_map(&file);
    let len = map.len();
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    println!("mapped");
    for round in 0u64.. {
        let at = (next() as usize) % len;
        let end = (at + 1 + (next() as usize) % 64).min(len);
        for b in &mut map[at..end] {
            *b = next() as u8;
        }
        if round % 1024 == 0 {
            // The doorbell word sits at byte 128 of the header: wake whoever sleeps there.
            let word = map[128..132].as_mut_ptr();
            let null = std::ptr::null::<u8>();
            // SAFETY: FUTEX_WAKE only uses the address of a live, aligned word of our mapping.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word,
                    libc::FUTEX_WAKE,
                    i32::MAX,
                    null,
                    null,
                    0,
                )
            };
        }
    }
    0
}

fn unsafe_map(file: &std::fs::File) -> memmap2::MmapMut {
    // SAFETY: the region is shared with other processes on purpose: this child is the hostile
    // peer and only writes plain bytes into it.
    unsafe { memmap2::MmapMut::map_mut(file) }.expect("map region")
}

/// `try-publish CHANNEL`: prints `result: ok` or `result: <error>` for one connect + publish.
fn try_publish(args: &[String]) -> i32 {
    let channel: String = arg(args, 0);
    let outcome = Publisher::connect(&channel)
        .map_err(|e| format!("{e:?}"))
        .and_then(|p| p.publish(b"from child").map_err(|e| format!("{e:?}")));
    match outcome {
        Ok(()) => println!("result: ok"),
        Err(e) => println!("result: {e}"),
    }
    0
}
