//! The webhook source end to end: curl POSTs a binary body and the action gets exactly those
//! bytes on stdin; a wrong path, a wrong method and an oversized body are refused with 404,
//! 405 and 413 and reach no rule.

use std::fs;
use std::net::TcpListener;
use std::process::Command;

use crate::common::{wait_for, Daemon, DEADLINE};
use crate::stamp::{self, wait_runs};

/// A port that was free a moment ago (the daemon's bind may still lose a race: retried).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts a daemon whose `{port}` is a free port, retrying while another process takes it.
fn start_listening(rules: &str) -> (Daemon, u16) {
    for _ in 0..10 {
        let port = free_port();
        let daemon = stamp::start(&rules.replace("{port}", &port.to_string()));
        // Listeners are bound before the daemon answers on its control socket.
        if !daemon.log_text().contains("webhook cannot listen") {
            return (daemon, port);
        }
    }
    panic!("no free port for the webhook after 10 tries");
}

/// `curl` with extra arguments; returns the HTTP status it got.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
        ])
        .args(args)
        .output()
        .expect("curl (Debian package `curl`)");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn curl_post_reaches_the_action_with_the_exact_body() {
    let (mut daemon, port) = start_listening(
        "[[webhook]]\nname = \"deploy\"\nlisten = \"127.0.0.1:{port}\"\npath = \"/hooks/deploy\"\nmax_body = 4096\n\
         exec = [\"{stamp}\", \"{out}\"]\n",
    );
    // Every byte value, NULs and line ends included.
    let body: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = daemon.path("body.bin");
    fs::write(&file, &body).unwrap();
    let big = daemon.path("big.bin");
    fs::write(&big, vec![b'x'; 200_000]).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let data = format!("@{}", file.display());
    let big_data = format!("@{}", big.display());

    let hook = format!("{base}/hooks/deploy");
    assert_eq!(curl(&["-X", "POST", "--data-binary", &data, &hook]), "202");
    assert_eq!(
        curl(&[
            "-X",
            "POST",
            "--data-binary",
            &data,
            &format!("{base}/hooks/other")
        ]),
        "404"
    );
    assert_eq!(curl(&[&hook]), "405");
    assert_eq!(
        curl(&["-X", "POST", "--data-binary", &big_data, &hook]),
        "413"
    );

    let run = wait_runs(&daemon.out(), 1);
    assert_eq!(
        run[0].body, body,
        "the action's stdin differs from the POSTed body"
    );
    assert_eq!(
        (
            run[0].source.as_str(),
            run[0].rule.as_str(),
            run[0].path.as_str()
        ),
        ("webhook", "deploy", "/hooks/deploy")
    );
    let rule = wait_for("the run to finish", DEADLINE, || {
        let r = daemon.rule("deploy");
        (r.running == 0).then_some(r)
    });
    assert_eq!(
        (rule.matched, rule.fired, rule.failed),
        (1, 1, 0),
        "{rule:?}"
    );
    assert_eq!(stamp::runs(&daemon.out()).len(), 1);
}

#[test]
fn large_body_is_asked_for_with_100_continue() {
    let (mut daemon, port) = start_listening(
        "[[webhook]]\nname = \"upload\"\nlisten = \"127.0.0.1:{port}\"\npath = \"/up\"\nmax_body = 4194304\n\
         exec = [\"{stamp}\", \"{out}\"]\n",
    );
    // Over 1 MiB, curl sends `Expect: 100-continue` and, told to wait a minute for the
    // answer, fails its 20 s limit unless the daemon says continue.
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = daemon.path("upload.bin");
    fs::write(&file, &body).unwrap();
    let status = curl(&[
        "--expect100-timeout",
        "60",
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://127.0.0.1:{port}/up"),
    ]);
    assert_eq!(status, "202");
    let run = wait_runs(&daemon.out(), 1);
    assert!(run[0].body == body, "the 2 MB body arrived altered");
    wait_for("the run to finish", DEADLINE, || {
        (daemon.rule("upload").running == 0).then_some(())
    });
}

/// Sockets the process holds (listeners, control socket, accepted connections).
fn open_sockets(pid: i32) -> usize {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[test]
fn idle_connections_hold_a_bounded_number_of_descriptors() {
    let (mut daemon, port) = start_listening(
        "[[webhook]]\nname = \"idle\"\nlisten = \"127.0.0.1:{port}\"\npath = \"/\"\nexec = [\"/bin/true\"]\n",
    );
    let base = open_sockets(daemon.pid());
    // 300 peers that connect and send nothing: at most 256 are served at once, the others
    // wait in the kernel's backlog.
    let idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // `base` may include a control connection of the harness that has closed since.
    wait_for("the daemon to serve 256 of them", DEADLINE, || {
        (open_sockets(daemon.pid()) + 2 >= base + 256).then_some(())
    });
    // The control socket still answers; by then every connection that could be accepted was.
    daemon.status();
    let held = open_sockets(daemon.pid());
    assert!(held <= base + 256 + 2, "{held} sockets with {base} before");
    drop(idle);
    assert_eq!(daemon.rule("idle").matched, 0);
}
