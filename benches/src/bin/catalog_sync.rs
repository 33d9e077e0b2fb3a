//! The synced trigger tree: how fast a catalog change reaches the mounts of 10 triggerd
//! hosts (`sync_triggers = true`), and how long a snapshot of 10,000 triggers takes.
//!
//! - Propagation: 100 `trigger add`s written to the broker's store (as the admin verb does);
//!   each is timed until the file exists in all 10 mounts (p50/p99). Baseline in the same
//!   run: one 200-byte message from a ROUTER to 10 DEALERs on the same loopback (the
//!   transport's floor); RATIO = propagation p50 / baseline p50.
//! - Snapshot: `mmi.catalog snapshot` of 10,000 triggers asked by a client and parsed
//!   (median of 20). Baseline: the same bytes echoed through a ROUTER/DEALER pair; RATIO =
//!   snapshot / echo. Also a host's first sync: start to all 10,000 files listed in its mount.
//!
//! Run as root: `cargo build --release -p triggerd -p triggerd-benches &&
//! target/release/catalog_sync` (TRIGGERD_BIN overrides the daemon's path).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use triggerd_benches::{
    percentile, spawn_daemon, start_broker, triggerd_bin, wait_until, StopOnDrop,
};
use triggerd_remote::broker::{CatalogChange, CatalogEntry, Snapshot, Store, DEFAULT_TEAM};
use triggerd_remote::{Client, ClientOptions, Event};

const HOSTS: usize = 10;
const CHANGES: usize = 100;
const BIG: usize = 10_000;
const LIMIT: Duration = Duration::from_secs(60);

struct Host {
    mount: PathBuf,
    _daemon: StopOnDrop,
}

fn host(triggerd: &Path, dir: &Path, endpoint: &str, i: usize) -> Result<Host> {
    let root = dir.join(format!("host{i}"));
    std::fs::create_dir_all(&root)?;
    let config = root.join("triggerd.conf");
    let mount = root.join("fs");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ncontrol = \"{r}/control.sock\"\nstate_dir = \"{r}/state\"\n\
             fs_mount = \"{m}\"\n\n[broker]\nendpoint = \"{endpoint}\"\nspool = \"{r}/spool\"\n\
             sync_triggers = true\n",
            r = root.display(),
            m = mount.display()
        ),
    )?;
    let daemon = spawn_daemon(triggerd, &config)?;
    Ok(Host {
        mount,
        _daemon: daemon,
    })
}

fn add(store: &Store, path: &str) -> Result<u64> {
    let entry = CatalogEntry::trigger(path, "sink");
    Ok(store.catalog_apply(DEFAULT_TEAM, &CatalogChange::Add { entry })?)
}

