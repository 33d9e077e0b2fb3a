//! Writes through a real mount become messages: exact payloads from a shell, line splitting
//! with partial lines, 1,000 concurrent writers without loss or splitting, back-pressure that
//! counts drops, reads of the last reply, stat, xattr.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{spec, wait_until, Mounted, QueueSink};
use triggerd_fusefs::Split;

const T: Duration = Duration::from_secs(30);

fn sh(script: &str) {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .status()
        .expect("spawn /bin/sh");
    assert!(status.success(), "sh -c {script:?}: {status}");
}

#[test]
fn echo_from_a_shell_gives_exactly_that_payload() {
    let m = Mounted::new(vec![
        spec("weather/rpi/station1", Split::Write),
        spec("weather/rpi/lines", Split::Line),
    ]);
    let station = m.path("weather/rpi/station1");
    sh(&format!(
        "echo 'station1 31F;10C;3.2' > {}",
        station.display()
    ));
    let msgs = m.sink.take(1, T);
    assert_eq!(msgs[0].payload, b"station1 31F;10C;3.2\n");
    assert_eq!(&*msgs[0].trigger, "weather/rpi/station1");

    let lines = m.path("weather/rpi/lines");
    sh(&format!(
        "echo 'station1 31F;10C;3.2' > {}",
        lines.display()
    ));
    let msgs = m.sink.take(1, T);
    assert_eq!(msgs[0].payload, b"station1 31F;10C;3.2");
    assert!(
        m.sink.recv(Duration::from_millis(50)).is_none(),
        "one message only"
    );

    let stats = m.fs().stats();
    let s = stats.iter().find(|s| s.trigger == "weather/rpi/station1");
    let s = s.expect("stats of station1");
    assert_eq!((s.writes, s.bytes, s.events, s.drops), (1, 21, 1, 0));
}

#[test]
fn a_partial_line_is_kept_per_handle_and_emitted_on_close() {
    let m = Mounted::new(vec![spec("log", Split::Line)]);
    let mut a = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("log"))
        .expect("open a");
    let mut b = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("log"))
        .expect("open b");
    a.write_all(b"first half of a, ").expect("write");
    b.write_all(b"b1\nb2 partial").expect("write");
    a.write_all(b"second half\nfull a\n").expect("write");
    let mut got: Vec<Vec<u8>> = m.sink.take(3, T).into_iter().map(|m| m.payload).collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            b"b1".to_vec(),
            b"first half of a, second half".to_vec(),
            b"full a".to_vec()
        ]
    );
    drop(b);
    assert_eq!(m.sink.take(1, T)[0].payload, b"b2 partial");
    drop(a);
    assert!(m.sink.recv(Duration::from_millis(50)).is_none());
}

#[test]
fn thousand_concurrent_writers_lose_and_split_nothing() {
    const WRITERS: usize = 1000;
    const LINES: usize = 100;
    // Every writer holds its own handle at once: allow them all.
    let mut bulk = spec("bulk", Split::Line);
    bulk.limits.max_open = WRITERS;
    let m = Mounted::with(vec![bulk], QueueSink::new(1 << 20), |o| o.threads = 4);
    let path = m.path("bulk");
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let path = &path;
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn_scoped(s, move || {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .expect("open");
                    for l in 0..LINES {
                        // Lines of varying length, some longer than a page boundary split
                        // would tolerate.
                        let pad = "x".repeat((w * 7 + l * 13) % 300);
                        let line = format!("w{w} l{l} {pad}\n");
                        f.write_all(line.as_bytes()).expect("write");
                    }
                })
                .expect("spawn writer");
        }
    });
    let msgs = m.sink.take(WRITERS * LINES, Duration::from_secs(120));
    let mut seen = HashSet::new();
    for msg in &msgs {
        let text = std::str::from_utf8(&msg.payload).expect("utf8");
        let mut parts = text.splitn(3, ' ');
        let (w, l, pad) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
        let w: usize = w
            .and_then(|w| w.strip_prefix('w')?.parse().ok())
            .expect("w");
        let l: usize = l
            .and_then(|l| l.strip_prefix('l')?.parse().ok())
            .expect("l");
        assert_eq!(
            pad,
            "x".repeat((w * 7 + l * 13) % 300),
            "split line {text:?}"
        );
        assert!(seen.insert((w, l)), "duplicate {text:?}");
    }
    assert_eq!(seen.len(), WRITERS * LINES);
    assert!(m.sink.recv(Duration::from_millis(50)).is_none());
    let stats = &m.fs().stats()[0];
    assert_eq!(stats.events, (WRITERS * LINES) as u64);
    assert_eq!(stats.drops, 0);
}

