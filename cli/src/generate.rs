//! Man pages and shell completions from a binary's clap definition. Each binary answers the
//! hidden `--generate man|bash|zsh|fish` by printing one of them; `make install` and the
//! package run it at build time.

use std::io::Write;

/// What `--generate` may ask for.
pub const KINDS: [&str; 4] = ["man", "bash", "zsh", "fish"];

/// Why `--generate` produced nothing usable; the binary prints it and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The kind asked for is not one of [`KINDS`]; it holds the word as given.
    #[error("--generate: `{0}` is not one of man, bash, zsh, fish")]
    Unknown(String),
    /// Writing the page or script failed (stdout closed, disk full, ...).
    #[error("--generate: {0}")]
    Write(#[from] std::io::Error),
}

/// When the command line is `BIN --generate KIND`, writes that to stdout and returns the exit
/// code the binary should end with; otherwise `None` and the binary goes on.
pub fn answer(command: clap::Command) -> Option<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, kind] = args.as_slice() else {
        return None;
    };
    if flag != "--generate" {
        return None;
    }
    let mut out = std::io::stdout().lock();
    match write(command, kind, &mut out).and_then(|()| out.flush().map_err(GenerateError::from)) {
        Ok(()) => Some(std::process::ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("{e}");
            Some(std::process::ExitCode::from(2))
        }
    }
}

/// Writes `kind` (a man page in roff, or a completion script) for `command`.
pub fn write(
    mut command: clap::Command,
    kind: &str,
    out: &mut dyn Write,
) -> Result<(), GenerateError> {
    use clap_complete::Shell;
    let shell = match kind {
        "man" => {
            // Section 8: all three are the administrator's tools.
            let man = clap_mangen::Man::new(command).section("8");
            return man.render(out).map_err(GenerateError::from);
        }
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => return Err(GenerateError::Unknown(other.to_string())),
    };
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        clap::Command::new("triggerd")
            .about("a per-host event daemon")
            .arg(clap::Arg::new("config").long("config"))
    }

    #[test]
    fn each_kind_is_generated_and_others_refused() {
        for kind in KINDS {
            let mut out = Vec::new();
            write(sample(), kind, &mut out).expect(kind);
            let text = String::from_utf8(out).expect("utf8");
            assert!(text.contains("config"), "{kind}: {text}");
        }
        let mut man = Vec::new();
        write(sample(), "man", &mut man).expect("man");
        assert!(String::from_utf8_lossy(&man).starts_with(".ie"), "roff");
        assert!(matches!(
            write(sample(), "pdf", &mut Vec::new()),
            Err(GenerateError::Unknown(_))
        ));
    }
}
