//! Events/s from an event-source provider that fires as fast as it can into a rule that takes
//! no action (busy with one long run, `on_busy = "drop"`: admission only, no spawn per event),
//! against the same number of events published into a `[[channel]]` with the same rule
//! settings, in the same daemon and the same run. Timed from the moment the events are asked
//! for (`resume` of the provider's rule, which sends it `add`; the first publish) until
//! `status` counts them all matched. The provider is this binary (`--provider`): it answers
//! the protocol and, on each `add`, writes its fire lines in large writes, so what is measured
//! is triggerd's side (pipe, line parsing, bounds, dispatch). RATIO = provider / channel.
//!
//! Run as root: `cargo build --release -p triggerd -p triggerd-benches &&
//! target/release/provider_rate [--quick]` (TRIGGERD_BIN overrides the daemon's path).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use triggerd_benches::{triggerd_bin, wait_until, StopOnDrop};

const LIMIT: Duration = Duration::from_secs(120);
const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(n) = args.iter().position(|a| a == "--provider") {
        let events = args
            .get(n + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        return provider(events);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (events, rounds) = if quick { (20_000, 3) } else { (200_000, 5) };
    let scratch = tempfile::tempdir()?;
    let socket = scratch.path().join("control.sock");
    let config = scratch.path().join("triggerd.conf");
    let channel = format!("bench-provider-{}", std::process::id());
    let me = std::env::current_exe()?;
    let busy =
        "exec = [\"/bin/sleep\", \"3600\"]\nmax_running = 1\non_busy = \"drop\"\nqueue = 1024\n";
    std::fs::write(
        &config,
        format!(
            "[daemon]\ncontrol = \"{}\"\nstate_dir = \"{}\"\nfs_mount = \"{}\"\nshutdown_grace = \"100ms\"\n\n\
             [[provider]]\nname = \"flood\"\nexec = [\"{}\", \"--provider\", \"{events}\"]\nmax_line = 4096\n\n\
             [[source]]\nname = \"from-provider\"\nprovider = \"flood\"\n{busy}\n\
             [[channel]]\nname = \"{channel}\"\n{busy}",
            socket.display(),
            scratch.path().join("state").display(),
            scratch.path().join("fs").display(),
            me.display(),
        ),
    )?;
    let mut daemon = StopOnDrop(
        Command::new(triggerd_bin()?)
            .arg("--config")
            .arg(&config)
            .env("TRIGGERD_LOG", "error")
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_until("the daemon", Duration::from_secs(20), || {
        matched(&socket, "from-provider").is_some()
    })?;
    // The first `add` at start fires one batch; wait for it, then pause between rounds.
    wait_until("the first batch", LIMIT, || {
        matched(&socket, "from-provider").is_some_and(|n| n >= events)
    })?;
    let publisher = triggerd_ipc::Publisher::connect(&channel).context("channel")?;
    let mut ratios = Vec::new();
    for round in 0..rounds {
        control(&socket, "pause", "from-provider")?;
        let before = matched(&socket, "from-provider").unwrap_or(0);
        let start = Instant::now();
        control(&socket, "resume", "from-provider")?;
        wait_until("the provider's events", LIMIT, || {
            matched(&socket, "from-provider").is_some_and(|n| n >= before + events)
        })?;
        let from_provider = events as f64 / start.elapsed().as_secs_f64();

        let before = matched(&socket, &channel).unwrap_or(0);
        let start = Instant::now();
        for _ in 0..events {
            publisher.publish_timeout(PAYLOAD.as_bytes(), LIMIT)?;
        }
        wait_until("the channel's events", LIMIT, || {
            matched(&socket, &channel).is_some_and(|n| n >= before + events)
        })?;
        let from_channel = events as f64 / start.elapsed().as_secs_f64();
        let ratio = from_provider / from_channel;
        println!(
            "round {round}: provider {from_provider:>9.0} events/s   channel {from_channel:>9.0} events/s   ratio {ratio:.2}"
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ratio provider / channel = {:.2} ({events} events per round)",
        ratios[ratios.len() / 2]
    );
    // SAFETY: kill(2) on the daemon we spawned and still own.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let _ = daemon.0.wait();
    Ok(())
}

/// A rule's matched count, from the control socket.
fn matched(socket: &Path, rule: &str) -> Option<u64> {
    let status = request(socket, "{\"verb\":\"status\"}")?;
    status["status"]["rules"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == rule)?["matched"]
        .as_u64()
}

fn control(socket: &Path, verb: &str, rule: &str) -> Result<()> {
    let line = serde_json::json!({ "verb": verb, "rule": rule }).to_string();
    match request(socket, &line) {
        Some(reply) if reply.get("done").is_some() => Ok(()),
        other => bail!("{verb} {rule}: {other:?}"),
    }
}

fn request(socket: &Path, line: &str) -> Option<serde_json::Value> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).ok()?;
    serde_json::from_str(&answer).ok()
}

/// The provider side: answers the protocol, writes `events` fires on each `add`.
fn provider(events: u64) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    for line in std::io::stdin().lock().lines() {
        let message: serde_json::Value = serde_json::from_str(&line?)?;
        let rule = message["rule"].as_str().unwrap_or_default();
        match message["type"].as_str() {
            Some("init") => writeln!(out, "{{\"type\":\"ready\",\"version\":1}}")?,
            Some("validate") => writeln!(out, "{{\"type\":\"valid\",\"rule\":\"{rule}\"}}")?,
            Some("add") => {
                let fire = format!(
                    "{{\"type\":\"fire\",\"rule\":\"{rule}\",\"payload\":\"{PAYLOAD}\"}}\n"
                );
                for _ in 0..events {
                    out.write_all(fire.as_bytes())?;
                }
            }
            Some("shutdown") => break,
            _ => {}
        }
        out.flush()?;
    }
    Ok(())
}