#[test]
fn a_full_queue_holds_the_write_then_fails_it_with_eagain() {
    let wait = Duration::from_secs(2);
    let m = Mounted::with(vec![spec("q", Split::Write)], QueueSink::new(1), |o| {
        o.queue_wait = wait
    });
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("q"))
        .expect("open");
    f.write_all(b"fits").expect("first write");
    let started = Instant::now();
    let refused = f.write_all(b"waits then fails").expect_err("second write");
    assert_eq!(refused.raw_os_error(), Some(libc::EAGAIN), "{refused}");
    assert!(started.elapsed() >= wait, "the write waited for room");
    let stats = &m.fs().stats()[0];
    assert_eq!(
        (stats.writes, stats.events, stats.drops, stats.refused_bytes),
        (2, 1, 1, 16)
    );

    // Room made while a writer waits: accepted, not dropped.
    std::thread::scope(|s| {
        let writer = s.spawn(|| f.write_all(b"accepted late").expect("third write"));
        // The write is counted before it waits for room.
        assert!(wait_until(T, || m.fs().stats()[0].writes == 3));
        assert_eq!(m.sink.recv(T).expect("first").payload, b"fits");
        writer.join().expect("writer");
    });
    assert_eq!(m.sink.recv(T).expect("third").payload, b"accepted late");
    assert_eq!(m.fs().stats()[0].drops, 1);
}

#[test]
fn read_returns_the_last_reply_and_stat_the_mode_and_owner() {
    let mut s = spec("svc/answer", Split::Write);
    s.mode = 0o640;
    s.uid = 33;
    s.gid = 4;
    let m = Mounted::with(vec![s], QueueSink::new(16), |o| o.reply_limit = 8);
    let path = m.path("svc/answer");
    let meta = std::fs::metadata(&path).expect("stat");
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (33, 4));
    assert_eq!(std::fs::read(&path).expect("read empty"), b"");

    m.fs().set_reply("svc/answer", b"0123456789abcdef");
    let mut f = std::fs::File::open(&path).expect("open");
    let mut got = Vec::new();
    f.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"01234567", "reply cut at reply_limit");
    m.fs().set_reply("svc/answer", b"new");
    assert_eq!(std::fs::read(&path).expect("read again"), b"new");
}

#[test]
fn writes_append_whatever_the_offset_and_o_trunc_is_accepted() {
    let m = Mounted::new(vec![spec("a", Split::Write)]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_SYNC)
        .open(m.path("a"))
        .expect("open with O_TRUNC");
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"at 100", 100).expect("pwrite");
    f.write_all_at(b"at 0", 0).expect("pwrite");
    let got: Vec<_> = m.sink.take(2, T).into_iter().map(|m| m.payload).collect();
    assert_eq!(got, vec![b"at 100".to_vec(), b"at 0".to_vec()]);
}

#[test]
fn xattr_calls_are_answered_enosys() {
    let m = Mounted::new(vec![spec("x", Split::Write)]);
    let path =
        std::ffi::CString::new(m.path("x").into_os_string().into_encoded_bytes()).expect("cstring");
    let mut buf = [0u8; 64];
    // SAFETY: both pointers are valid NUL-terminated strings and `buf` is writable for its
    // stated length for the duration of the call.
    let r = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.test".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(r, -1);
    let errno = std::io::Error::last_os_error().raw_os_error();
    // The kernel turns the filesystem's ENOSYS into EOPNOTSUPP for the caller.
    assert_eq!(errno, Some(libc::EOPNOTSUPP));
}
