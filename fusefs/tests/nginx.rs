//! Real nginx (Debian package, workers as www-data) logging into a trigger file with
//! `split = "line"`: N requests give exactly N line messages, across `nginx -s reopen` in the
//! middle of the load, unbuffered and with `buffer=64k`.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{spec, wait_until, Mounted};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use triggerd_fusefs::Split;

const NGINX: &str = "/usr/sbin/nginx";
const WWW_DATA_UID: u32 = 33;

/// An nginx master (own process group) with its config in a temp dir, serving on a Unix
/// socket there (no port to pick, so nothing to collide with); stopped on drop.
struct Nginx {
    child: Child,
    conf: PathBuf,
    prefix: PathBuf,
    socket: PathBuf,
}

impl Nginx {
    fn start(prefix: &Path, access_log: &str) -> Nginx {
        let conf = prefix.join("nginx.conf");
        let socket = prefix.join("http.sock");
        let p = prefix.display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 2;\nuser www-data;\n\
                 pid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
                 events {{ worker_connections 512; }}\n\
                 http {{\n  access_log {access_log};\n\
                 client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
                 fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi;\n\
                 scgi_temp_path {p}/scgi;\n\
                 server {{ listen unix:{socket}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
                socket = socket.display()
            ),
        )
        .expect("write nginx.conf");
        let child = Command::new(NGINX)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(prefix)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx {
            child,
            conf,
            prefix: prefix.to_path_buf(),
            socket,
        };
        let up = wait_until(Duration::from_secs(10), || {
            UnixStream::connect(&nginx.socket).is_ok()
                || nginx.child.try_wait().ok().flatten().is_some()
        });
        let running = nginx.child.try_wait().ok().flatten().is_none();
        assert!(up && running, "nginx did not start");
        nginx
    }

    fn signal(&self, verb: &str) {
        let status = Command::new(NGINX)
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .arg(&self.prefix)
            .arg("-e")
            .arg(self.prefix.join("error.log"))
            .args(["-s", verb])
            .status()
            .expect("nginx -s");
        assert!(status.success(), "nginx -s {verb}: {status}");
    }

    /// `nginx -s quit` and wait for the master to exit (workers flush their buffers).
    fn quit(&mut self) {
        self.signal("quit");
        let child = &mut self.child;
        let exited = wait_until(Duration::from_secs(20), || {
            child.try_wait().ok().flatten().is_some()
        });
        assert!(exited, "nginx did not quit");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default();
            eprintln!("nginx error.log:\n{log}");
        }
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGQUIT);
        let child = &mut self.child;
        if !wait_until(Duration::from_secs(5), || {
            child.try_wait().ok().flatten().is_some()
        }) {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn get(socket: &Path, path: &str) {
    let mut s = UnixStream::connect(socket).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("recv");
    assert!(resp.starts_with(b"HTTP/1.1 200"), "response {resp:?}");
}

/// Sends requests /r0../r{n-1} from 4 client threads; calls `middle` (from this thread) once a
/// third and once two thirds of them are done.
fn load(socket: &Path, n: usize, middle: impl Fn()) {
    let done = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    // A client that fails stops the wait below at once (its panic is what the test reports).
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let result = std::panic::catch_unwind(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    get(socket, &format!("/r{i}"));
                    done.fetch_add(1, Ordering::Relaxed);
                });
                if let Err(panic) = result {
                    failed.store(true, Ordering::Relaxed);
                    std::panic::resume_unwind(panic);
                }
            });
        }
        for fraction in [3, 2] {
            let target = n * (4 - fraction) / 3;
            assert!(wait_until(Duration::from_secs(60), || failed
                .load(Ordering::Relaxed)
                || done.load(Ordering::Relaxed) >= target.min(n - 1)));
            assert!(!failed.load(Ordering::Relaxed), "a client failed");
            middle();
        }
    });
}

/// Takes n messages and checks they are exactly the log lines of /r0../r{n-1}, once each,
/// written by nginx's unprivileged workers.
fn check_lines(m: &Mounted, n: usize) {
    let msgs = m.sink.take(n, Duration::from_secs(60));
    let mut ids = HashSet::new();
    for msg in &msgs {
        let line = std::str::from_utf8(&msg.payload).expect("utf8 log line");
        assert!(!line.contains('\n'), "one line per message: {line:?}");
        let id = line
            .split("\"GET /r")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("not a request line: {line:?}"));
        assert!(ids.insert(id), "line twice: {line:?}");
        assert_eq!(msg.uid, WWW_DATA_UID, "written by a worker");
        assert_eq!(&*msg.trigger, "nginx/access");
    }
    assert_eq!(ids.len(), n);
    assert!(ids.iter().all(|&id| id < n));
    assert!(
        m.sink.recv(Duration::from_millis(200)).is_none(),
        "no extra line"
    );
    let stats = m.fs().stats();
    assert_eq!(stats[0].drops, 0);
}

/// On reopen nginx's master chowns the log to the worker user: proof that it reopened.
fn assert_reopened(m: &Mounted) {
    use std::os::unix::fs::MetadataExt;
    let owner = || std::fs::metadata(m.path("nginx/access")).map(|meta| meta.uid());
    assert!(
        wait_until(Duration::from_secs(10), || owner().ok()
            == Some(WWW_DATA_UID)),
        "nginx reopened the log"
    );
}

fn setup() -> (Mounted, tempfile::TempDir) {
    let m = Mounted::new(vec![spec("nginx/access", Split::Line)]);
    // Workers run as www-data: they must reach the mount inside the temp dir.
    std::fs::set_permissions(m.dir.path(), PermissionsExt::from_mode(0o755)).expect("chmod");
    let prefix = tempfile::tempdir().expect("nginx prefix");
    (m, prefix)
}

#[test]
fn nginx_unbuffered_access_log_loses_no_line_across_reopen() {
    const N: usize = 3000;
    let (m, prefix) = setup();
    let log = m.path("nginx/access");
    let nginx = Nginx::start(prefix.path(), &log.display().to_string());
    let started = Instant::now();
    load(&nginx.socket, N, || nginx.signal("reopen"));
    assert_reopened(&m);
    check_lines(&m, N);
    eprintln!("{N} requests, lines checked, in {:?}", started.elapsed());
    drop(nginx);
}

#[test]
fn nginx_buffered_access_log_gives_every_line_after_flush() {
    const N: usize = 3000;
    let (m, prefix) = setup();
    let log = format!("{} combined buffer=64k", m.path("nginx/access").display());
    let mut nginx = Nginx::start(prefix.path(), &log);
    load(&nginx.socket, N, || nginx.signal("reopen"));
    assert_reopened(&m);
    nginx.quit();
    check_lines(&m, N);
}
