//! The syslog source end to end: logger(1) in both formats reaches the action with the
//! message on stdin and the header as `TRIGGERD_FIELD_*` (the sender's uid from the kernel);
//! nginx's `access_log syslog:server=unix:…` delivers one run per answered request; an action
//! that logs to its own socket is caught by loop prevention through the kernel-reported pid
//! (the action itself sends, so it is recognized even once it has exited);
//! a UDP socket takes RFC 5424 from logger; a path that is not a socket is never replaced.

use std::fs;
use std::net::TcpListener;
use std::process::Command;

use crate::common::{wait_for, DEADLINE};
use crate::stamp::{self, wait_runs};
use triggerd_testkit::StopOnDrop;

/// Records the fields a run saw, then its stdin, as `NAME.fields` and `NAME.body`.
const FIELDS: &str = r#"#!/bin/sh
f=$(mktemp "$1/run.XXXXXXXX")
printf '%s|%s|%s|%s|%s' "$TRIGGERD_FIELD_FACILITY" "$TRIGGERD_FIELD_SEVERITY" "$TRIGGERD_FIELD_TAG" "$TRIGGERD_FIELD_SENDER_UID" "$TRIGGERD_SOURCE" > "$f.fields"
cat > "$f.body"
mv "$f" "$f.done"
"#;

fn logger(args: &[&str]) {
    let status = Command::new("logger")
        .args(args)
        .status()
        .expect("logger (Debian package bsdutils)");
    assert!(status.success(), "logger {args:?}");
}

/// `(fields, body)` of every completed run recorded by `FIELDS` in `out`.
fn field_runs(out: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "done"))
        .filter_map(|e| {
            // `run.XXXXXXXX.done`: the base name itself has a dot.
            let done = e.path().to_string_lossy().into_owned();
            let base = done.strip_suffix(".done")?;
            let fields = fs::read_to_string(format!("{base}.fields")).ok()?;
            let body = fs::read(format!("{base}.body")).ok()?;
            Some((fields, body))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn logger_in_both_formats_reaches_the_action_with_its_fields() {
    let daemon = stamp::start(
        "[[syslog]]\nname = \"log\"\nsocket = \"{dir}/log.sock\"\nmode = \"0620\"\n\
         exec = [\"{dir}/fields\", \"{out}\"]\n",
    );
    fs::write(daemon.path("fields"), FIELDS).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(daemon.path("fields"), fs::Permissions::from_mode(0o755)).unwrap();
    let socket = daemon.path("log.sock");
    let meta =
        fs::symlink_metadata(&socket).expect("the socket file exists once the daemon answers");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o620);

    let sock = socket.to_str().unwrap();
    logger(&[
        "-u",
        sock,
        "--rfc3164",
        "-t",
        "web",
        "-p",
        "local7.info",
        "first message",
    ]);
    logger(&[
        "-u",
        sock,
        "--rfc5424",
        "-t",
        "app",
        "-p",
        "user.err",
        "second; with \"quotes\"",
    ]);
    let runs = wait_for("two syslog runs", DEADLINE, || {
        let r = field_runs(&daemon.out());
        (r.len() >= 2).then_some(r)
    });
    let uid = nix::unistd::geteuid().as_raw();
    let mut expected = vec![
        (
            format!("local7|info|web|{uid}|syslog"),
            b"first message".to_vec(),
        ),
        (
            format!("user|err|app|{uid}|syslog"),
            b"second; with \"quotes\"".to_vec(),
        ),
    ];
    expected.sort();
    assert_eq!(runs, expected);
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx on a free port (retried if another process takes it first) with `access_log`; stopped
/// with SIGTERM on drop, so that its master ends its workers (a SIGKILL would orphan them).
fn start_nginx(dir: &std::path::Path, access_log: &str) -> (StopOnDrop, u16) {
    for _ in 0..10 {
        let port = free_port();
        let conf = dir.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "daemon off;\nworker_processes 1;\nuser www-data;\npid {dir}/nginx.pid;\n\
                 error_log {dir}/nginx-error.log;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log {access_log};\n  client_body_temp_path {dir}/body;\n\
                 proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n\
                 uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
                 server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let mut nginx = StopOnDrop(
            Command::new("nginx")
                .arg("-c")
                .arg(&conf)
                .spawn()
                .expect("nginx (Debian package nginx)"),
        );
        let up = wait_for("nginx to answer or exit", DEADLINE, || {
            if let Ok(Some(_)) = nginx.0.try_wait() {
                return Some(false);
            }
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(true)
        });
        if up {
            return (nginx, port);
        }
    }
    panic!("nginx found no free port in 10 tries");
}

#[test]
fn nginx_access_log_over_syslog_is_one_run_per_request() {
    let daemon = stamp::start(
        "[[syslog]]\nname = \"access\"\nsocket = \"{dir}/log.sock\"\nmax_running = 8\n\
         exec = [\"{stamp}\", \"{out}\"]\n",
    );
    let directive = format!(
        "syslog:server=unix:{},nohostname,tag=nginx",
        daemon.path("log.sock").display()
    );
    let (_nginx, port) = start_nginx(daemon.dir.path(), &directive);
    const REQUESTS: usize = 40;
    for i in 0..REQUESTS {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                &format!("http://127.0.0.1:{port}/r{i}"),
            ])
            .output()
            .expect("curl");
        assert_eq!(out.stdout, b"ok\n", "request {i}");
    }
    let runs = wait_runs(&daemon.out(), REQUESTS);
    assert_eq!(runs.len(), REQUESTS);
    let mut seen: Vec<usize> = runs
        .iter()
        .map(|r| {
            let line = String::from_utf8_lossy(&r.body).into_owned();
            assert!(line.contains("\"GET /r"), "an access log line: {line:?}");
            let n = line.split("GET /r").nth(1).unwrap();
            n.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..REQUESTS).collect::<Vec<_>>(), "each request once");
    let error_log = fs::read_to_string(daemon.path("nginx-error.log")).unwrap_or_default();
    assert!(!error_log.contains("send() failed"), "nginx: {error_log}");
}