/// Spins (200 µs steps) until every mount has `path`.
fn everywhere(hosts: &[Host], path: &str) -> Result<()> {
    let start = Instant::now();
    for h in hosts {
        let file = h.mount.join(path);
        while !file.exists() {
            if start.elapsed() > LIMIT {
                anyhow::bail!("{} never appeared", file.display());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A ROUTER bound on a loopback port the kernel picks, and its endpoint.
fn router(ctx: &zmq::Context) -> Result<(zmq::Socket, String)> {
    let router = ctx.socket(zmq::ROUTER)?;
    router.bind("tcp://127.0.0.1:*")?;
    let endpoint = router
        .get_last_endpoint()?
        .map_err(|_| anyhow::anyhow!("endpoint"))?;
    Ok((router, endpoint))
}

/// ROUTER → 10 DEALERs, one 200-byte message each round: time until all have it (ms).
fn fanout_baseline(rounds: usize) -> Result<Vec<f64>> {
    let ctx = zmq::Context::new();
    let (router, endpoint) = router(&ctx)?;
    let mut dealers = Vec::new();
    for i in 0..HOSTS {
        let d = ctx.socket(zmq::DEALER)?;
        d.set_identity(format!("d{i}").as_bytes())?;
        d.connect(&endpoint)?;
        d.send("hello", 0)?;
        dealers.push(d);
    }
    for _ in 0..HOSTS {
        router.recv_multipart(0)?;
    }
    let body = vec![b'x'; 200];
    let mut out = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for i in 0..HOSTS {
            router.send(format!("d{i}").as_bytes(), zmq::SNDMORE)?;
            router.send(&body, 0)?;
        }
        for d in &dealers {
            d.recv_bytes(0)?;
        }
        out.push(ms(start.elapsed()));
    }
    Ok(out)
}

/// The same bytes as a snapshot, echoed through ROUTER/DEALER (ms, median of `rounds`).
fn echo_baseline(bytes: usize, rounds: usize) -> Result<f64> {
    let ctx = zmq::Context::new();
    let (router, endpoint) = router(&ctx)?;
    let dealer = ctx.socket(zmq::DEALER)?;
    dealer.connect(&endpoint)?;
    let body = vec![b'x'; bytes];
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        dealer.send("snapshot", 0)?;
        let frames = router.recv_multipart(0)?;
        router.send(&frames[0], zmq::SNDMORE)?;
        router.send(&body, 0)?;
        let got = dealer.recv_bytes(0)?;
        std::hint::black_box(got);
        samples.push(ms(start.elapsed()));
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Asks for a snapshot and parses it; (ms, bytes, entries).
fn snapshot(client: &mut Client) -> Result<(f64, usize, usize)> {
    let start = Instant::now();
    let id = client.send("mmi.catalog", "", None, Some(LIMIT), &[b"snapshot"])?;
    loop {
        match client.recv(LIMIT)? {
            Some(Event::Final(reply)) if reply.id == id => {
                let body = reply.body.concat();
                let parsed: Snapshot = serde_json::from_slice(&body)?;
                return Ok((ms(start.elapsed()), body.len(), parsed.entries.len()));
            }
            Some(_) => continue,
            None => anyhow::bail!("no snapshot"),
        }
    }
}

fn listed(mount: &Path) -> usize {
    let Ok(racks) = std::fs::read_dir(mount.join("big")) else {
        return 0;
    };
    racks
        .flatten()
        .map(|r| std::fs::read_dir(r.path()).map_or(0, |d| d.count()))
        .sum()
}

fn main() -> Result<()> {
    let triggerd = triggerd_bin()?;
    let dir = tempfile::tempdir()?;
    let (endpoint, _broker) = start_broker(dir.path())?;
    let store = Store::open(&dir.path().join("store.db"))?;
    add(&store, "warmup/t")?;
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        hosts.push(host(&triggerd, dir.path(), &endpoint, i)?);
    }
    everywhere(&hosts, "warmup/t").context("hosts up")?;

    let mut samples = Vec::new();
    for i in 0..CHANGES {
        let start = Instant::now();
        add(&store, &format!("bench/t{i}"))?;
        everywhere(&hosts, &format!("bench/t{i}"))?;
        samples.push(ms(start.elapsed()));
    }
    samples.sort_by(f64::total_cmp);
    let mut floor = fanout_baseline(CHANGES)?;
    floor.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
    let (b50, b99) = (percentile(&floor, 50.0), percentile(&floor, 99.0));
    let (p50, p99, b50, b99) = (
        p50.unwrap_or(0.0),
        p99.unwrap_or(0.0),
        b50.unwrap_or(0.0),
        b99.unwrap_or(0.0),
    );
    println!(
        "propagation of {CHANGES} catalog changes to {HOSTS} mounts: p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    println!("baseline ROUTER -> {HOSTS} DEALERs, 200 B: p50 {b50:.3} ms, p99 {b99:.3} ms");
    println!(
        "RATIO propagation p50 / fan-out p50: {:.0}",
        p50 / b50.max(1e-6)
    );
    drop(hosts);

    let changes: Vec<CatalogChange> = (0..BIG)
        .map(|i| CatalogChange::Add {
            entry: CatalogEntry::trigger(&format!("big/rack{:02}/pi{i:05}", i % 50), "sink"),
        })
        .collect();
    store.catalog_apply_all(DEFAULT_TEAM, &changes)?;
    let mut client = Client::connect(&endpoint, ClientOptions::default())?;
    let mut times = Vec::new();
    let (mut bytes, mut entries) = (0, 0);
    for _ in 0..20 {
        let (t, b, e) = snapshot(&mut client)?;
        times.push(t);
        (bytes, entries) = (b, e);
    }
    times.sort_by(f64::total_cmp);
    let snap = times[times.len() / 2];
    let echo = echo_baseline(bytes, 20)?;
    println!(
        "snapshot of {entries} entries ({bytes} bytes), asked and parsed: median {snap:.1} ms"
    );
    println!("baseline echo of {bytes} bytes through ROUTER/DEALER: median {echo:.2} ms");
    println!("RATIO snapshot / echo: {:.1}", snap / echo.max(1e-6));

    let start = Instant::now();
    let first = host(&triggerd, dir.path(), &endpoint, HOSTS)?;
    wait_until("10,000 files in the mount", LIMIT, || {
        listed(&first.mount) >= BIG
    })?;
    println!(
        "a host's first sync of {BIG} triggers, start to full listing: {:.0} ms",
        ms(start.elapsed())
    );
    Ok(())
}
