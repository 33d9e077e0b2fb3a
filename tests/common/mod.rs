//! Shared harness for the end-to-end tests: a real `triggerd` process on a config in a temp
//! dir, its control socket, an action script that records each run's arguments, and polling
//! with deadlines. Every resource is released in `Drop`, so a failing test leaves nothing.

// Each test binary uses a part of the harness.
#![allow(dead_code, unused_imports)]

pub mod mounts;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use triggerd::control::{Reply, Request, Status};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Runs a shell script (the test's own, never a file name through a shell) and asserts it
/// succeeded.
pub fn sh(script: &str) {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .status()
        .expect("sh");
    assert!(status.success(), "{script}");
}

pub use triggerd_testkit::{wait_for, KillOnDrop};

/// The global fanotify sysctl is changed by the overflow test: every test that creates a
/// fanotify group holds this lock shared while its daemon starts, the overflow test exclusively.
pub struct SysctlLock(File);

impl SysctlLock {
    pub fn shared() -> Self {
        Self::take(libc::LOCK_SH)
    }
    pub fn exclusive() -> Self {
        Self::take(libc::LOCK_EX)
    }
    fn take(how: i32) -> Self {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/triggerd-fanotify-sysctl.lock")
            .expect("lock file");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: flock on an fd we own; it is released when the file is closed.
        let rc = unsafe { libc::flock(fd, how) };
        assert_eq!(rc, 0, "flock");
        Self(file)
    }
}

/// Restores the global sysctl even when the test fails.
pub struct QueueLimit {
    old: String,
    _lock: SysctlLock,
}

const QUEUE_SYSCTL: &str = "/proc/sys/fs/fanotify/max_queued_events";

impl QueueLimit {
    pub fn lower(to: u32) -> Self {
        let lock = SysctlLock::exclusive();
        let old = fs::read_to_string(QUEUE_SYSCTL).unwrap();
        fs::write(QUEUE_SYSCTL, to.to_string()).unwrap();
        Self { old, _lock: lock }
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = fs::write(QUEUE_SYSCTL, self.old.trim());
    }
}

/// A temp dir with a `triggerd` process running on `triggerd.conf` inside it.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Extra environment of the daemon's process (test hooks).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes the config (`{dir}` is replaced by the temp dir, `{record}` by the recorder
    /// script, `{out}` by the records dir) and starts the daemon; returns once it answers.
    pub fn start(rules: &str) -> Self {
        Self::start_inner(rules, None)
    }

    /// Starts while the caller holds the sysctl lock (and whatever else `guard` keeps alive).
    pub fn start_holding_lock<G>(rules: &str, guard: G) -> Self {
        let daemon = Self::start_inner(rules, Some(()));
        drop(guard);
        daemon
    }

    fn start_inner(rules: &str, lock_held: Option<()>) -> Self {
        let mut daemon = Self::create(rules);
        let _lock = lock_held.is_none().then(SysctlLock::shared);
        daemon.spawn();
        daemon
    }

    /// Writes the config like `start` but does not start the process, so a test can prepare
    /// the state directory (`{dir}/state`) first; `launch` starts it.
    pub fn create(rules: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("triggerd-e2e")
            .tempdir_in(test_root())
            .expect("tempdir");
        // Actions may run as another user (`user = "nobody"`): let them reach their files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let socket = dir.path().join("control.sock");
        let config = dir.path().join("triggerd.conf");
        let log = dir.path().join("daemon.log");
        std::fs::create_dir_all(dir.path().join("out")).expect("out dir");
        write_recorder(&dir.path().join("record"));
        let daemon = Self {
            dir,
            child: None,
            config,
            socket,
            log,
            env: Vec::new(),
        };
        daemon.write_config(rules);
        daemon
    }

    /// Starts the process of a daemon made by `create` (or stopped by `stop`).
    pub fn launch(&mut self) {
        let _lock = SysctlLock::shared();
        self.spawn();
    }

    /// Stops the daemon (SIGTERM) and starts a new one on the same config and state dir.
    pub fn restart(&mut self) {
        let code = self.stop();
        assert_eq!(code, Some(0), "triggerd exit; log:\n{}", self.log_text());
        self.launch();
    }

    /// The daemon's state directory (`[daemon] state_dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    pub fn expand(&self, rules: &str) -> String {
        let dir = self.dir.path().display().to_string();
        rules
            .replace("{record}", &format!("{dir}/record"))
            .replace("{out}", &format!("{dir}/out"))
            .replace("{dir}", &dir)
    }

    pub fn write_config(&self, rules: &str) {
        // Six lines before the rules, as tests that expect an error's line number assume.
        let text = format!(
            "[daemon]\ncontrol = \"{}\"\nshutdown_grace = \"5s\"\nstate_dir = \"{}\"\nfs_mount = \"{}\"\n\n{}",
            self.socket.display(),
            self.state_dir().display(),
            self.path("fs").display(),
            self.expand(rules)
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    fn spawn(&mut self) {
        // A restarted daemon appends to the same log, so a failure shows both lives.
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_triggerd"))
            .arg("--config")
            .arg(&self.config)
            .env("TRIGGERD_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn triggerd");
        self.child = Some(child);
        wait_for("the control socket", DEADLINE, || {
            self.assert_alive();
            self.try_status()
        });
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill");
    }

    pub fn assert_alive(&mut self) {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("triggerd exited with {status}; log:\n{}", self.log_text());
            }
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_status(&self) -> Option<Status> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        match runtime.block_on(triggerd::control::request(&self.socket, &Request::Status)) {
            Ok(Reply::Status(s)) => Some(*s),
            _ => None,
        }
    }

    pub fn status(&mut self) -> Status {
        self.assert_alive();
        self.try_status()
            .unwrap_or_else(|| panic!("no status; log:\n{}", self.log_text()))
    }

    /// Sends SIGUSR1 and waits until the daemon has counted the reload.
    pub fn reload(&mut self) -> Status {
        let before = self.status().reloads;
        self.signal(libc::SIGUSR1);
        wait_for("the reload", DEADLINE, || {
            self.try_status().filter(|s| s.reloads > before)
        })
    }

    /// Waits for the marks to be in place (no failing marks).
    pub fn wait_watching(&mut self) {
        wait_for("all marks", DEADLINE, || {
            self.try_status()
                .filter(|s| s.watch.failing_marks.is_empty())
        });
    }

    pub fn rule(&mut self, name: &str) -> triggerd::dispatch::RuleStatus {
        let status = self.status();
        status
            .rules
            .into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no rule {name}"))
    }

    /// `triggerctl --socket SOCKET ARGS`, run to its end (stdin empty).
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_triggerctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("triggerctl")
    }

    /// `triggerctl status --json`, parsed.
    pub fn ctl_status_json(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["status", "--json"])
            .output()
            .expect("triggerctl");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// A rule's (backend, state) as `triggerctl status --json` shows them.
    pub fn ctl_backend(&self, rule: &str) -> (String, String) {
        let status = self.ctl_status_json();
        let rules = status["rules"].as_array().cloned().unwrap_or_default();
        let r = rules
            .iter()
            .find(|r| r["name"] == rule)
            .unwrap_or_else(|| panic!("no rule {rule} in {status}"));
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
        (text(&r["backend"]), text(&r["state"]))
    }

    /// Stops the daemon with SIGTERM and returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        if !wait_exit(&mut child, DEADLINE) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "triggerd did not stop within {DEADLINE:?} of SIGTERM; log:\n{}",
                self.log_text()
            );
        }
        child.wait().ok()?.code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- triggerd log (last 60 lines) ---\n{}\n---",
                tail.join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let exited = wait_exit(&mut child, Duration::from_secs(10));
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // A daemon that died leaves its trigger filesystem mounted: detach it so the temp dir
        // can go.
        detach(&self.path("fs"));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    triggerd_testkit::wait_until(limit, || matches!(child.try_wait(), Ok(Some(_))))
}

