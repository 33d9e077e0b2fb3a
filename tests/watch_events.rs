//! End to end through a real daemon and real fanotify: each event kind fires the rule that
//! asked for it with the right path; facron lines work pasted verbatim; recursive watches see
//! directories made after start; hostile file names arrive as exactly one argument.

mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;

use common::{records, runs_of, sh, wait_records, Daemon};

fn rule(name: &str, path: &str, events: &str) -> String {
    format!(
        "[[watch]]\nname = \"{name}\"\npath = \"{path}\"\nevents = [\"{events}\"]\nexec = [\"{{record}}\", \"{{out}}\", \"{name}\", \"$$\", \"$%\"]\n\n"
    )
}

#[test]
fn every_event_kind_fires_its_rule() {
    let kinds = [
        "access",
        "modify",
        "attrib",
        "open",
        "close_write",
        "close_nowrite",
        "create",
        "delete",
        "moved_from",
        "moved_to",
    ];
    let mut config: String = kinds.iter().map(|k| rule(k, "{dir}/w", k)).collect();
    config += &rule("delete_self", "{dir}/gone", "delete_self");
    config += &rule("move_self", "{dir}/moving", "move_self");
    let mut daemon = Daemon::start("");
    let d = daemon.dir.path().display().to_string();
    fs::create_dir(daemon.path("w")).unwrap();
    fs::write(daemon.path("w/r"), "read me").unwrap();
    fs::write(daemon.path("w/a"), "").unwrap();
    fs::write(daemon.path("w/d"), "").unwrap();
    fs::write(daemon.path("w/x"), "").unwrap();
    fs::write(daemon.path("gone"), "").unwrap();
    fs::write(daemon.path("moving"), "").unwrap();
    daemon.write_config(&config);
    daemon.reload();
    daemon.wait_watching();

    sh(&format!(
        "cd {d}/w && echo new > c && cat r >/dev/null && chmod 600 a && rm d && mv x y && rm ../gone && mv ../moving ../moved"
    ));
    let expect = [
        ("create", "w/c"),
        ("modify", "w/c"),
        ("close_write", "w/c"),
        ("open", "w/r"),
        ("access", "w/r"),
        ("close_nowrite", "w/r"),
        ("attrib", "w/a"),
        ("delete", "w/d"),
        ("moved_from", "w/x"),
        ("moved_to", "w/y"),
        ("delete_self", "gone"),
        ("move_self", "moving"),
    ];
    for (kind, rel) in expect {
        let want = format!("{d}/{rel}");
        common::wait_for(&format!("{kind} on {rel}"), common::DEADLINE, || {
            runs_of(&daemon, kind).contains(&want).then_some(())
        });
    }
    // `$%` names the kind that fired.
    let close = records(&daemon.out())
        .into_iter()
        .find(|r| r[0] == "close_write")
        .unwrap();
    assert_eq!(close[2], "close_write");
}

#[test]
fn facron_lines_pasted_verbatim_fire() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("spool")).unwrap();
    fs::write(daemon.path("app.conf"), "").unwrap();
    // FAN_CLOSE and FAN_ALL_EVENTS are groups: facron itself never fired them (AND bug).
    daemon.write_config(
        "facron = '''\n\
         # comment lines are fine\n\
         {dir}/spool FAN_CLOSE_WRITE|FAN_EVENT_ON_CHILD {record} {out} spool $$\n\
         {dir}/app.conf FAN_CLOSE {record} {out} close '$$'\n\
         {dir}/app.conf FAN_ALL_EVENTS,FAN_MODIFY {record} {out} all \"$#\"\n\
         '''\n",
    );
    daemon.reload();
    daemon.wait_watching();
    let d = daemon.dir.path().display().to_string();
    sh(&format!(
        "echo x > {d}/spool/job1 && echo y >> {d}/app.conf"
    ));
    common::wait_for("facron runs", common::DEADLINE, || {
        let spool = runs_of(&daemon, "spool");
        let close = runs_of(&daemon, "close");
        let all = runs_of(&daemon, "all");
        (spool.contains(&format!("{d}/spool/job1"))
            && close.contains(&format!("{d}/app.conf"))
            && all.contains(&"app.conf".to_string()))
        .then_some(())
    });
    let names: Vec<String> = daemon
        .status()
        .rules
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert!(names.contains(&format!("watch:{d}/spool")), "{names:?}");
}

#[test]
fn recursive_watch_covers_directories_made_after_start() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("tree")).unwrap();
    daemon.write_config(
        "[[watch]]\nname = \"tree\"\npath = \"{dir}/tree\"\nevents = \"close_write\"\nrecursive = true\nexec = [\"{record}\", \"{out}\", \"tree\", \"$$\", \"$@\", \"$#\"]\n",
    );
    daemon.reload();
    daemon.wait_watching();
    let d = daemon.dir.path().display().to_string();
    sh(&format!(
        "cd {d}/tree && mkdir -p a/b/c/d && echo x > a/b/c/d/f"
    ));
    let runs = wait_records(&daemon.out(), 1);
    let run = runs.iter().find(|r| r[0] == "tree").unwrap();
    assert_eq!(run[1], OsString::from(format!("{d}/tree/a/b/c/d/f")));
    assert_eq!(run[2], OsString::from(format!("{d}/tree/a/b/c/d")));
    assert_eq!(run[3], "f");
    // Outside the tree, on the same filesystem: nothing fires.
    fs::write(daemon.path("outside"), "x").unwrap();
    fs::create_dir_all(daemon.path("tree/z")).unwrap();
    fs::write(daemon.path("tree/z/g"), "x").unwrap();
    let runs = wait_records(&daemon.out(), 2);
    assert!(
        runs.iter()
            .all(|r| !r[1].to_string_lossy().ends_with("/outside")),
        "{runs:?}"
    );
}

#[test]
fn hostile_names_arrive_as_one_argument() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    daemon.write_config(
        "[[watch]]\npath = \"{dir}/in\"\nevents = \"close_write\"\nexec = [\"{record}\", \"{out}\", \"$#\", \"--path=$$\"]\n",
    );
    daemon.reload();
    daemon.wait_watching();
    let names: Vec<Vec<u8>> = vec![
        b"with space".to_vec(),
        b"new\nline".to_vec(),
        b"quo'te\"s".to_vec(),
        b"dollar$$x $# $(id)".to_vec(),
        b"-rf".to_vec(),
        b"bad\xff\xfeutf8".to_vec(),
        b"semi;colon|pipe&amp`tick`".to_vec(),
    ];
    for name in &names {
        fs::write(
            daemon.path("in").join(OsString::from_vec(name.clone())),
            "x",
        )
        .unwrap();
    }
    let runs = wait_records(&daemon.out(), names.len());
    let dir = daemon.path("in");
    for name in &names {
        let name = OsString::from_vec(name.clone());
        let mut path = dir.join(&name).into_os_string();
        let mut arg = OsString::from("--path=");
        arg.push(&path);
        path = arg;
        let expected = vec![name.clone(), path];
        assert!(
            runs.contains(&expected),
            "{name:?} not passed intact: {runs:?}"
        );
    }
    assert_eq!(runs.len(), names.len(), "one run per file: {runs:?}");
}
