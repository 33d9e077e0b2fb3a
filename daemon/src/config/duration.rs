//! Durations as people write them in the config: "200ms", "5s", "1m 30s", "2h".

use std::time::Duration;

/// Parses a human duration; a bare number is rejected so units are never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit (write e.g. \"{text}s\" or \"{text}ms\")"
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_required_and_understood() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