/// Lazily unmounts whatever is mounted at `path` (nothing when it is not a mount point).
pub fn detach(path: &Path) {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; umount2 only reads it.
    unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
}

/// Temp dirs live on the root filesystem (not tmpfs) so filesystem marks see a real disk fs.
pub fn test_root() -> PathBuf {
    let root = PathBuf::from("/var/tmp/triggerd-tests");
    std::fs::create_dir_all(&root).expect("test root");
    root
}

/// `record OUTDIR ARGS...` writes one file per run holding its arguments, NUL-terminated.
fn write_recorder(path: &Path) {
    let script = "#!/bin/sh\nout=\"$1\"; shift\nf=$(mktemp \"$out/run.XXXXXXXX\")\nprintf '%s\\0' \"$@\" > \"$f.tmp\" && mv \"$f.tmp\" \"$f.rec\" && rm -f \"$f\"\n";
    let mut file = File::create(path).expect("recorder");
    file.write_all(script.as_bytes()).expect("recorder");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The paths each named rule ran for, when its action records `NAME PATH ...`.
pub fn runs_of(daemon: &Daemon, rule: &str) -> Vec<String> {
    records(&daemon.out())
        .into_iter()
        .filter(|r| r.first().is_some_and(|n| n == rule))
        .map(|r| r[1].to_string_lossy().into_owned())
        .collect()
}

/// The argument lists of every completed run recorded in `out`.
pub fn records(out: &Path) -> Vec<Vec<OsString>> {
    let mut runs = Vec::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return runs;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rec") {
            if let Ok(bytes) = std::fs::read(&path) {
                // Every argument ends with a NUL, so the last split piece is empty.
                let mut args: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
                args.pop();
                runs.push(
                    args.iter()
                        .map(|a| OsString::from_vec(a.to_vec()))
                        .collect(),
                );
            }
        }
    }
    runs
}

