//! facron tables pasted verbatim: `<path> <masks> <command> [args...]` per line, fields split on
//! blanks, `'` or `"` quoting a field, `#` starting a comment line. Masks are facron's (and
//! incron's) names joined by `|`, with `,` starting another group — every group is ORed, so
//! `FAN_CLOSE` and `FAN_ALL_EVENTS` fire as their names promise. An incron table has the same
//! line shape, so `incron` splits its lines here too and reads only its mask its own way.

use super::Problem;

/// One table line, split into fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacronLine {
    /// 0-based index of the line within the table text.
    pub index: usize,
    pub path: String,
    pub masks: String,
    pub argv: Vec<String>,
}

/// Splits a facron (or incron: `kind`) table; `first_line` is the config line of the table's
/// first line.
pub fn parse_table(table: &str, first_line: usize, kind: &str) -> (Vec<FacronLine>, Vec<Problem>) {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for (index, text) in table.lines().enumerate() {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let line = first_line + index;
        match split_fields(trimmed) {
            Err(message) => problems.push(Problem::new(line, format!("{kind}: {message}"))),
            Ok(fields) if fields.len() < 3 => problems.push(Problem::new(
                line,
                format!("{kind}: a line needs `<path> <masks> <command> [args...]`"),
            )),
            Ok(mut fields) => {
                let argv = fields.split_off(2);
                let masks = fields.pop().unwrap_or_default();
                let path = fields.pop().unwrap_or_default();
                lines.push(FacronLine {
                    index,
                    path,
                    masks,
                    argv,
                });
            }
        }
    }
    (lines, problems)
}

/// Splits on blanks; a field may be quoted with `'` or `"` (no escapes, as in facron).
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(fields);
        };
        let mut field = String::new();
        if first == '\'' || first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some(c) if c == first => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unclosed {first} quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                field.push(c);
            }
        }
        fields.push(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_with_quotes_and_skips_comments() {
        let table = "\n# comment\n/srv/a FAN_CLOSE_WRITE /bin/echo 'two words' \"$$\"\n\n/b X\n";
        let (lines, problems) = parse_table(table, 10, "facron");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].index, 2);
        assert_eq!(lines[0].path, "/srv/a");
        assert_eq!(lines[0].masks, "FAN_CLOSE_WRITE");
        assert_eq!(lines[0].argv, ["/bin/echo", "two words", "$$"]);
        assert_eq!(
            problems,
            [Problem::new(
                14,
                "facron: a line needs `<path> <masks> <command> [args...]`"
            )]
        );
    }

    #[test]
    fn unclosed_quote_is_reported_with_its_line() {
        let (_, problems) = parse_table("/a FAN_OPEN /bin/x 'oops", 3, "incron");
        assert_eq!(problems[0].line, 3);
        assert!(problems[0].message.starts_with("incron: unclosed"));
    }
}
