//! One-line errors and the documented exit codes.

use std::error::Error as StdError;
use std::fmt;
use std::process::ExitCode;

/// The exit codes of `kvtk` (also in `kvtk --help` and kv-cli/README.md). `lock`, `elect` and
/// `config exec` otherwise exit with their command's status (128 + N when it died of signal N).
pub(crate) mod code {
    /// Any other error: invalid input, a missing bucket or key, a refused value.
    pub(crate) const ERROR: u8 = 1;
    /// The command line could not be parsed.
    pub(crate) const USAGE: u8 = 2;
    /// `doctor`: a finding of severity error (the toolkit cannot keep a promise there).
    pub(crate) const UNSAFE: u8 = 3;
    /// The server could not be reached, did not answer in time, or refused the credentials
    /// or a permission (sysexits' `EX_UNAVAILABLE`).
    pub(crate) const CONNECTION: u8 = 69;
    /// A bug in kvtk (it panicked); please report it.
    pub(crate) const INTERNAL: u8 = 70;
    /// `lock`: the lock was not acquired within `--wait`, or at once with `--no-wait`
    /// (sysexits' `EX_TEMPFAIL`).
    pub(crate) const NOT_ACQUIRED: u8 = 75;
    /// `lock`: the lock was lost while the command ran; the command was stopped.
    pub(crate) const LOCK_LOST: u8 = 76;
    /// The command was found but could not be started (as in shells).
    pub(crate) const CANNOT_RUN: u8 = 126;
    /// The command was not found (as in shells).
    pub(crate) const NOT_FOUND: u8 = 127;
}

/// What went wrong, said in one line, and the exit code it maps to.
#[derive(Debug)]
pub(crate) struct CliError {
    code: u8,
    message: String,
}

pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// An error with exit code `code`.
    pub(crate) fn new(code: u8, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// An error with the general exit code.
    pub(crate) fn msg(message: impl Into<String>) -> CliError {
        CliError::new(code::ERROR, message)
    }

    /// The same error, `what` said first (`what: message`).
    pub(crate) fn within(mut self, what: impl fmt::Display) -> CliError {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The error and its causes on one line. The library errors print one layer each, so
/// joining the chain repeats little; a cause already contained in the text is skipped, and a
/// cause that says everything the text said so far (kvtk-locks' "permission denied" over
/// kvtk-core's "put \"k\": permission denied: publish to …") replaces it.
pub(crate) fn one_line(e: &(dyn StdError + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if text.contains(&line) {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The exit code for a kvtk-core error kind: connection trouble and refused permissions get
/// their own.
fn code_for(kind: Option<kvtk_core::ErrorKind>) -> u8 {
    use kvtk_core::ErrorKind as K;
    match kind {
        Some(K::Connection | K::Timeout | K::Unavailable | K::PermissionDenied) => code::CONNECTION,
        _ => code::ERROR,
    }
}

impl From<kvtk_core::Error> for CliError {
    fn from(e: kvtk_core::Error) -> CliError {
        CliError::new(code_for(Some(e.kind())), one_line(&e))
    }
}

impl From<kvtk_locks::Error> for CliError {
    fn from(e: kvtk_locks::Error) -> CliError {
        CliError::new(code_for(e.core_kind()), one_line(&e))
    }
}

impl From<kvtk_leader::Error> for CliError {
    fn from(e: kvtk_leader::Error) -> CliError {
        CliError::new(code_for(e.core_kind()), one_line(&e))
    }
}

impl From<kvtk_config::Error> for CliError {
    fn from(e: kvtk_config::Error) -> CliError {
        let code = match e.kind() {
            kvtk_config::ErrorKind::Unavailable => code::CONNECTION,
            _ => code_for(e.core_kind()),
        };
        CliError::new(code, one_line(&e))
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::msg(one_line(&e))
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> CliError {
        CliError::msg(one_line(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl StdError for Layer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn StdError + 'static))
        }
    }

    #[test]
    fn one_line_joins_causes_once_and_removes_newlines() {
        let e = Layer(
            "cannot connect",
            Some(Box::new(Layer(
                "io error:\n refused",
                Some(Box::new(Layer("refused", None))),
            ))),
        );
        assert_eq!(one_line(&e), "cannot connect: io error: refused");
        let e = Layer(
            "permission denied",
            Some(Box::new(Layer(
                "put \"k\": permission denied: publish to \"$KV.b.k\"",
                None,
            ))),
        );
        assert_eq!(
            one_line(&e),
            "put \"k\": permission denied: publish to \"$KV.b.k\""
        );
    }
}
