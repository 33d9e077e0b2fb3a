//! Answers a sender wants back: a spooled record may carry a hook that the forwarder calls
//! with the record's output (its PARTIAL frames, one line each, then the FINAL's) and exit
//! status once the FINAL arrives, so a trigger file's read side shows the last reply of a
//! remote service as it shows a local command's. Bounded: at most [`MAX_WAITING`] hooks
//! (the oldest is dropped, counted, when a new one would pass it) and [`MAX_REPLY_BYTES`] of
//! output each (the rest is cut). Hooks live in memory only: after a restart, a spooled
//! record is still delivered, but its answer has nobody to go back to.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::codec::Frame;

/// Called with the exit status and the output of a delivered record.
pub type ReplyHook = Box<dyn FnOnce(i32, &[u8]) + Send>;

/// Hooks waiting at once.
pub const MAX_WAITING: usize = 65_536;
/// Output bytes kept per reply.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

struct Waiting {
    hook: ReplyHook,
    output: Vec<u8>,
}

/// The hooks of records in flight, by spool sequence number.
#[derive(Default)]
pub struct Replies {
    waiting: Mutex<(HashMap<u64, Waiting>, VecDeque<u64>)>,
    /// Hooks dropped unanswered to stay within [`MAX_WAITING`].
    pub dropped: AtomicU64,
}

fn gather(output: &mut Vec<u8>, body: &[Frame]) {
    for frame in body {
        let room = MAX_REPLY_BYTES.saturating_sub(output.len());
        output.extend_from_slice(&frame[..frame.len().min(room)]);
        if output.len() < MAX_REPLY_BYTES && !frame.ends_with(b"\n") {
            output.push(b'\n');
        }
    }
}

impl Replies {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<u64, Waiting>, VecDeque<u64>)> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `hook` for record `seq` (call it before the record can be read).
    pub fn expect(&self, seq: u64, hook: ReplyHook) {
        let mut guard = self.lock();
        let (map, order) = &mut *guard;
        while map.len() >= MAX_WAITING {
            let Some(old) = order.pop_front() else { break };
            if map.remove(&old).is_some() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        map.insert(
            seq,
            Waiting {
                hook,
                output: Vec::new(),
            },
        );
        order.push_back(seq);
        // Answered records leave stale numbers behind: compact once they dominate.
        if order.len() > 2 * map.len() + 1024 {
            order.retain(|s| map.contains_key(s));
        }
    }

    /// Output streamed for record `seq`.
    pub fn partial(&self, seq: u64, body: &[Frame]) {
        if let Some(w) = self.lock().0.get_mut(&seq) {
            gather(&mut w.output, body);
        }
    }

    /// The FINAL for record `seq`: its hook runs (outside the lock) with everything gathered.
    pub fn done(&self, seq: u64, status: i32, body: &[Frame]) {
        let Some(mut waiting) = self.lock().0.remove(&seq) else {
            return;
        };
        gather(&mut waiting.output, body);
        (waiting.hook)(status, &waiting.output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn output_is_gathered_bounded_and_hooks_are_bounded() {
        let replies = Replies::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        replies.expect(
            1,
            Box::new(move |status, out| sink.lock().unwrap().push((status, out.to_vec()))),
        );
        replies.partial(1, &[b"a".to_vec(), b"b\n".to_vec()]);
        replies.partial(1, &[vec![b'x'; MAX_REPLY_BYTES]]);
        replies.done(1, 3, &[b"never seen".to_vec()]);
        replies.done(1, 0, &[]);
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1, "a hook runs once");
        assert_eq!(got[0].0, 3);
        assert_eq!(got[0].1.len(), MAX_REPLY_BYTES);
        assert!(got[0].1.starts_with(b"a\nb\nxx"));
        for seq in 0..(MAX_WAITING as u64 + 10) {
            replies.expect(seq + 10, Box::new(|_, _| {}));
        }
        assert_eq!(replies.dropped.load(Ordering::Relaxed), 10);
    }
}
