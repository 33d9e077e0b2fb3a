//! The C ABI: `examples/publish.c` compiles with `cc` against `include/triggerd.h` and the
//! crate's static library, then publishes from argv and from stdin into a live channel.

mod common;

use common::Consumer;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use triggerd_ipc::ChannelSpec;

/// `target/<profile>/deps/libtriggerd_ipc.a`: `cargo test` builds the library with all its crate
/// types (including `staticlib`) next to this test binary on every run. (The copy one level up
/// is refreshed only by `cargo build` and may be stale.)
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.with_file_name("libtriggerd_ipc.a")
}

#[test]
fn c_example_compiles_and_publishes() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = tempfile::tempdir().unwrap();
    let binary = out_dir.path().join("publish");
    let lib = static_library();
    assert!(lib.exists(), "{} not built", lib.display());
    let status = Command::new("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples/publish.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&binary)
        .status()
        .expect("run cc (Debian package: gcc)");
    assert!(status.success(), "cc failed");

    let name = common::unique("c");
    let (mut consumer, got) = Consumer::collecting(&ChannelSpec::new(name.as_str()));
    let status = Command::new(&binary)
        .args([name.as_str(), "one", "two", "three"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = Command::new(&binary)
        .arg(&name)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line a\nline b\n")
        .unwrap();
    assert!(child.wait().unwrap().success());

    let expected: Vec<Vec<u8>> = ["one", "two", "three", "line a", "line b"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert!(common::wait_until(Duration::from_secs(30), || got
        .lock()
        .unwrap()
        .len()
        >= expected.len()));
    assert_eq!(*got.lock().unwrap(), expected);

    let missing = Command::new(&binary)
        .args(["no-such-channel-here", "x"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such channel"));
    assert_eq!(
        consumer.stop(Duration::from_secs(10)).map(|r| r.is_ok()),
        Some(true)
    );
}
