//! Small shared pieces: durations, JSON output, confirmation, timestamps.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{CliError, Result};

/// A duration as people write it: `10s`, `500ms`, `1m30s`, or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 10s, 500ms, 1m)"))
}

/// Prints `value` as one line of JSON on stdout.
pub(crate) fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let line = serde_json::to_string(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Prints one line on stdout and flushes (watches print as events arrive).
pub(crate) fn print_line(line: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// RFC 3339 in UTC, for people and JSON alike.
pub(crate) fn rfc3339(t: impl Into<time::OffsetDateTime>) -> String {
    t.into()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// RFC 3339 of a system time, if it is after the epoch.
pub(crate) fn system_time(t: SystemTime) -> String {
    rfc3339(t)
}

/// Asks `question` on the terminal unless `yes`; refuses without a terminal to ask on.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::msg(format!(
            "{question}: not confirmed (no terminal to ask on; pass --yes)"
        )));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(CliError::msg("not confirmed; nothing done")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }
}
