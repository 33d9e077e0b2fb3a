//! `include`, `exclude` and `hidden` of a `[[watch]]`: which paths below the watched path fire
//! the rule. Globs are compiled once, when the config is read, into one set each, so an event
//! costs one pass over its relative path whatever the number of patterns.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// The filter of one watch. Equal when written the same (the compiled sets follow).
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: Vec<String>,
    exclude: Vec<String>,
    hidden: bool,
    included: GlobSet,
    excluded: GlobSet,
}

impl Default for PathFilter {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
            hidden: true,
            included: GlobSet::empty(),
            excluded: GlobSet::empty(),
        }
    }
}

impl PartialEq for PathFilter {
    fn eq(&self, other: &Self) -> bool {
        (&self.include, &self.exclude, self.hidden)
            == (&other.include, &other.exclude, other.hidden)
    }
}

impl Eq for PathFilter {}

/// A pattern that does not compile: in which list (`include` or `exclude`), which one, why.
#[derive(Debug, thiserror::Error)]
#[error("`{pattern}`: {source}")]
pub struct BadGlob {
    pub key: &'static str,
    pattern: String,
    source: globset::Error,
}

impl PathFilter {
    /// `include` empty means every path; `hidden = false` skips every path with a component
    /// starting with `.`. `*` stays within one component, `**` crosses them.
    pub fn new(include: &[String], exclude: &[String], hidden: bool) -> Result<Self, BadGlob> {
        Ok(Self {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
            hidden,
            included: compile("include", include)?,
            excluded: compile("exclude", exclude)?,
        })
    }

    /// Whether nothing is filtered (the common case costs nothing per event).
    pub fn is_open(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty() && self.hidden
    }

    /// Whether an event on `path` passes, for a watch on `root`. The watched object itself,
    /// and a path outside `root` (a followed link's target), are judged by `path`'s name.
    pub fn admits(&self, root: &Path, path: &Path) -> bool {
        if self.is_open() {
            return true;
        }
        let relative = match path.strip_prefix(root) {
            Ok(r) if !r.as_os_str().is_empty() => r,
            Ok(_) => return true,
            Err(_) => match path.file_name() {
                Some(name) => Path::new(name),
                None => return true,
            },
        };
        if !self.hidden && relative.iter().any(is_hidden) {
            return false;
        }
        if !self.include.is_empty() && !self.included.is_match(relative) {
            return false;
        }
        !self.excluded.is_match(relative)
    }
}

fn is_hidden(component: &OsStr) -> bool {
    component.as_bytes().first() == Some(&b'.')
}

fn compile(key: &'static str, patterns: &[String]) -> Result<GlobSet, BadGlob> {
    let bad = |pattern: String| {
        move |source| BadGlob {
            key,
            pattern,
            source,
        }
    };
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        set.add(glob(pattern).map_err(bad(pattern.clone()))?);
    }
    set.build().map_err(bad(patterns.join(", ")))
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn filter(include: &[&str], exclude: &[&str], hidden: bool) -> PathFilter {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PathFilter::new(&own(include), &own(exclude), hidden).unwrap()
    }

    #[test]
    fn exclude_and_hidden_skip_what_they_name() {
        let f = filter(&[], &["**/*.tmp", ".git/**"], false);
        let root = Path::new("/w");
        assert!(f.admits(root, Path::new("/w/a.txt")));
        assert!(f.admits(root, Path::new("/w/sub/b")));
        assert!(!f.admits(root, Path::new("/w/a.txt.tmp")));
        assert!(!f.admits(root, Path::new("/w/sub/deep/c.tmp")));
        assert!(!f.admits(root, Path::new("/w/.git/index")));
        assert!(!f.admits(root, Path::new("/w/.hidden")));
        assert!(!f.admits(root, Path::new("/w/sub/.cache/x")));
        assert!(f.admits(root, Path::new("/w")), "the watched path itself");
    }

    #[test]
    fn include_keeps_only_matching_paths_and_star_stays_in_one_component() {
        let f = filter(&["*.log"], &[], true);
        let root = Path::new("/w");
        assert!(f.admits(root, Path::new("/w/access.log")));
        assert!(!f.admits(root, Path::new("/w/sub/access.log")));
        assert!(!f.admits(root, Path::new("/w/access.txt")));
        assert!(
            f.admits(root, Path::new("/w/.x.log")),
            "hidden files pass by default"
        );
        let deep = filter(&["**/*.log"], &[], true);
        assert!(deep.admits(root, Path::new("/w/sub/access.log")));
    }

    #[test]
    fn names_that_are_not_utf8_are_matched_as_bytes() {
        let f = filter(&["*.log"], &[], true);
        let name = OsString::from_vec(b"/w/caf\xe9.log".to_vec());
        assert!(f.admits(Path::new("/w"), Path::new(&name)));
    }

    #[test]
    fn a_bad_glob_names_itself() {
        let e = PathFilter::new(&[], &["ok".to_string(), "a[".to_string()], true).unwrap_err();
        assert!(e.to_string().starts_with("`a[`"), "{e}");
        assert_eq!(e.key, "exclude");
    }

    #[test]
    fn filters_are_equal_when_written_the_same() {
        assert_eq!(filter(&["*.log"], &[], true), filter(&["*.log"], &[], true));
        assert_ne!(
            filter(&["*.log"], &[], true),
            filter(&["*.log"], &[], false)
        );
        assert!(PathFilter::default().is_open());
    }
}
