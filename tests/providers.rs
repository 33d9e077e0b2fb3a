//! Event sources written in any language, through real provider processes: the shipped
//! `interval` provider fires with its payload and fields, follows pause/resume and a reload
//! through `remove`/`add`, and its own `validate` refuses a too-short interval in `triggerd
//! check` with the line; a provider killed with SIGKILL is restarted and fires again; providers
//! that write garbage, a 100 MiB line or never answer are contained while the others keep
//! firing; the shipped `http-poll` provider fires once per content change, and not again after
//! a restart of triggerd.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{wait_for, Daemon, KillOnDrop, DEADLINE};
use triggerd::sources::provider::ProviderStatus;

/// A provider shipped in `etc/providers/`.
fn shipped(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../etc/providers")
        .join(name)
        .display()
        .to_string()
}

fn interval_provider(min_every: &str) -> String {
    format!(
        "[[provider]]\nname = \"interval\"\nexec = [\"{}\"]\nconfig = {{ min_every = \"{min_every}\" }}\n\n",
        shipped("interval")
    )
}

/// A `[[source]]` rule appending `payload|${count}|$TRIGGERD_FIELD_EVERY` to `{out}/NAME`.
fn ticking(name: &str, provider: &str, params: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\nprovider = \"{provider}\"\nparams = {params}\n\
         exec = [\"/bin/sh\", \"-c\", \"printf '%s|%s|%s\\\\n' \\\"$(cat)\\\" \\\"$1\\\" \\\"$TRIGGERD_FIELD_EVERY\\\" >> {{out}}/{name}\", \"sh\", \"${{count}}\"]\n\n"
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn provider(daemon: &mut Daemon, name: &str) -> ProviderStatus {
    daemon
        .status()
        .providers
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no provider {name}; log:\n{}", daemon.log_text()))
}

fn wait_matched(daemon: &mut Daemon, rule: &str, more_than: u64) -> u64 {
    wait_for(&format!("{rule} matched > {more_than}"), DEADLINE, || {
        let m = daemon.rule(rule).matched;
        (m > more_than).then_some(m)
    })
}

#[test]
fn the_interval_provider_fires_and_follows_pause_resume_and_reload() {
    let rules = |every: &str| {
        format!(
            "{}{}{}",
            interval_provider("100ms"),
            ticking("tick", "interval", &format!("{{ every = \"{every}\" }}")),
            ticking("other", "interval", "{ every = \"100ms\" }")
        )
    };
    let mut daemon = Daemon::start(&rules("200ms"));
    let out = daemon.out().join("tick");
    let ticks = wait_for("three ticks", DEADLINE, || {
        let l = lines(&out);
        (l.len() >= 3).then_some(l)
    });
    // Payload on stdin, the count field as a token, the every field in the environment.
    assert_eq!(
        ticks[..3],
        ["tick 1|1|200ms", "tick 2|2|200ms", "tick 3|3|200ms"]
    );
    let p = provider(&mut daemon, "interval");
    assert_eq!((p.state.as_str(), p.rules, p.active), ("running", 2, 2));
    let listed = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_triggerctl"));
        c.arg("--socket").arg(&daemon.socket).arg("providers");
        if json {
            c.arg("--json");
        }
        String::from_utf8(c.output().expect("triggerctl").stdout).expect("utf8")
    };
    let table = listed(false);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.starts_with("PROVIDER  STATE"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("interval  running")),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&listed(true)).expect("json");
    assert_eq!(json["interval"]["rules"], 2, "{json}");

    // Pause: the provider is told to remove the rule; `other` keeps ticking meanwhile.
    let ctl = |daemon: &Daemon, verb: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
            .arg("--socket")
            .arg(&daemon.socket)
            .args([verb, "tick"])
            .output()
            .expect("triggerctl");
        assert!(out.status.success(), "{out:?}");
    };
    ctl(&daemon, "pause");
    wait_for("the rule removed", DEADLINE, || {
        (provider(&mut daemon, "interval").active == 1).then_some(())
    });
    let paused_at = daemon.rule("tick").matched;
    let other = daemon.rule("other").matched;
    wait_matched(&mut daemon, "other", other + 3);
    assert_eq!(
        daemon.rule("tick").matched,
        paused_at,
        "a removed rule fired"
    );

    ctl(&daemon, "resume");
    wait_matched(&mut daemon, "tick", paused_at);

    // A reload that changes `every` removes and adds the rule with the new params.
    daemon.write_config(&rules("300ms"));
    let status = daemon.reload();
    assert_eq!(status.reload_error, None);
    wait_for("a tick with the new params", DEADLINE, || {
        lines(&out)
            .iter()
            .any(|l| l.ends_with("|300ms"))
            .then_some(())
    });
    let p = provider(&mut daemon, "interval");
    assert_eq!(
        (p.restarts, p.active),
        (0, 2),
        "params alone do not restart it"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn the_providers_validate_refuses_a_rule_in_check_and_reload_with_its_line() {
    let good = format!(
        "{}{}",
        interval_provider("100ms"),
        ticking("tick", "interval", "{ every = \"100ms\" }")
    );
    let mut daemon = Daemon::start(&good);
    wait_matched(&mut daemon, "tick", 0);
    // The [[source]] table starts on line 13 of the file (6 lines of [daemon] first).
    let bad = format!(
        "{}{}",
        interval_provider("100ms"),
        ticking("tick", "interval", "{ every = \"10ms\" }")
    );
    daemon.write_config(&bad);
    let check = Command::new(env!("CARGO_BIN_EXE_triggerd"))
        .arg("check")
        .arg(&daemon.config)
        .output()
        .expect("triggerd check");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "{}:12: [[source]]: params: every: 10ms is below this provider's minimum (0.1s)",
        daemon.config.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    let status = daemon.reload();
    let refused = status.reload_error.expect("reload refused");
    assert!(
        refused.contains("below this provider's minimum"),
        "{refused}"
    );
    // The running config keeps firing.
    let before = daemon.rule("tick").matched;
    wait_matched(&mut daemon, "tick", before);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_killed_provider_is_restarted_and_fires_again() {
    let mut daemon = Daemon::start(&format!(
        "{}{}",
        interval_provider("100ms"),
        ticking("tick", "interval", "{ every = \"100ms\" }")
    ));
    wait_matched(&mut daemon, "tick", 0);
    let first = provider(&mut daemon, "interval").pid.expect("pid");
    // SAFETY: kill(2) on the provider's pid.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    let restarted = wait_for("a new provider process", DEADLINE, || {
        let p = provider(&mut daemon, "interval");
        (p.state == "running" && p.pid.is_some_and(|pid| pid != first)).then_some(p)
    });
    assert_eq!(restarted.restarts, 1);
    let before = daemon.rule("tick").matched;
    wait_matched(&mut daemon, "tick", before);
    assert!(daemon.log_text().contains("killed by signal 9"));
    assert_eq!(daemon.stop(), Some(0));
}

