//! close() → command start latency and burst loss, triggerd vs incron, on identical streams in
//! one run (one daemon at a time); plus idle RSS of both daemons. Both run the same tiny C program (`stamp`) that
//! logs the time it started; the writer logs the time each close() returned. incrond logs
//! every event through syslog(3); on a host without a syslog daemon each call would retry the
//! connection to `/dev/log`, so the benchmark gives it a sink of its own there, as a host with
//! a syslog daemon has (its figure is then incron's own).
//!
//! Run as root: `cargo run --release -p triggerd-benches --bin event_latency`
//! (builds nothing else: set TRIGGERD_BIN, default target/release/triggerd).

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Result};
use triggerd_benches::{
    compile_c, count_lines, latencies, paced_stream, percentile, rss_kib, settle, triggerd_bin,
    wait_until, Removed, StopOnDrop,
};

const PACED_FILES: usize = 2_000;
const PACED_RATE: u64 = 500;
const BURST_FILES: usize = 20_000;

fn main() -> Result<()> {
    let triggerd = triggerd_bin()?;
    if Command::new("pgrep")
        .arg("-x")
        .arg("incrond")
        .status()?
        .success()
    {
        bail!("an incrond is already running; stop it first");
    }
    fs::create_dir_all("/var/tmp/triggerd-bench")?;
    let work = tempfile::tempdir_in("/var/tmp/triggerd-bench")?;
    let dir = work.path();
    let stamp = dir.join("stamp");
    compile_c("stamp", &stamp)?;
    let log = |who: &str, what: &str| dir.join(format!("{who}-{what}.log"));
    let watched = |who: &str, what: &str| dir.join(format!("{who}-{what}"));
    for who in ["triggerd", "incron"] {
        for what in ["paced", "burst"] {
            fs::create_dir(watched(who, what))?;
        }
    }

    let config = dir.join("triggerd.conf");
    let mut text = format!(
        "[daemon]\ncontrol = \"{0}/control.sock\"\nstate_dir = \"{0}/state\"\n",
        dir.display()
    );
    for what in ["paced", "burst"] {
        text += &format!(
            "[[watch]]\npath = \"{}\"\nevents = \"close_write\"\nmax_running = 64\nexec = [\"{}\", \"{}\", \"$#\"]\n",
            watched("triggerd", what).display(),
            stamp.display(),
            log("triggerd", what).display()
        );
    }
    fs::write(&config, text)?;
    let table = Path::new("/etc/incron.d/triggerd-bench");
    let mut incron_table = String::new();
    for what in ["paced", "burst"] {
        incron_table += &format!(
            "{} IN_CLOSE_WRITE {} {} $#\n",
            watched("incron", what).display(),
            stamp.display(),
            log("incron", what).display()
        );
    }
    fs::write(table, incron_table)?;
    let _table = Removed(table.to_path_buf());
    let _syslog = SyslogSink::unless_present(Path::new("/dev/log"))?;

    // The two daemons run one after the other on identical streams, so neither competes with
    // the other's process spawning on this small machine.
    let mut results = Vec::new();
    for who in ["incron", "triggerd"] {
        let daemon = StopOnDrop(match who {
            "triggerd" => Command::new(&triggerd)
                .arg("--config")
                .arg(&config)
                .env("TRIGGERD_LOG", "warn")
                .stderr(Stdio::null())
                .spawn()?,
            _ => Command::new("incrond")
                .arg("-n")
                .stderr(Stdio::null())
                .spawn()?,
        });
        let probe = watched(who, "paced").join("probe");
        wait_until(&format!("{who} to fire"), Duration::from_secs(20), || {
            fs::write(&probe, b"p").ok();
            count_lines(&log(who, "paced")) > 0
        })?;
        let _ = fs::remove_file(log(who, "paced"));
        let rss = rss_kib(daemon.0.id());
        let closed = paced_stream(&watched(who, "paced"), PACED_FILES, PACED_RATE)?;
        // Counted by name: a late probe run may also land in the log.
        let _ = wait_until("paced runs", Duration::from_secs(60), || {
            latencies(&log(who, "paced"), &closed).len() >= PACED_FILES
        });
        let latency = latencies(&log(who, "paced"), &closed);
        for i in 0..BURST_FILES {
            fs::write(watched(who, "burst").join(format!("b{i:06}")), b"x")?;
        }
        settle(&[log(who, "burst")], Duration::from_secs(120));
        let fired = count_lines(&log(who, "burst"));
        let zombies = zombies_of(daemon.0.id());
        results.push((who, latency, fired, zombies, rss));
    }

    println!("event → action start latency, {PACED_FILES} files at {PACED_RATE}/s, same stream, one daemon at a time:");
    for (who, latency, ..) in &results {
        print_latency(who, latency, PACED_FILES);
    }
    let (incron, triggerd) = (&results[0], &results[1]);
    for (p, target) in [(50.0, " (target ≤ 0.5)"), (99.0, "")] {
        if let (Some(t), Some(i)) = (percentile(&triggerd.1, p), percentile(&incron.1, p)) {
            println!("  p{p} ratio triggerd/incron = {:.2}{target}", t / i);
        }
    }
    println!("burst of {BURST_FILES} files:");
    for (who, _, fired, zombies, _) in &results {
        println!(
            "  {who:<8} fired {fired} (lost {}), zombies {zombies}",
            BURST_FILES - (*fired).min(BURST_FILES)
        );
    }
    println!(
        "idle RSS: triggerd {} KiB, incrond {} KiB (ratio {:.2}; target ≤ 10240 KiB)",
        triggerd.4,
        incron.4,
        triggerd.4 as f64 / incron.4.max(1) as f64
    );
    Ok(())
}

/// A `/dev/log` datagram socket that reads and drops what syslog(3) sends, removed at drop;
/// `None` when the host already has one (its syslog daemon is then the sink). `/dev/log` is
/// often a symlink to journald's socket: when that is dangling, the sink is bound at its
/// target (the directories made for it are left, empty).
struct SyslogSink {
    _removed: Removed,
}

impl SyslogSink {
    fn unless_present(path: &Path) -> Result<Option<SyslogSink>> {
        if path.exists() {
            return Ok(None);
        }
        let target = match fs::read_link(path) {
            Ok(link) => path.parent().unwrap_or(Path::new("/")).join(link),
            Err(_) => path.to_path_buf(),
        };
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir)?;
        }
        let socket = UnixDatagram::bind(&target)?;
        let removed = Removed(target);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends when the socket fails; the process exits soon after the benchmark anyway.
            while socket.recv(&mut buf).is_ok() {}
        });
        Ok(Some(SyslogSink { _removed: removed }))
    }
}

fn print_latency(who: &str, sorted: &[f64], sent: usize) {
    match (percentile(sorted, 50.0), percentile(sorted, 99.0)) {
        (Some(p50), Some(p99)) => println!(
            "  {who}: p50 {p50:.3} ms  p99 {p99:.3} ms  ({} of {sent} fired)",
            sorted.len()
        ),
        _ => println!("  {who}: nothing fired"),
    }
}

fn zombies_of(parent: u32) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                return false;
            };
            let mut fields = rest.split(' ');
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            state == Some("Z") && ppid == Some(parent)
        })
        .count()
}
