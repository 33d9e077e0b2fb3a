//! Config fixtures: every valid one loads, every invalid one fails at the line and with the
//! message its first line promises (`# expect: LINE: TEXT`), and mutated configs never panic.

use std::path::{Path, PathBuf};

use triggerd::config::{self, ConfigError};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_fixtures_load() {
    let files = fixtures("valid");
    assert!(files.len() >= 3, "fixtures missing: {files:?}");
    for file in files {
        if let Err(e) = config::load(&file) {
            panic!("{} should be valid:\n{e}", file.display());
        }
    }
}

#[test]
fn invalid_fixtures_name_line_and_key() {
    let files = fixtures("invalid");
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
        let (line, message) = expect
            .split_once(": ")
            .unwrap_or((expect.trim_end_matches(':'), ""));
        let error = match config::load(&file) {
            Ok(_) => panic!("{} should be refused", file.display()),
            Err(e @ ConfigError::Invalid { .. }) => e.to_string(),
            Err(e) => panic!("{}: {e}", file.display()),
        };
        let prefix = format!("{}:{line}: ", file.display());
        assert!(
            error
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(message.trim())),
            "{}: expected `{prefix}…{message}`, got:\n{error}",
            file.display()
        );
    }
}

#[test]
fn full_fixture_means_what_it_says() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/full.conf");
    let config = config::load(&file).unwrap();
    let names: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "watch:/etc/nginx/nginx.conf",
            "watch:/srv/spool",
            "watch:/srv/x",
            "ingest",
            "watch:/srv/secret",
            "watch:/srv/secret#2",
        ]
    );
    let ingest = &config.rules[3];
    assert_eq!(ingest.line, 13);
    let config::Trigger::Watch(w) = &ingest.def.trigger else {
        panic!("a watch")
    };
    assert_eq!(w.path, Path::new("/srv/incoming"));
    assert!(w.recursive);
    let e = triggerd_watch::EventMask::CLOSE_WRITE
        .union(triggerd_watch::EventMask::MOVED_TO)
        .union(triggerd_watch::EventMask::CREATE)
        .union(triggerd_watch::EventMask::DELETE);
    assert_eq!(w.events, e);
    assert_eq!(ingest.def.policy.max_running, 4);
    assert_eq!(ingest.def.policy.on_busy, config::OnBusy::Restart);
    assert!(ingest.def.policy.allow_loop);
    let config::Action::Exec(exec) = &ingest.def.action else {
        panic!("an exec action")
    };
    assert_eq!(exec.group, Some(0));
    let facron = &config.rules[2];
    assert_eq!(facron.line, 10);
    let config::Action::Exec(exec) = &facron.def.action else {
        panic!("an exec action")
    };
    assert_eq!(exec.argv, ["/bin/echo", "two words", "$#"]);
}

/// xorshift: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_configs_never_panic() {
    let seeds: Vec<Vec<u8>> = fixtures("valid")
        .into_iter()
        .chain(fixtures("invalid"))
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let tokens: [&[u8]; 12] = [
        b"[[watch]]\n",
        b"'''",
        b"\"",
        b"=",
        b"\n",
        b"|",
        b"$$",
        b"[",
        b"]",
        b"{",
        b"\xff",
        b"events = \"",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let path = Path::new("fuzz.conf");
    for i in 0..20_000 {
        let mut text = seeds[i % seeds.len()].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(text.len() + 1);
            match rng.below(4) {
                0 => text.truncate(at),
                1 => {
                    let token = tokens[rng.below(tokens.len())];
                    text.splice(at..at, token.iter().copied());
                }
                2 if at < text.len() => text[at] = rng.next() as u8,
                _ => {
                    let end = (at + rng.below(20)).min(text.len());
                    text.drain(at..end);
                }
            }
        }
        let text = String::from_utf8_lossy(&text);
        let _ = config::parse(path, &text);
    }
}

/// A main config and drop-ins beside it (`NAME.d`), in a temporary directory.
fn with_dropins(main: &str, dropins: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("main.conf");
    std::fs::write(&file, main).unwrap();
    std::fs::create_dir(dir.path().join("main.d")).unwrap();
    for (name, text) in dropins {
        std::fs::write(dir.path().join("main.d").join(name), text).unwrap();
    }
    (dir, file)
}

const TIMER: &str = "[[timer]]\nname = \"NAME\"\nevery = \"1h\"\nexec = [\"/bin/true\"]\n";

#[test]
fn drop_ins_add_their_rules_after_the_main_file_in_name_order() {
    let (_dir, file) = with_dropins(
        &TIMER.replace("NAME", "main"),
        &[
            ("20-b.conf", &TIMER.replace("NAME", "b")),
            ("10-a.conf", &TIMER.replace("NAME", "a")),
            ("30-ignored.txt", "not a config"),
            (".40-editor-swap.conf", "not a config either"),
        ],
    );
    let config = config::load(&file).unwrap();
    let names: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["main", "a", "b"]);
    let a = &config.rules[1];
    assert_eq!(
        a.place(&file),
        format!("{}:1", file.with_extension("d").join("10-a.conf").display())
    );
}

#[test]
fn drop_in_problems_name_the_drop_in_file_and_line() {
    let (_dir, file) = with_dropins(
        &TIMER.replace("NAME", "main"),
        &[
            (
                "10-dup.conf",
                &format!("\n{}", TIMER.replace("NAME", "main")),
            ),
            ("20-daemon.conf", "[daemon]\nstate_dir = \"/tmp\"\n"),
            ("30-broken.conf", "[[timer]\n"),
        ],
    );
    let error = config::load(&file).unwrap_err().to_string();
    let d = file.with_extension("d");
    for expected in [
        format!(
            "{}:2: name: `main` is used by another rule",
            d.join("10-dup.conf").display()
        ),
        format!(
            "{}:1: [daemon]: belongs in the main config file",
            d.join("20-daemon.conf").display()
        ),
        format!("{}:1: ", d.join("30-broken.conf").display()),
    ] {
        assert!(
            error.lines().any(|l| l.starts_with(&expected)),
            "no `{expected}` in:\n{error}"
        );
    }
}
