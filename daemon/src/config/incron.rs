//! incron tables pasted verbatim (`incron = '''...'''`, `incrontab(5)`): lines are split like
//! facron's (`facron::parse_table`); this module reads incron's mask field — a comma list of
//! `IN_*` names or a number, mixed with incron's options — and finds a command named without a
//! path the way incron's shell would, but once, at load, in the fixed `PATH` every command
//! gets.
//!
//! The options as incron's own parser applies them (incron 0.5.12): a line does not loop by
//! default (`IN_NO_LOOP`, kept for old tables, says so again; `loopable=true` lets a command's
//! own changes fire its line again), watches subdirectories by default (`recursive=false`
//! stops that) and skips hidden directories (`dotdirs=true` includes them).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use triggerd_watch::{parse_events, EventMask};

/// The `PATH` commands run with (`triggerd-spawn`'s base environment), searched for a bare name.
const SEARCH_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// An incron mask field, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncronMask {
    pub events: EventMask,
    /// `loopable=true`: the command's own changes fire the line again.
    pub loopable: bool,
    pub recursive: bool,
    /// `dotdirs=true`: hidden directories below the path are watched too.
    pub dotdirs: bool,
    /// Not `IN_DONT_FOLLOW`.
    pub follow: bool,
}

/// Reads a mask field: `IN_CLOSE_WRITE,IN_MOVED_TO,recursive=false`, `12`, ...
pub fn parse_mask(field: &str) -> Result<IncronMask, String> {
    let mut mask = IncronMask {
        events: EventMask::EMPTY,
        loopable: false,
        recursive: true,
        dotdirs: false,
        follow: true,
    };
    let mut events = Vec::new();
    for token in field.split(',') {
        let flag = |value: &str| match value {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("`{token}`: expected true or false, not `{other}`")),
        };
        match token.split_once('=') {
            Some(("loopable", v)) => mask.loopable = flag(v)?,
            Some(("recursive", v)) => mask.recursive = flag(v)?,
            Some(("dotdirs", v)) => mask.dotdirs = flag(v)?,
            Some(_) => return Err(format!("`{token}` is not an incron option")),
            None if token.eq_ignore_ascii_case("IN_NO_LOOP") => mask.loopable = false,
            None if token.eq_ignore_ascii_case("IN_DONT_FOLLOW") => mask.follow = false,
            None => events.push(token),
        }
    }
    if events.is_empty() {
        return Err(format!("`{field}` names no event"));
    }
    mask.events = parse_events(&events.join(",")).map_err(|e| e.to_string())?;
    Ok(mask)
}

/// The program of an incron command: an absolute path as written, a bare name found in
/// `SEARCH_PATH` (incron runs commands through a shell, which searches `PATH`).
pub fn program(name: &str) -> Result<PathBuf, String> {
    if name.starts_with('/') {
        return Ok(PathBuf::from(name));
    }
    if name.contains('/') {
        return Err(format!(
            "`{name}`: give the command's absolute path or a bare name found in PATH"
        ));
    }
    SEARCH_PATH
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("`{name}` is not in PATH ({})", SEARCH_PATH.join(":")))
}

/// The excludes that keep a recursive line out of hidden directories (`dotdirs=false`): the
/// entries of a directory whose name starts with `.`, at any depth.
pub const HIDDEN_DIRS: &str = "**/.*/**";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_events_are_told_apart() {
        let m = parse_mask("IN_CLOSE_WRITE,IN_MOVED_TO,recursive=false,dotdirs=true").unwrap();
        assert_eq!(m.events, EventMask::CLOSE_WRITE.union(EventMask::MOVED_TO));
        assert!(!m.recursive && m.dotdirs && !m.loopable && m.follow);
        let m = parse_mask("IN_ACCESS,loopable=true,IN_DONT_FOLLOW").unwrap();
        assert!(m.loopable && m.recursive && !m.dotdirs && !m.follow);
        assert!(!parse_mask("IN_CREATE,IN_NO_LOOP").unwrap().loopable);
        // incrontab(5): 12 is IN_ATTRIB,IN_CLOSE_WRITE.
        assert_eq!(
            parse_mask("12").unwrap().events,
            EventMask::ATTRIB.union(EventMask::CLOSE_WRITE)
        );
        assert!(parse_mask("recursive=maybe,IN_OPEN").is_err());
        assert!(parse_mask("loopable=true")
            .unwrap_err()
            .contains("names no event"));
        assert!(parse_mask("IN_ONESHOT").is_err());
    }

    #[test]
    fn bare_names_are_found_in_the_fixed_path() {
        let sh = program("sh").unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(program("/opt/x").unwrap(), PathBuf::from("/opt/x"));
        assert!(program("bin/sh").is_err());
        assert!(program("no-such-command-anywhere").is_err());
    }
}
