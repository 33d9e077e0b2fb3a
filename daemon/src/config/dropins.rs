//! Drop-in files: every `*.conf` in the drop-in directory (`[daemon] dropins`; by default
//! `NAME.d` beside the config file, `/etc/triggerd.d` for `/etc/triggerd.conf`), read after
//! the main file in name order, on start and on every reload. A drop-in adds rule tables; the
//! daemon's own settings stay in the main file. A missing directory means no drop-ins; files
//! whose name starts with `.` are skipped.

use std::path::{Path, PathBuf};

use super::raw::{self, RawFile};
use super::validate::DropIn;
use super::Problem;

/// The drop-in directory for the config `file`: `explicit` (`[daemon] dropins`, which
/// validation requires to be absolute; a relative one reads nothing) or `NAME.d` beside it.
pub fn directory(file: &Path, explicit: Option<&str>) -> Option<PathBuf> {
    match explicit {
        Some(dir) => Path::new(dir).is_absolute().then(|| PathBuf::from(dir)),
        None => Some(file.with_extension("d")),
    }
}

/// Reads and parses every drop-in in `dir`, in name order. A file that cannot be read or
/// parsed is a problem at its own name; the others are still returned.
pub fn read(dir: &Path) -> (Vec<DropIn>, Vec<Problem>) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf") && !hidden(p) && p.is_file())
            .collect(),
        Err(_) => return (Vec::new(), Vec::new()),
    };
    files.sort();
    let mut dropins = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem::new(1, format!("cannot read: {e}")).in_file(&file));
                continue;
            }
        };
        match raw::parse(&text) {
            Ok(raw) => dropins.push(DropIn { file, text, raw }),
            Err(p) => problems.push(p.in_file(&file)),
        }
    }
    (dropins, problems)
}

/// An editor's or package manager's leftover (`.name.conf`): never read.
fn hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().first() == Some(&b'.'))
}

/// `[daemon] dropins` as written, read before validation (which checks it).
pub fn explicit(raw: &RawFile) -> Option<&str> {
    raw.daemon.as_ref()?.get_ref().dropins.as_deref()
}
