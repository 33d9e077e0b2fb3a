//! Config errors: a file that cannot be read, or a list of problems each with its line.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config, at a line (1-based) of the main file or of a drop-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
    /// The drop-in file the line is in; `None`: the main config file.
    pub file: Option<PathBuf>,
}

impl Problem {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            message: message.into(),
            file: None,
        }
    }

    /// The same problem, at a line of `file` (a drop-in).
    pub fn in_file(self, file: &Path) -> Self {
        Self {
            file: Some(file.to_path_buf()),
            ..self
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", Listing { file, problems })]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn invalid(file: &Path, problems: Vec<Problem>) -> Self {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            problems,
        }
    }
}

/// `file:line: message`, one per line, the format editors and `ExecStartPre` logs understand.
struct Listing<'a> {
    file: &'a Path,
    problems: &'a [Problem],
}

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let file = p.file.as_deref().unwrap_or(self.file);
            write!(f, "{}:{}: {}", file.display(), p.line, p.message)?;
        }
        Ok(())
    }
}
