//! Pasted tables through a real daemon and real fanotify: the examples of `incrontab(5)`, with
//! their paths moved into a temp dir and `abcd` replaced by the recorder, fire with incron's
//! token meanings and options; a bare command name is found in PATH and a file name with
//! spaces and quotes reaches it as one argument; facron's counter tokens `$+ $- $=` count
//! across runs and lines as facron's do.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{records, Daemon};

/// The recorded runs of `name`, each without the name: its other arguments.
fn runs(daemon: &Daemon, name: &str) -> Vec<Vec<String>> {
    records(&daemon.out())
        .into_iter()
        .filter(|r| r.first().is_some_and(|n| n == name))
        .map(|r| {
            r[1..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
        .collect()
}

fn wait_run(daemon: &Daemon, name: &str, want: &[String]) {
    common::wait_for(
        &format!("a run of {name} with {want:?}"),
        common::DEADLINE,
        || runs(daemon, name).iter().any(|r| r == want).then_some(()),
    );
}

#[test]
fn incron_examples_and_facron_counters_fire_with_their_own_tokens() {
    let mut daemon = Daemon::start("");
    let d = daemon.dir.path().display().to_string();
    for dir in ["tmp", "bin", "home", "home2", "home3", "log", "q", "f", "g"] {
        fs::create_dir(daemon.path(dir)).unwrap();
    }
    fs::write(daemon.path("bin/tool"), "#!/bin/sh\n").unwrap();
    // incrontab(5)'s EXAMPLE section, line by line (one path per table, as incron requires).
    let config = "incron = '''\n\
        {dir}/tmp IN_ALL_EVENTS {record} {out} ex1 $@/$# $%\n\
        {dir}/bin IN_ACCESS,loopable=true {record} {out} ex2 $#\n\
        {dir}/home IN_CREATE {record} {out} ex3 $#\n\
        {dir}/home2 IN_CREATE,dotdirs=true {record} {out} ex4 $#\n\
        {dir}/home3 IN_CREATE,recursive=false {record} {out} ex5 $#\n\
        {dir}/log 12 {record} {out} ex6 $@/$#\n\
        {dir}/q IN_CLOSE_WRITE sh -c '{record} {out} quoted \"$$0\" \"$$1\" $$HOME' $# $@\n\
        '''\n\
        facron = '''\n\
        {dir}/f FAN_CLOSE_WRITE|FAN_EVENT_ON_CHILD {record} {out} up $# $+ $+ $=\n\
        {dir}/g FAN_CLOSE_WRITE|FAN_EVENT_ON_CHILD {record} {out} down $# $- $=\n\
        '''\n";
    daemon.write_config(config);
    daemon.reload();
    daemon.wait_watching();

    // 1: every event below /tmp, with the full path and the flags as text (fanotify merges
    // events on one file that are still queued, so a run may carry several).
    fs::write(daemon.path("tmp/a"), "x").unwrap();
    common::wait_for("a run of ex1 with IN_CLOSE_WRITE", common::DEADLINE, || {
        runs(&daemon, "ex1")
            .iter()
            .any(|r| r[0] == format!("{d}/tmp/a") && r[1].split(',').any(|f| f == "IN_CLOSE_WRITE"))
            .then_some(())
    });
    let flags: Vec<String> = runs(&daemon, "ex1")
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert!(
        flags
            .iter()
            .all(|f| f.split(',').all(|n| n.starts_with("IN_"))),
        "{flags:?}"
    );
    // 2: reading a file in /usr/bin gives its name.
    fs::read(daemon.path("bin/tool")).unwrap();
    wait_run(&daemon, "ex2", &["tool".into()]);
    // 3-5: new entries in /home; recursive by default (hidden directories skipped), with
    // `dotdirs=true` hidden ones too, with `recursive=false` none below.
    for home in ["home", "home2", "home3"] {
        fs::create_dir(daemon.path(&format!("{home}/alice"))).unwrap();
        fs::create_dir(daemon.path(&format!("{home}/.cache"))).unwrap();
    }
    for (ex, home) in [("ex3", "home"), ("ex4", "home2"), ("ex5", "home3")] {
        wait_run(&daemon, ex, &["alice".into()]);
        wait_run(&daemon, ex, &[".cache".into()]);
        fs::write(daemon.path(&format!("{home}/alice/profile")), "x").unwrap();
        fs::write(daemon.path(&format!("{home}/.cache/junk")), "x").unwrap();
    }
    wait_run(&daemon, "ex3", &["profile".into()]);
    wait_run(&daemon, "ex4", &["profile".into()]);
    wait_run(&daemon, "ex4", &["junk".into()]);
    // 6: the number 12 is IN_ATTRIB,IN_CLOSE_WRITE.
    let log = daemon.path("log/syslog");
    fs::write(&log, "x").unwrap();
    wait_run(&daemon, "ex6", &[format!("{d}/log/syslog")]);
    let before = runs(&daemon, "ex6").len();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o600)).unwrap();
    common::wait_for("the attrib run", common::DEADLINE, || {
        (runs(&daemon, "ex6").len() > before).then_some(())
    });

    // A bare name from PATH, `$$` as a literal `$`, and a name with spaces and quotes as one
    // argument; `$HOME` is not incron's, so it stays for the shell.
    let name = "it's a \"test\" file";
    fs::write(daemon.path(&format!("q/{name}")), "x").unwrap();
    wait_run(
        &daemon,
        "quoted",
        &[name.into(), format!("{d}/q"), "/root".into()],
    );

    // facron's one counter: `$+` increments, `$-` decrements, `$=` reads, across lines.
    fs::write(daemon.path("f/one"), "x").unwrap();
    wait_run(
        &daemon,
        "up",
        &["one".into(), "1".into(), "2".into(), "2".into()],
    );
    fs::write(daemon.path("f/two"), "x").unwrap();
    wait_run(
        &daemon,
        "up",
        &["two".into(), "3".into(), "4".into(), "4".into()],
    );
    fs::write(daemon.path("g/three"), "x").unwrap();
    wait_run(&daemon, "down", &["three".into(), "3".into(), "3".into()]);

    // What must not have fired: a hidden directory's entries (ex3), anything below home3's
    // entries (ex5). Files written after them have been reported, so they were judged.
    let ex3 = runs(&daemon, "ex3");
    assert!(!ex3.contains(&vec!["junk".to_string()]), "{ex3:?}");
    let ex5 = runs(&daemon, "ex5");
    assert!(
        !ex5.contains(&vec!["profile".to_string()]) && !ex5.contains(&vec!["junk".to_string()]),
        "{ex5:?}"
    );
}
