//! `triggerd.conf(5)` from the README's configuration reference, so the two are one text: a
//! small Markdown → roff rendering of what that section uses (headings, paragraphs, lists,
//! tables, code blocks, inline code).

/// The roff page for the part of `markdown` under the `## {heading}` heading.
pub fn page(markdown: &str, heading: &str, name: &str, section: &str, summary: &str) -> String {
    let mut out = format!(
        ".TH {} {section}\n.SH NAME\n{name} \\- {}\n",
        name.to_uppercase(),
        escape(summary)
    );
    let mut inside = false;
    let mut code = false;
    for line in markdown.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            inside = title.trim() == heading;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with("```") {
            out.push_str(if code { ".fi\n" } else { ".nf\n" });
            code = !code;
            continue;
        }
        if code {
            out.push_str(&escape(line));
            out.push('\n');
        } else if let Some(title) = line
            .strip_prefix("### ")
            .or_else(|| line.strip_prefix("#### "))
        {
            out.push_str(&format!(".SH {}\n", escape(&plain(title)).to_uppercase()));
        } else if line.starts_with('|') {
            table_row(line, &mut out);
        } else if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else if let Some(item) = line.strip_prefix("- ") {
            out.push_str(&format!(".IP \\(bu 2\n{}\n", escape(&plain(item))));
        } else {
            out.push_str(&escape(&plain(line.trim_start())));
            out.push('\n');
        }
    }
    out
}

/// A table row as a tagged paragraph: the first cell the tag, the others its text. The
/// header row and the `|---|` rule are dropped.
fn table_row(line: &str, out: &mut String) {
    let cells: Vec<&str> = line
        .trim()
        .trim_matches('|')
        .split(" | ")
        .map(str::trim)
        .collect();
    let header = cells
        .iter()
        .any(|c| *c == "key" || *c == "token" || c.starts_with("key ("));
    if header
        || cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == '|'))
    {
        return;
    }
    let Some((first, rest)) = cells.split_first() else {
        return;
    };
    out.push_str(&format!(".TP\n.B {}\n", escape(&plain(first))));
    out.push_str(&escape(&plain(&rest.join(" \u{2014} "))));
    out.push('\n');
}

/// Inline Markdown reduced to its text.
fn plain(text: &str) -> String {
    let mut s = text.replace("**", "").replace('`', "").replace("\\|", "|");
    // [text](target) → text
    while let (Some(open), Some(mid)) = (s.find('['), s.find("](")) {
        let Some(close) = s[mid..].find(')').map(|i| mid + i) else {
            break;
        };
        if open > mid {
            break;
        }
        s = format!("{}{}{}", &s[..open], &s[open + 1..mid], &s[close + 1..]);
    }
    s
}

/// Backslashes doubled; a line may not start with a control character.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_becomes_a_page() {
        let md = "# x\n## Other\nno\n## Configuration reference\n### `[daemon]`\n\n| key | default | meaning |\n|---|---|---|\n| `control` | `/run/x` | the socket |\n\n```toml\n.dot = 1\n```\n- a [link](docs/x.md)\n## Next\nno\n";
        let page = page(
            md,
            "Configuration reference",
            "triggerd.conf",
            "5",
            "config",
        );
        assert!(page.starts_with(".TH TRIGGERD.CONF 5\n"));
        assert!(page.contains(".SH [DAEMON]\n"));
        assert!(page.contains(".TP\n.B control\n/run/x \u{2014} the socket\n"));
        assert!(page.contains(".nf\n\\&.dot = 1\n.fi\n"));
        assert!(page.contains(".IP \\(bu 2\na link\n"));
        assert!(!page.contains("no\n"), "{page}");
    }
}