/// A provider script in the test's directory.
fn script(daemon: &Daemon, name: &str, body: &str) -> PathBuf {
    let path = daemon.path(name);
    let mut f = std::fs::File::create(&path).expect("script");
    f.write_all(body.as_bytes()).expect("script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn hostile_providers_are_contained_and_the_others_keep_firing() {
    let mut daemon = Daemon::create("");
    // Answers init and validate; on `add` writes garbage, a fire for a rule it does not serve,
    // a 100 MiB line and one good fire.
    let noisy = script(
        &daemon,
        "noisy",
        "#!/bin/sh\nwhile read -r line; do case \"$line\" in\n\
         *'\"init\"'*) echo '{\"type\":\"ready\",\"version\":1}' ;;\n\
         *'\"validate\"'*) echo '{\"type\":\"valid\",\"rule\":\"noise\"}' ;;\n\
         *'\"add\"'*) echo 'garbage'; echo '{\"type\":\"fire\",\"rule\":\"tick\"}'\n\
         head -c 104857600 /dev/zero | tr '\\0' x; echo\n\
         echo '{\"type\":\"fire\",\"rule\":\"noise\",\"payload\":\"survived\"}' ;;\n\
         esac; done\n",
    );
    let config = |with_silent: bool| {
        let mut c = format!(
            "{}{}[[provider]]\nname = \"noisy\"\nexec = [\"{}\"]\n\n{}",
            interval_provider("100ms"),
            ticking("tick", "interval", "{ every = \"100ms\" }"),
            noisy.display(),
            ticking("noise", "noisy", "{}"),
        );
        if with_silent {
            c += &format!(
                "[[provider]]\nname = \"silent\"\nexec = [\"/bin/sleep\", \"600\"]\nvalidate_timeout = \"1s\"\n\n{}",
                ticking("hush", "silent", "{}")
            );
        }
        c
    };
    daemon.write_config(&config(false));
    daemon.launch();
    let out = daemon.out().join("noise");
    // `${count}` is left as written: this provider attaches no fields.
    wait_for("the good line after the bad ones", DEADLINE, || {
        (lines(&out) == ["survived|${count}|"]).then_some(())
    });
    let p = provider(&mut daemon, "noisy");
    assert_eq!(
        p.refused, 3,
        "garbage, a foreign rule, the long line: {p:?}"
    );
    assert_eq!(p.restarts, 0);
    let rss = common::rss(daemon.pid());
    assert!(
        rss < 64 << 20,
        "the 100 MiB line was held: VmRSS {rss} bytes"
    );

    // A provider that never answers `validate` makes the config invalid, with that reason.
    daemon.write_config(&config(true));
    let status = daemon.reload();
    let refused = status.reload_error.expect("refused");
    assert!(
        refused.contains("[[provider]]: silent: did not answer within 1s"),
        "{refused}"
    );
    let before = daemon.rule("tick").matched;
    wait_matched(&mut daemon, "tick", before);
    assert_eq!(provider(&mut daemon, "interval").restarts, 0);
    assert_eq!(daemon.stop(), Some(0));
}

/// Serves `{dir}/page` at `/page`, appending each request's path to `{dir}/requests`.
fn http_server(dir: &Path) -> (KillOnDrop, u16) {
    let code = "import http.server, sys, os\n\
        d = sys.argv[1]\n\
        class H(http.server.BaseHTTPRequestHandler):\n\
        \x20   def do_GET(self):\n\
        \x20       open(os.path.join(d, 'requests'), 'a').write(self.path + '\\n')\n\
        \x20       body = open(os.path.join(d, 'page'), 'rb').read()\n\
        \x20       self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n\
        \x20       self.wfile.write(body)\n\
        \x20   def log_message(self, *a): pass\n\
        s = http.server.HTTPServer(('127.0.0.1', 0), H)\n\
        print(s.server_port, flush=True)\n\
        s.serve_forever()\n";
    let mut child = Command::new("python3")
        .args(["-c", code])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 http server");
    let mut port = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut port).expect("port");
    (KillOnDrop(child), port.trim().parse().expect("a port"))
}

