//! The command-line contract: `triggerd check` exit codes and messages, `triggerd` refusing a
//! bad config with exit 2, `triggerctl status` in both forms, a log file without colour codes,
//! the systemd unit verifying, and state files that only root can read.

mod common;

use std::process::Command;

use common::Daemon;

fn triggerd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_triggerd"))
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

#[test]
fn check_accepts_the_shipped_config_and_rejects_bad_ones_with_exit_2() {
    let ok = triggerd()
        .arg("check")
        .arg(repo_file("etc/triggerd.conf"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "[[watch]]\npath = \"/srv\"\nevents = \"clse_write\"\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    for args in [vec!["check"], vec!["--config"]] {
        let out = triggerd().args(&args).arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("{}:3: [[watch]]: events:", bad.display())),
            "{stderr}"
        );
    }
    let missing = triggerd()
        .arg("check")
        .arg(dir.path().join("nope.conf"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let usage = triggerd().arg("--no-such-flag").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn triggerctl_status_prints_a_table_and_json() {
    let mut daemon = Daemon::start(
        "[[watch]]\nname = \"docs\"\npath = \"{dir}\"\nevents = \"close_write\"\nexec = [\"/bin/true\"]\n",
    );
    daemon.wait_watching();
    let ctl = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_triggerctl"));
        c.arg("--socket").arg(&daemon.socket).arg("status");
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let table = ctl(false);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    let header = text
        .lines()
        .find(|l| l.starts_with("RULE"))
        .expect("a header");
    for column in ["STATE", "MATCHED", "QUEUED", "NEXT FIRE"] {
        assert!(header.contains(column), "{header}");
    }
    let row = text
        .lines()
        .find(|l| l.starts_with("docs"))
        .expect("the rule's row");
    // Each value sits under its column: the state under STATE.
    assert_eq!(row.find("active"), header.find("STATE"), "{text}");
    let json = ctl(true);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["rules"][0]["name"], "docs");
    assert_eq!(parsed["rules"][0]["fired"], 0);

    let gone = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .arg("--socket")
        .arg(daemon.path("absent.sock"))
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    // Its log is a file, not a terminal: plain text, no colour codes.
    let log = daemon.log_text();
    assert!(log.contains("triggerd running"), "{log}");
    assert!(!log.contains('\x1b'), "escape codes in a log file:\n{log}");
}

#[test]
fn systemd_units_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze is required (Debian package systemd)");
    };
    // The units name installed paths: point them at a binary under test.
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_triggerd"))
        .display()
        .to_string();
    for name in ["triggerd.service", "triggerd-broker.service"] {
        let unit = std::fs::read_to_string(repo_file(&format!("systemd/{name}"))).unwrap();
        let unit = unit
            .replace("/usr/local/bin/triggerd-broker", &bin)
            .replace("/usr/local/bin/triggerd", &bin);
        let path = dir.path().join(name);
        std::fs::write(&path, unit).unwrap();
        let out = Command::new(&analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let problems: Vec<&str> = stderr.lines().filter(|l| l.contains(name)).collect();
        assert!(
            out.status.success() && problems.is_empty(),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn shipped_broker_config_parses() {
    let text = std::fs::read_to_string(repo_file("etc/broker.toml")).unwrap();
    let config = triggerd_remote::broker::BrokerConfig::from_toml(&text).unwrap();
    assert_eq!(config.bind, ["tcp://0.0.0.0:5555"]);
    assert!(config.auth);
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn state_files_are_root_s_alone() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start(
        "[[watch]]\nname = \"docs\"\npath = \"{dir}\"\nevents = \"close_write\"\nexec = [\"/bin/true\"]\n",
    );
    let paused = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["pause", "docs"])
        .output()
        .unwrap();
    assert!(paused.status.success(), "{paused:?}");
    let state = daemon.state_dir();
    let file = state.join("rules.json");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&state), mode(&file)), (0o700, 0o600));
    let other = Command::new("setpriv")
        .args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "cat",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("Permission denied"));
}