#[test]
fn an_action_logging_to_its_own_socket_does_not_loop() {
    let mut daemon = stamp::start(
        "[[syslog]]\nname = \"echo\"\nsocket = \"{dir}/log.sock\"\n\
         exec = [\"/bin/sh\", \"-c\", \"mkdir -p \\\"$1\\\"; : > \\\"$1/$TRIGGERD_ID\\\"; exec logger -u \\\"$2\\\" -t again logged-by-the-action\", \"sh\", \"{out}\", \"{dir}/log.sock\"]\n",
    );
    logger(&[
        "-u",
        daemon.path("log.sock").to_str().unwrap(),
        "-t",
        "outside",
        "once",
    ]);
    let rule = wait_for("the action's own message suppressed", DEADLINE, || {
        let r = daemon.rule("echo");
        (r.loops_suppressed >= 1).then_some(r)
    });
    assert_eq!(rule.fired, 1, "{rule:?}");
    assert_eq!(fs::read_dir(daemon.out()).unwrap().count(), 1);
}

#[test]
fn rfc5424_over_udp() {
    for _ in 0..10 {
        let port = free_port();
        let daemon = stamp::start(&format!(
            "[[syslog]]\nname = \"udp\"\nlisten = \"127.0.0.1:{port}\"\nbuffer = 1048576\n\
             exec = [\"{{stamp}}\", \"{{out}}\"]\n"
        ));
        if daemon.log_text().contains("syslog cannot listen") {
            continue;
        }
        logger(&[
            "-d",
            "-n",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "--rfc5424",
            "-t",
            "app",
            "over udp",
        ]);
        let runs = wait_runs(&daemon.out(), 1);
        assert_eq!(runs[0].body, b"over udp");
        assert_eq!(runs[0].path, format!("udp://127.0.0.1:{port}"));
        return;
    }
    panic!("no free UDP port in 10 tries");
}

#[test]
fn a_path_that_is_not_a_socket_is_left_alone_and_reported() {
    let mut daemon = stamp::create(
        "[[syslog]]\nname = \"log\"\nsocket = \"{dir}/not-a-socket\"\nexec = [\"/bin/true\"]\n",
    );
    fs::write(daemon.path("not-a-socket"), b"precious").unwrap();
    daemon.launch();
    let status = daemon.ctl_status_json();
    let state = status["rules"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(state.contains("not a socket"), "{status}");
    assert_eq!(fs::read(daemon.path("not-a-socket")).unwrap(), b"precious");
}
