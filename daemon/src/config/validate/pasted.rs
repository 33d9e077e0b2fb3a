//! Tables pasted verbatim into a literal string, one rule per line: facron's (`facron`) and
//! incron's (`incron`). Both have the line shape `<path> <mask> <command> [args...]`, split
//! alike (`config::facron`); they differ in the mask, the options and the tokens, and a
//! command is never handed to a shell.

use std::ops::Range;
use std::sync::Arc;

use triggerd_watch::{parse_events, EventMask};

use super::super::raw::Source;
use super::super::{
    facron, incron, Action, ExecAction, PathFilter, Policy, Problem, Rule, RuleDef, Tokens,
    Trigger, WatchBackend, WatchTrigger,
};
use super::{absolute, action::command, watch::check_event_classes};

/// Whose table it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Facron,
    Incron,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Facron => "facron",
            Dialect::Incron => "incron",
        }
    }
}

/// What one line's mask and command say, in the table's dialect.
struct Line {
    trigger: WatchTrigger,
    argv: Vec<std::ffi::OsString>,
    tokens: Tokens,
    allow_loop: bool,
}

pub(super) fn pasted_rules(
    source: &Source<'_>,
    span: Range<usize>,
    table_text: &str,
    dialect: Dialect,
    rules: &mut Vec<Rule>,
    problems: &mut Vec<Problem>,
) {
    let first_line = first_line(source, &span);
    let (lines, mut found) = facron::parse_table(table_text, first_line, dialect.name());
    problems.append(&mut found);
    for entry in lines {
        let line = first_line + entry.index;
        let read = absolute(&entry.path).and_then(|path| match dialect {
            Dialect::Facron => facron_line(path, &entry),
            Dialect::Incron => incron_line(path, &entry),
        });
        let read = read.and_then(|l| check_event_classes(&l.trigger).map(|()| l));
        let l = match read {
            Ok(l) => l,
            Err(m) => {
                problems.push(Problem::new(line, format!("{}: {m}", dialect.name())));
                continue;
            }
        };
        rules.push(Rule {
            name: String::new(),
            line,
            origin: None,
            def: RuleDef {
                trigger: Trigger::Watch(l.trigger),
                action: Action::Exec(ExecAction {
                    argv: l.argv,
                    user: None,
                    group: None,
                    env: Vec::new(),
                    chdir: None,
                    stdin: Default::default(),
                    tokens: l.tokens,
                }),
                policy: Arc::new(Policy {
                    allow_loop: l.allow_loop,
                    ..Policy::default()
                }),
            },
        });
    }
}

fn watch(path: std::path::PathBuf, events: EventMask) -> WatchTrigger {
    WatchTrigger {
        path,
        events,
        recursive: false,
        follow: true,
        children: true,
        backend: WatchBackend::Auto,
        mount_only: false,
        filter: PathFilter::default(),
        on_overflow: Default::default(),
        poll: None,
    }
}

/// facron: `|`/`,` masks, absolute commands, a directory's entries only with
/// `FAN_EVENT_ON_CHILD`.
fn facron_line(path: std::path::PathBuf, entry: &facron::FacronLine) -> Result<Line, String> {
    let events = parse_events(&entry.masks).map_err(|e| e.to_string())?;
    Ok(Line {
        trigger: WatchTrigger {
            children: events.contains(EventMask::EVENT_ON_CHILD),
            ..watch(path, events)
        },
        argv: command(&entry.argv)?,
        tokens: Tokens::Facron,
        allow_loop: false,
    })
}

/// incron: its options, its wildcards, a bare command name found in PATH.
fn incron_line(path: std::path::PathBuf, entry: &facron::FacronLine) -> Result<Line, String> {
    let mask = incron::parse_mask(&entry.masks)?;
    let mut argv = entry.argv.clone();
    argv[0] = incron::program(&argv[0])?.to_string_lossy().into_owned();
    let filter = if mask.recursive && !mask.dotdirs {
        PathFilter::new(&[], &[incron::HIDDEN_DIRS.to_string()], true).map_err(|e| e.to_string())?
    } else {
        PathFilter::default()
    };
    // incron recurses into directories only: a file's line must not mark its whole
    // filesystem. A path that does not exist yet is taken to be a directory.
    let directory = std::fs::metadata(&path).map_or(true, |m| m.is_dir());
    Ok(Line {
        trigger: WatchTrigger {
            recursive: mask.recursive && directory,
            follow: mask.follow,
            filter,
            ..watch(path.clone(), mask.events)
        },
        argv: command(&argv)?,
        tokens: Tokens::Incron { watched: path },
        allow_loop: mask.loopable,
    })
}

/// The config line of the first line of a (possibly multi-line) string value: TOML drops a
/// newline that directly follows the opening delimiter.
fn first_line(source: &Source<'_>, span: &Range<usize>) -> usize {
    let text = source.text;
    let value = &text[span.start.min(text.len())..span.end.min(text.len())];
    let delimiter = ["'''", "\"\"\"", "'", "\""]
        .into_iter()
        .find(|d| value.starts_with(d))
        .map_or(0, str::len);
    let after = &value[delimiter..];
    let skipped = usize::from(after.starts_with('\n') || after.starts_with("\r\n"));
    source.line_at(span.start) + skipped
}