#[test]
fn the_shipped_config_answers_hello_and_logs_what_its_commands_print() {
    let shipped = std::fs::read_to_string(repo_file("etc/triggerd.conf")).expect("shipped config");
    // The harness writes its own [daemon] table (socket, mount and state in a temp dir).
    let rules = shipped
        .split_once("\n\n# Every file written")
        .map(|(_, rest)| format!("# Every file written{rest}"))
        .expect("the rules after [daemon]");
    let mut daemon = Daemon::start(&rules);
    daemon.wait_watching();
    let hello = daemon.path("fs/hello");
    std::fs::write(&hello, "world").expect("write the trigger file");
    let answer = common::wait_for("the answer", common::DEADLINE, || {
        let text = std::fs::read_to_string(&hello).ok()?;
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(answer, "hello, world\n");
    common::wait_for("the command's output in the log", common::DEADLINE, || {
        daemon.log_text().contains("hello, world").then_some(())
    });
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn triggerctl_status_sums_up_many_rules_and_filters_them() {
    let mut rules = String::from(
        "[[watch]]\nname = \"docs\"\npath = \"{dir}\"\nevents = \"close_write\"\nexec = [\"/bin/true\"]\n\n",
    );
    for i in 0..110 {
        rules +=
            &format!("[[trigger]]\nname = \"t{i}\"\nfile = \"t/t{i}\"\nexec = [\"/bin/true\"]\n\n");
    }
    let mut daemon = Daemon::start(&rules);
    daemon.wait_watching();
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("status")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rows = |text: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with("RULE"))
            .skip(1)
            .count()
    };
    let summary = ctl(&[]);
    assert!(summary.contains("rules: 111 selected of 111"), "{summary}");
    assert!(summary.contains("trigger: 110 active"), "{summary}");
    assert!(summary.contains("watch: 1 active"), "{summary}");
    assert!(rows(&summary) <= 20, "{summary}");
    let watches = ctl(&["--kind", "watch"]);
    assert!(watches.contains("rules: 1 selected of 111"), "{watches}");
    assert_eq!(rows(&watches), 1, "{watches}");
    // t1, t10-t19, t100-t109
    assert_eq!(rows(&ctl(&["--rule", "t1*", "--all"])), 21);
    assert_eq!(rows(&ctl(&["--state", "paused"])), 0);
    let json: serde_json::Value =
        serde_json::from_str(&ctl(&["--json", "--rule", "t10?"])).unwrap();
    assert_eq!(json["rules"].as_array().map(Vec::len), Some(10));
}

#[test]
fn every_triggerctl_verb_speaks_json() {
    let channel = format!("t{}-json", std::process::id());
    let daemon = Daemon::start(&format!(
        "[[trigger]]\nname = \"t\"\nfile = \"t\"\nexec = [\"/bin/true\"]\n\n[[channel]]\nname = \"{channel}\"\nexec = [\"/bin/true\"]\n"
    ));
    let json = |args: &[&str]| -> serde_json::Value {
        let out = daemon.ctl(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let named_t = |rules: &serde_json::Value| {
        rules
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "t"))
    };
    assert!(named_t(&json(&["status", "--json"])["rules"]));
    assert!(json(&["--json", "providers"]).is_object());
    assert!(named_t(&json(&["list", "--json"])));
    assert_eq!(json(&["show", "t", "--json"])[0]["kind"], "trigger");
    for (verb, done) in [
        ("pause", "paused"),
        ("resume", "resumed"),
        ("disable", "disabled"),
        ("enable", "enabled"),
    ] {
        assert_eq!(json(&[verb, "t", "--json"])["done"], done, "{verb}");
    }
    assert_eq!(json(&["fire", "t", "x", "--json"])["done"], "fired");
    let published = json(&["publish", &channel, "m", "--json"]);
    assert_eq!(published["published"], 1, "{published}");
    let execs = daemon.try_status().expect("status").execs;
    let reexec = json(&["reexec", "--json"]);
    assert_eq!(reexec["done"], "re-executed");
    assert_eq!(reexec["pid"], daemon.pid());
    assert_eq!(daemon.try_status().expect("status").execs, execs + 1);

    let refused = daemon.ctl(&["show", "nope", "--json"]);
    assert_eq!(refused.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{error}"
    );
}

#[test]
fn triggerctl_tables_fit_the_terminal() {
    let long = "a-rather-long-directory-name/".repeat(4);
    let daemon = Daemon::start(&format!(
        "[[trigger]]\nname = \"wide\"\nfile = \"{long}x\"\nexec = [\"/bin/true\"]\n"
    ));
    // `script` gives triggerctl a terminal of 60 columns; a pipe gets the whole lines.
    let run = |cols: u32| {
        let line = format!(
            "stty cols {cols}; {} --socket {} list",
            env!("CARGO_BIN_EXE_triggerctl"),
            daemon.socket.display()
        );
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (bsdutils)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    let narrow = run(60);
    let rows: Vec<&str> = narrow.lines().filter(|l| !l.is_empty()).collect();
    assert!(rows.len() >= 2, "{narrow}");
    for row in &rows {
        assert!(
            row.chars().count() <= 60,
            "{} columns: {row}",
            row.chars().count()
        );
    }
    assert!(
        rows[1].starts_with("wide") && rows[1].ends_with('…'),
        "{narrow}"
    );
    let piped = daemon.ctl(&["list"]);
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(
        text.contains(&format!("{long}x")),
        "a pipe is never cut: {text}"
    );
}
