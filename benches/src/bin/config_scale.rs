//! What a big config costs: N `[[watch]]` rules on N directories plus N `[[trigger]]` files,
//! for N = 10, 1,000, 10,000, 50,000 in one run (`CONFIG_SCALE_N=10,1000,...` overrides), each
//! row printed with its ratio to the N = 10 row: `triggerd check`, start → `status` answers,
//! RSS above an idle daemon per entry, a no-change reload, a reload with one rule changed,
//! close() → command start p50 in the first and the last rule's directory, a 2,000-file burst
//! into one watched directory, and the fds the daemon holds. Every watch runs `stamp`, which
//! logs when it started.
//!
//! Run as root: `cargo run --release -p triggerd-benches --bin config_scale`
//! (set TRIGGERD_BIN, default target/release/triggerd).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use triggerd_benches::{
    compile_c, count_lines, latencies, now_ns, percentile, rss_kib, triggerd_bin, wait_until,
    StopOnDrop,
};

const PACED: usize = 200;
const PACED_GAP: Duration = Duration::from_millis(5);
const BURST: usize = 2_000;
const LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Default, Clone)]
struct Row {
    n: usize,
    check: f64,
    start: f64,
    rss_per_entry: f64,
    reload_same: f64,
    reload_one: f64,
    p50_first: Option<f64>,
    p50_last: Option<f64>,
    burst: Option<f64>,
    fds: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Bench {
    triggerd: PathBuf,
    dir: PathBuf,
    stamp: PathBuf,
}

fn main() -> Result<()> {
    let sizes: Vec<usize> = match std::env::var("CONFIG_SCALE_N") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse())
            .collect::<Result<_, _>>()
            .context("CONFIG_SCALE_N")?,
        Err(_) => vec![10, 1_000, 10_000, 50_000],
    };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    fs::create_dir_all("/var/tmp/triggerd-bench")?;
    let work = tempfile::tempdir_in("/var/tmp/triggerd-bench")?;
    let bench = Bench {
        triggerd: triggerd_bin()?,
        dir: work.path().to_path_buf(),
        stamp: work.path().join("stamp"),
    };
    compile_c("stamp", &bench.stamp)?;
    for i in 0..largest {
        fs::create_dir_all(bench.watched(i))?;
    }
    let idle = bench.idle_rss()?;
    println!("idle daemon (no rules): {idle} KiB");
    let mut rows = Vec::new();
    for n in sizes {
        let row = bench.row(n, idle)?;
        print_row(&row, rows.first());
        rows.push(row);
    }
    Ok(())
}

impl Bench {
    fn watched(&self, i: usize) -> PathBuf {
        self.dir.join("w").join(format!("d{i}"))
    }

    fn log(&self) -> PathBuf {
        self.dir.join("stamps.log")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("triggerd.conf")
    }

    fn daemon_log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The config for `n` entries of each kind; `changed` rule's events differ.
    fn write_config(&self, n: usize, changed: Option<usize>) -> Result<()> {
        let mut text = format!(
            "[daemon]\ncontrol = \"{0}/control.sock\"\nstate_dir = \"{0}/state\"\nfs_mount = \"{0}/fs\"\n\n",
            self.dir.display()
        );
        let stamp = self.stamp.display();
        let log = self.log();
        let log = log.display();
        for i in 0..n {
            let events = if changed == Some(i) {
                "[\"close_write\", \"moved_to\"]"
            } else {
                "\"close_write\""
            };
            // The burst goes into the first directory: let it run many at once.
            let room = if i == 0 {
                "max_running = 64\nqueue = 4096\n"
            } else {
                ""
            };
            text += &format!(
                "[[watch]]\nname = \"w{i}\"\npath = \"{}\"\nevents = {events}\n{room}exec = [\"{stamp}\", \"{log}\", \"$#\"]\n\n",
                self.watched(i).display()
            );
        }
        for i in 0..n {
            text += &format!(
                "[[trigger]]\nname = \"t{i}\"\nfile = \"t/t{i}\"\nexec = [\"{stamp}\", \"{log}\", \"t{i}\"]\n\n"
            );
        }
        fs::write(self.config(), text)?;
        Ok(())
    }

