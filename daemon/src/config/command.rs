//! What a run is handed on stdin (`stdin`) and how a watch gathers a burst of changes into one
//! run (`batch`, `batch_max_wait`, `max_batch`): the validated values; the gathering itself is
//! the dispatcher's (`dispatch::rule::batch`), the encoding the action's (`action::stdin`);
//! and which token dialect a command's arguments speak (`Tokens`).

use std::time::Duration;

/// `stdin` of a rule's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Stdin {
    /// The event's payload (a trigger file's write, a webhook body); nothing for a watch.
    #[default]
    Payload,
    /// Each path (every changed path of a batch) followed by a newline.
    Paths,
    /// Each path followed by a NUL: the one form any file name survives.
    Paths0,
    /// One JSON object per line per path: `path`, `events`, `mask`, `pid`, `time`.
    Json,
    /// Nothing (`/dev/null`).
    None,
}

/// `batch`: one run for a burst of changes below a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchPolicy {
    /// The run starts once no event has arrived for this long...
    pub settle: Duration,
    /// ...or this long after the batch's first event, whichever comes first.
    pub max_wait: Duration,
    /// Paths one run carries; a batch that reaches it is cut and runs at once.
    pub max_paths: usize,
}

impl BatchPolicy {
    /// `batch_max_wait` when not given: ten settle periods, at least a second.
    pub fn default_max_wait(settle: Duration) -> Duration {
        (settle * 10).max(Duration::from_secs(1))
    }

    pub const DEFAULT_MAX_PATHS: usize = 10_000;
}

/// Which token meanings a command's arguments have (`action::substitute`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Tokens {
    /// triggerd's (and facron's) `$$ $@ $# $% $& $*` and `${name}`.
    #[default]
    Triggerd,
    /// A facron line: triggerd's, and facron's counter `$+ $- $=`.
    Facron,
    /// An incron line: incron's wildcards, `$@` and `$#` relative to the watched path.
    Incron { watched: std::path::PathBuf },
}
