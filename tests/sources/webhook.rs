//! The webhook source end to end: curl POSTs a binary body and the action gets exactly those
//! bytes on stdin; a wrong path, a wrong method and an oversized body are refused with 404,
//! 405 and 413 and reach no rule. Hostile callers: one peer holding 300 idle connections does
//! not keep another peer's POST from its 202, a stalled head is cut off, a missing or wrong
//! signature is refused with 401 and fires nothing, and a secret others can read or a
//! non-loopback address without `allow_remote` is a config error.

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
        "[[webhook]]\nname = \"idle\"\nlisten = \"127.0.0.1:{port}\"\npath = \"/\"\nper_peer = 300\nexec = [\"/bin/true\"]\n",
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

/// The counters of the listener on `port`.
fn status_of(daemon: &mut Daemon, port: u16) -> triggerd::sources::webhook::WebhookStatus {
    daemon
        .status()
        .webhooks
        .get(&format!("127.0.0.1:{port}"))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn one_peer_holding_300_idle_connections_does_not_starve_another() {
    // Connections the daemon accepted stay held for ten minutes: only the per-peer limit can
    // let the honest caller in.
    let (mut daemon, port) = start_listening(
        "[[webhook]]\nname = \"hook\"\nlisten = \"127.0.0.1:{port}\"\npath = \"/\"\nheader_timeout = \"10m\"\n\
         exec = [\"{stamp}\", \"{out}\"]\n",
    );
    let attacker: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    wait_for(
        "every attacking connection to be accepted",
        DEADLINE,
        || (status_of(&mut daemon, port).accepted >= 300).then_some(()),
    );
    let honest = curl(&[
        "--interface",
        "127.0.0.2",
        "-X",
        "POST",
        "--data-binary",
        "honest",
        &format!("http://127.0.0.1:{port}/"),
    ]);
    assert_eq!(honest, "202", "log:\n{}", daemon.log_text());
    let run = wait_runs(&daemon.out(), 1);
    assert_eq!(run[0].body, b"honest");
    let counted = status_of(&mut daemon, port);
    assert_eq!(
        (counted.per_peer_refused, counted.timed_out),
        (300 - 16, 0),
        "{counted:?}"
    );
    drop(attacker);
    daemon.assert_alive();
}

#[test]
fn a_stalled_head_is_cut_off_and_others_are_served() {
    use std::io::{Read, Write};
    let (mut daemon, port) = start_listening(
        "[[webhook]]\nname = \"hook\"\nlisten = \"127.0.0.1:{port}\"\npath = \"/\"\nheader_timeout = \"1s\"\n\
         exec = [\"{stamp}\", \"{out}\"]\n",
    );
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    // A bound on the test, not on the daemon: the read returns once the daemon gives up.
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert_eq!(status_of(&mut daemon, port).timed_out, 1);
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(curl(&["-X", "POST", "--data-binary", "after", &url]), "202");
    assert_eq!(wait_runs(&daemon.out(), 1)[0].body, b"after");
}

/// `sha256=HEX` of the body's HMAC-SHA256 under `key`, as GitHub sends it.
fn signature(key: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[test]
fn only_a_correctly_signed_body_fires() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook.secret");
    fs::write(&secret, "It's a Secret to Everybody\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let (mut daemon, port) = start_listening(&format!(
        "[[webhook]]\nname = \"signed\"\nlisten = \"127.0.0.1:{{port}}\"\npath = \"/\"\nsecret = \"{}\"\n\
         exec = [\"{{stamp}}\", \"{{out}}\"]\n",
        secret.display()
    ));
    let url = format!("http://127.0.0.1:{port}/");
    let post = |body: &str, header: Option<String>| {
        let mut args = vec![
            "-X".to_string(),
            "POST".into(),
            "--data-binary".into(),
            body.into(),
        ];
        if let Some(h) = header {
            args.extend(["-H".to_string(), format!("X-Hub-Signature-256: {h}")]);
        }
        args.push(url.clone());
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let key = b"It's a Secret to Everybody";
    assert_eq!(post("unsigned", None), "401");
    assert_eq!(post("forged", Some(signature(b"guess", b"forged"))), "401");
    assert_eq!(post("moved", Some(signature(key, b"other body"))), "401");
    assert_eq!(post("signed", Some(signature(key, b"signed"))), "202");
    let run = wait_runs(&daemon.out(), 1);
    assert_eq!(run[0].body, b"signed");
    let rule = wait_for("the run to finish", DEADLINE, || {
        let r = daemon.rule("signed");
        (r.running == 0).then_some(r)
    });
    assert_eq!(
        (rule.matched, rule.fired, rule.refused),
        (1, 1, 3),
        "{rule:?}"
    );
    assert_eq!(status_of(&mut daemon, port).unauthorized, 3);
    assert_eq!(stamp::runs(&daemon.out()).len(), 1);
}

#[test]
fn a_secret_others_can_read_is_a_config_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook.secret");
    fs::write(&secret, "key\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("triggerd.conf");
    fs::write(
        &config,
        format!(
            "[[webhook]]\nlisten = \"127.0.0.1:8787\"\nsecret = \"{}\"\nexec = [\"/bin/true\"]\n",
            secret.display()
        ),
    )
    .unwrap();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_triggerd"))
            .arg("check")
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3: [[webhook]]: secret:", config.display()))
            && stderr.contains("chmod 600"),
        "{stderr}"
    );
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triggerd"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
