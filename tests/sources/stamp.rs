//! What the source tests share: a `stamp` action that records each run (its start time, the
//! event's scheduled time, source and rule, and its stdin byte for byte), the real
//! `triggerctl`, and control requests sent in-process when many must go out at once.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::{wait_for, Daemon, DEADLINE};
use triggerd::control::{Reply, Request};

/// `{stamp} OUTDIR`: one `run.*.rec` per run with its fields NUL-separated, and its stdin in
/// the matching `.body` (written first, so a `.rec` always has its body).
const STAMP: &str = r#"#!/bin/sh
out="$1"
start=$(date +%s.%N)
mkdir -p "$out"
f=$(mktemp "$out/run.XXXXXXXX")
cat > "$f.body"
printf '%s\0' "$start" "$TRIGGERD_TIME" "$TRIGGERD_SOURCE" "$TRIGGERD_RULE" "$TRIGGERD_PATH" > "$f.tmp"
mv "$f.tmp" "$f.rec"
rm -f "$f"
"#;

/// One recorded run.
#[derive(Debug, Clone)]
pub struct Run {
    /// When the action started, Unix seconds.
    pub start: f64,
    /// `TRIGGERD_TIME` as written (the scheduled instant for timers).
    pub time: String,
    pub source: String,
    pub rule: String,
    pub path: String,
    pub body: Vec<u8>,
}

impl Run {
    pub fn scheduled(&self) -> f64 {
        self.time.parse().unwrap_or(f64::NAN)
    }
}

/// Creates the daemon on `rules` (`{stamp}` is the stamp script), writes the stamp script,
/// then starts the process.
pub fn start(rules: &str) -> Daemon {
    let mut daemon = create(rules);
    daemon.launch();
    daemon
}

/// Like `start`, without starting the process (the test prepares the state dir first).
pub fn create(rules: &str) -> Daemon {
    let daemon = Daemon::create(&with_stamp(rules));
    let path = daemon.path("stamp");
    fs::write(&path, STAMP).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    daemon
}

/// Replaces `{stamp}` (the harness expands `{dir}`, `{out}`, `{record}`).
pub fn with_stamp(rules: &str) -> String {
    rules.replace("{stamp}", "{dir}/stamp")
}

/// Completed runs recorded in `out`, by start time.
pub fn runs(out: &Path) -> Vec<Run> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(out) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rec") {
            continue;
        }
        let (Ok(rec), Ok(body)) = (fs::read(&path), fs::read(path.with_extension("body"))) else {
            continue;
        };
        let fields: Vec<String> = rec
            .split(|b| *b == 0)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        let [start, time, source, rule, subject, ..] = fields.as_slice() else {
            panic!("malformed record {}: {fields:?}", path.display());
        };
        found.push(Run {
            start: start.parse().unwrap_or(f64::NAN),
            time: time.clone(),
            source: source.clone(),
            rule: rule.clone(),
            path: subject.clone(),
            body,
        });
    }
    found.sort_by(|a, b| a.start.total_cmp(&b.start));
    found
}

/// Waits until at least `n` runs are recorded in `out`.
pub fn wait_runs(out: &Path, n: usize) -> Vec<Run> {
    wait_for(&format!("{n} runs in {}", out.display()), DEADLINE, || {
        let r = runs(out);
        (r.len() >= n).then_some(r)
    })
}

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The output of the real `triggerctl` on the daemon's socket.
pub struct Ctl {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn triggerctl(daemon: &Daemon, args: &[&str]) -> Ctl {
    let out = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .output()
        .expect("run triggerctl");
    Ctl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `triggerctl` and insists it succeeded; returns its stdout.
pub fn ctl_ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = triggerctl(daemon, args);
    assert_eq!(
        out.code,
        Some(0),
        "triggerctl {args:?}: {}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Sends `fire RULE DATA` for each payload over one connection per request, as fast as the
/// daemon answers (no process start per request, unlike `triggerctl`).
pub fn fire_all(daemon: &Daemon, rule: &str, payloads: &[&str]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for data in payloads {
        let request = Request::Fire {
            rule: rule.into(),
            data: Some((*data).into()),
        };
        let reply = runtime
            .block_on(triggerd::control::request(&daemon.socket, &request))
            .expect("control request");
        assert_eq!(reply, Reply::Done("fired".into()));
    }
}
