//! Output that fits the terminal: its width when stdout is one (`TIOCGWINSZ`; `COLUMNS`
//! when the ioctl says nothing), and cutting a line to a width by characters. Output into a
//! pipe or file has no width and is never cut.

use std::io::IsTerminal;

/// The columns of the terminal stdout writes to; `None` when it is not a terminal.
pub fn width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    window_columns(libc::STDOUT_FILENO)
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .filter(|w| *w > 0)
}

/// The window size the terminal on `fd` reports, in columns.
fn window_columns(fd: libc::c_int) -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass, which outlives the call;
    // on a descriptor that is not a terminal it fails (ENOTTY) and writes nothing.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// `text` cut to `width` characters, the last one `…` when something was cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Narrows the widest columns, one character at a time and never below their `floors` (the
/// headers), until the columns and their two-space gaps fit in `width`; a table that cannot
/// fit stays at its floors.
pub fn shrink(widths: &mut [usize], floors: &[usize], width: usize) {
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    let mut over = total(widths).saturating_sub(width);
    while over > 0 {
        let widest = widths
            .iter()
            .enumerate()
            .filter(|(i, w)| **w > floors.get(*i).copied().unwrap_or(0))
            .max_by_key(|(_, w)| **w);
        let Some((i, _)) = widest else { break };
        widths[i] -= 1;
        over -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_by_characters_and_marks_the_cut() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("exactly10!", 10), "exactly10!");
        assert_eq!(fit("ééééééé", 4), "ééé…");
        assert_eq!(fit("abc", 0), "…");
    }

    #[test]
    fn shrink_narrows_the_widest_columns_down_to_their_floors() {
        let mut widths = [4, 40, 10];
        shrink(&mut widths, &[4, 7, 5], 40);
        assert_eq!(widths, [4, 22, 10], "40 = 4 + 22 + 10 + two gaps of 2");
        let mut widths = [4, 40, 10];
        shrink(&mut widths, &[4, 7, 5], 10);
        assert_eq!(widths, [4, 7, 5], "no narrower than the floors");
        let mut widths = [3, 3];
        shrink(&mut widths, &[1, 1], 80);
        assert_eq!(widths, [3, 3], "a table that fits is left alone");
    }

    #[test]
    fn a_pipe_has_no_window_size() {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the two-element array we own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert_eq!(window_columns(fds[1]), None);
        for fd in fds {
            // SAFETY: closing the pipe's descriptors, which we own and use no more.
            unsafe { libc::close(fd) };
        }
    }
}