    fn spawn(&self) -> Result<StopOnDrop> {
        let _ = fs::remove_file(self.daemon_log());
        let log = fs::File::create(self.daemon_log())?;
        Ok(StopOnDrop(
            Command::new(&self.triggerd)
                .arg("--config")
                .arg(self.config())
                .env("TRIGGERD_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        ))
    }

    fn wait_status(&self, daemon: &mut StopOnDrop) -> Result<()> {
        let start = Instant::now();
        loop {
            if status(&self.socket()).is_ok() {
                return Ok(());
            }
            if let Some(code) = daemon.0.try_wait()? {
                bail!(
                    "triggerd exited ({code}):\n{}",
                    fs::read_to_string(self.daemon_log()).unwrap_or_default()
                );
            }
            if start.elapsed() > LIMIT {
                bail!("no status within {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn idle_rss(&self) -> Result<u64> {
        self.write_config(0, None)?;
        let mut daemon = self.spawn()?;
        self.wait_status(&mut daemon)?;
        Ok(rss_kib(daemon.0.id()))
    }

    /// Sends SIGUSR1 and waits for the reload's log line; returns how long it took.
    fn reload(&self, daemon: &StopOnDrop) -> Result<f64> {
        let done = |text: &str| {
            text.matches("config reloaded").count() + text.matches("reload refused").count()
        };
        let before = done(&fs::read_to_string(self.daemon_log())?);
        let start = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(daemon.0.id() as i32, libc::SIGUSR1) };
        if rc != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        let log = self.daemon_log();
        wait_until("the reload", LIMIT, || {
            done(&fs::read_to_string(&log).unwrap_or_default()) > before
        })?;
        let took = ms(start.elapsed());
        if fs::read_to_string(&log)?.contains("reload refused") {
            bail!("reload refused:\n{}", fs::read_to_string(&log)?);
        }
        Ok(took)
    }

    fn row(&self, n: usize, idle: u64) -> Result<Row> {
        let _ = fs::remove_file(self.log());
        self.write_config(n, None)?;
        let mut row = Row {
            n,
            ..Row::default()
        };
        let start = Instant::now();
        let check = Command::new(&self.triggerd)
            .arg("check")
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        row.check = ms(start.elapsed());
        if !check.success() {
            bail!("triggerd check failed at N = {n}");
        }
        let start = Instant::now();
        let mut daemon = self.spawn()?;
        self.wait_status(&mut daemon)?;
        row.start = ms(start.elapsed());
        let fired = wait_until("a probe to fire", Duration::from_secs(30), || {
            let _ = fs::write(self.watched(0).join("probe"), b"p");
            count_lines(&self.log()) > 0
        });
        row.rss_per_entry =
            (rss_kib(daemon.0.id()).saturating_sub(idle)) as f64 * 1024.0 / (2 * n) as f64;
        row.fds = fs::read_dir(format!("/proc/{}/fd", daemon.0.id()))?.count();
        row.reload_same = self.reload(&daemon)?;
        self.write_config(n, Some(n / 2))?;
        row.reload_one = self.reload(&daemon)?;
        if fired.is_ok() {
            row.p50_first = self.paced(0, "first")?;
            row.p50_last = self.paced(n - 1, "last")?;
            row.burst = self.burst()?;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
        let _ = wait_until("triggerd to stop", LIMIT, || {
            daemon.0.try_wait().ok().flatten().is_some()
        });
        Ok(row)
    }

    /// Close → command start p50 (ms) over `PACED` files written into rule `i`'s directory.
    fn paced(&self, i: usize, tag: &str) -> Result<Option<f64>> {
        let mut closed = std::collections::HashMap::new();
        for k in 0..PACED {
            let name = format!("{tag}{k}");
            fs::write(self.watched(i).join(&name), b"x")?;
            closed.insert(name, now_ns());
            std::thread::sleep(PACED_GAP);
        }
        let log = self.log();
        let _ = wait_until("paced runs", Duration::from_secs(30), || {
            latencies(&log, &closed).len() >= PACED
        });
        Ok(percentile(&latencies(&log, &closed), 50.0))
    }

    /// Seconds from the first of `BURST` files written into the first directory until every
    /// command started.
    fn burst(&self) -> Result<Option<f64>> {
        let before = count_lines(&self.log());
        let start = Instant::now();
        for k in 0..BURST {
            fs::write(self.watched(0).join(format!("b{k}")), b"x")?;
        }
        let done = wait_until("the burst", LIMIT, || {
            count_lines(&self.log()) >= before + BURST
        });
        Ok(done.ok().map(|()| start.elapsed().as_secs_f64()))
    }
}

/// One `status` request on the control socket; Ok once a whole reply line came back.
fn status(socket: &Path) -> std::io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(b"{\"verb\":\"status\"}\n")?;
    let mut line = Vec::new();
    BufReader::new(stream).read_until(b'\n', &mut line)?;
    if line.ends_with(b"\n") {
        Ok(())
    } else {
        Err(std::io::Error::other("short reply"))
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("nothing fired".into(), |v| format!("{v:.2} {unit}"))
}

fn ratio(v: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", v / base)
    } else {
        "-".into()
    }
}

fn ratio_opt(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) => ratio(v, b),
        _ => "-".into(),
    }
}

fn print_row(row: &Row, base: Option<&Row>) {
    println!(
        "N = {}: check {:.1} ms | start→status {:.1} ms | RSS {:.0} B/entry | reload (no change) {:.1} ms | reload (one changed) {:.1} ms | close→start p50 first {} last {} | {BURST}-file burst {} | fds {}",
        row.n,
        row.check,
        row.start,
        row.rss_per_entry,
        row.reload_same,
        row.reload_one,
        opt(row.p50_first, "ms"),
        opt(row.p50_last, "ms"),
        opt(row.burst, "s"),
        row.fds
    );
    if let Some(b) = base.filter(|b| b.n != row.n) {
        println!(
            "  vs N = {}: check {} | start {} | reload {} / {} | p50 first {} last {} | burst {} (targets at 50,000: p50 ≤ 1.2×, burst ≤ 1.25×, start ≤ 2 s, reloads ≤ 250 ms, ≤ 2048 B/entry)",
            b.n,
            ratio(row.check, b.check),
            ratio(row.start, b.start),
            ratio(row.reload_same, b.reload_same),
            ratio(row.reload_one, b.reload_one),
            ratio_opt(row.p50_first, b.p50_first),
            ratio_opt(row.p50_last, b.p50_first),
            ratio_opt(row.burst, b.burst)
        );
    }
}