#[test]
fn the_http_poller_fires_once_per_change_and_not_after_a_restart() {
    let mut daemon = Daemon::create("");
    std::fs::write(daemon.path("page"), "A").expect("page");
    let (_server, port) = http_server(daemon.dir.path());
    daemon.write_config(&format!(
        "[[provider]]\nname = \"http\"\nexec = [\"{}\"]\nconfig = {{ min_every = \"100ms\" }}\n\n\
         [[source]]\nname = \"page\"\nprovider = \"http\"\n\
         params = {{ url = \"http://127.0.0.1:{port}/page\", every = \"100ms\" }}\n\
         exec = [\"/bin/sh\", \"-c\", \"cat >> {{out}}/page; echo >> {{out}}/page\"]\n",
        shipped("http-poll")
    ));
    daemon.launch();
    let out = daemon.out().join("page");
    let requests = daemon.path("requests");
    let polled = |n: usize| {
        wait_for(&format!("{n} polls"), DEADLINE, || {
            (lines(&requests).len() >= n).then_some(())
        })
    };
    wait_for("the first content", DEADLINE, || {
        (lines(&out) == ["A"]).then_some(())
    });
    std::fs::write(daemon.path("page"), "B").expect("page");
    wait_for("the change", DEADLINE, || {
        (lines(&out) == ["A", "B"]).then_some(())
    });
    daemon.restart();
    // Polls after the restart see B again: what was seen is remembered, nothing fires.
    polled(lines(&requests).len() + 2);
    std::fs::write(daemon.path("page"), "C").expect("page");
    wait_for("the next change", DEADLINE, || {
        (lines(&out).len() >= 3).then_some(())
    });
    assert_eq!(lines(&out), ["A", "B", "C"]);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_provider_that_disables_a_rule_shows_why_and_a_flood_meets_the_queue_bound() {
    let mut daemon = Daemon::create("");
    // `gone` is disabled by its provider on `add`; `flood` gets 200,000 fires at once.
    let chatty = script(
        &daemon,
        "chatty",
        "#!/bin/sh\nwhile read -r line; do case \"$line\" in\n\
         *'\"init\"'*) echo '{\"type\":\"ready\",\"version\":1}' ;;\n\
         *'\"validate\"'*'\"gone\"'*) echo '{\"type\":\"valid\",\"rule\":\"gone\"}' ;;\n\
         *'\"validate\"'*) echo '{\"type\":\"valid\",\"rule\":\"flood\"}' ;;\n\
         *'\"add\"'*'\"gone\"'*) printf '%s\\n' '{\"type\":\"disable\",\"rule\":\"gone\",\"reason\":\"bucket deleted\\nERROR forged\"}' ;;\n\
         *'\"add\"'*) yes '{\"type\":\"fire\",\"rule\":\"flood\",\"payload\":\"x\"}' | head -n 200000 ;;\n\
         esac; done\n",
    );
    daemon.write_config(&format!(
        "{}{}[[provider]]\nname = \"chatty\"\nexec = [\"{}\"]\n\n\
         [[source]]\nname = \"gone\"\nprovider = \"chatty\"\nexec = [\"/bin/true\"]\n\n\
         [[source]]\nname = \"flood\"\nprovider = \"chatty\"\nexec = [\"/bin/sleep\", \"1\"]\n\
         max_running = 1\nqueue = 100\n",
        interval_provider("100ms"),
        ticking("tick", "interval", "{ every = \"100ms\" }"),
        chatty.display(),
    ));
    daemon.launch();
    let flood = wait_for("every fire taken or dropped", DEADLINE, || {
        let p = provider(&mut daemon, "chatty");
        (p.fires == 200_000).then_some(daemon.rule("flood"))
    });
    let gone = wait_for("the provider's disable", DEADLINE, || {
        let r = daemon.rule("gone");
        r.state.contains("disabled").then_some(r)
    });
    assert!(
        gone.state.contains("provider: bucket deleted ERROR forged"),
        "{}",
        gone.state
    );
    assert!(flood.dropped >= 199_000, "{flood:?}");
    assert!(flood.queued <= 100);
    let rss = common::rss(daemon.pid());
    assert!(rss < 64 << 20, "VmRSS {rss} bytes");
    let p = provider(&mut daemon, "chatty");
    assert_eq!((p.active, p.refused, p.restarts), (1, 0, 0), "{p:?}");
    // The other provider kept firing through it.
    let before = daemon.rule("tick").matched;
    wait_matched(&mut daemon, "tick", before);
    assert_eq!(daemon.stop(), Some(0));
}