/// Waits until at least `n` runs are recorded in `out` and returns them.
pub fn wait_records(out: &Path, n: usize) -> Vec<Vec<OsString>> {
    wait_for(
        &format!("{n} recorded runs in {}", out.display()),
        DEADLINE,
        || {
            let r = records(out);
            (r.len() >= n).then_some(r)
        },
    )
}

/// Each run stores its stdin in `OUT/KIND.XXXX.in` and its batch variables beside it.
pub const SAVE_STDIN: &str = "f=$(mktemp \"$0/$1.XXXXXXXX\") && cat > \"$f.tmp\" && \
    printf '%s %s' \"$TRIGGERD_BATCH_COUNT\" \"${TRIGGERD_BATCH_OVERFLOW:-0}\" > \"$f.vars\" && \
    mv \"$f.tmp\" \"$f.in\" && rm -f \"$f\"";

/// Every saved run of `kind`: (its stdin, `COUNT OVERFLOW`).
pub fn saved_runs(out: &Path, kind: &str) -> Vec<(Vec<u8>, String)> {
    let mut runs = Vec::new();
    for entry in fs::read_dir(out).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{kind}.")) && name.ends_with(".in") {
            let input = fs::read(entry.path()).unwrap();
            let vars = entry.path().with_extension("vars");
            runs.push((input, fs::read_to_string(vars).unwrap_or_default()));
        }
    }
    runs
}

pub fn paths0(input: &[u8]) -> Vec<OsString> {
    let mut paths: Vec<OsString> = input
        .split(|b| *b == 0)
        .map(|p| OsString::from_vec(p.to_vec()))
        .collect();
    assert_eq!(
        paths.pop(),
        Some(OsString::new()),
        "every path ends with NUL"
    );
    paths
}

/// VmRSS of `pid`, in bytes.
pub fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}
