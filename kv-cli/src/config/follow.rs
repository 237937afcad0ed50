//! `kvtk config watch` and `exec`: kvtk-config's reader, each validated change printed or
//! handed to a command (a restart, or a signal with the file rendered again).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use kvtk_config::{flatten, ConfigEvent, ConfigEvents, ConfigReader, Source};
use kvtk_core::{Bucket, Revision};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::schema::Validator;
use crate::child::{self, exit_code, Child, Signals};
use crate::error::{one_line, CliError, Result};
use crate::util::{parse_duration, print_json, print_line};

/// The environment variable with the revision the command's configuration came from.
pub(super) const ENV_REVISION: &str = "KVTK_CONFIG_REVISION";
/// The environment variable with the path of the rendered file (`exec --file`).
pub(super) const ENV_FILE: &str = "KVTK_CONFIG_FILE";

#[derive(clap::Args)]
pub(super) struct ExecArgs {
    /// Render the configuration as JSON to FILE (replaced atomically on each change)
    #[arg(long, value_name = "FILE", required_unless_present = "env")]
    file: Option<PathBuf>,
    /// Render it into environment variables, PREFIX and the path (db.pool_size: PREFIX_DB_POOL_SIZE)
    #[arg(long, value_name = "PREFIX")]
    env: Option<String>,
    /// On a change, send this signal (e.g. HUP) instead of restarting; needs --file
    #[arg(long, value_name = "SIGNAL", value_parser = parse_signal, requires = "file", conflicts_with = "env")]
    signal: Option<Signal>,
    /// How long the command has to exit after SIGTERM before SIGKILL, on a restart
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    grace: Duration,
    /// The command and its arguments, after --
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_signal(s: &str) -> std::result::Result<Signal, String> {
    let name = s.to_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("{s:?} is not a signal name (HUP, USR1, …)"))
}

/// The configuration `watch` and `exec` follow.
pub(super) struct Followed {
    pub(super) bucket: Bucket,
    pub(super) source: Source,
    pub(super) validator: Option<Validator>,
}

/// The reader `watch` and `exec` follow, its events, and the signals kvtk catches meanwhile.
async fn follow(what: Followed) -> Result<(ConfigReader<Value>, ConfigEvents<Value>, Signals)> {
    let b = ConfigReader::<Value>::builder(what.source).bucket(what.bucket);
    let b = match what.validator {
        Some(v) => b.validate(move |value: &Value| v(value)),
        None => b,
    };
    let reader = b.await?;
    let events = reader.events();
    Ok((reader, events, Signals::new()?))
}

fn change_line(rev: Option<Revision>, value: &Value, json: bool) -> Result<()> {
    let rev = rev.map(Revision::get);
    if json {
        print_json(&json!({ "revision": rev, "value": value }))
    } else {
        let r = rev.map_or_else(|| "none".to_string(), |r| r.to_string());
        print_line(format!("{r}  {value}"))
    }
}

pub(super) async fn watch(what: Followed, json: bool) -> Result<u8> {
    let (reader, mut events, mut signals) = follow(what).await?;
    let first = reader.current();
    change_line(first.revision(), first.json(), json)?;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ConfigEvent::Changed(c)) => change_line(c.revision, c.new.json(), json)?,
                Some(ConfigEvent::Rejected(r)) => eprintln!("kvtk: {}", one_line(&r)),
                Some(_) => {
                    let s = reader.current();
                    change_line(s.revision(), s.json(), json)?;
                }
                None => return Err(CliError::msg("the configuration watch ended")),
            },
            sig = signals.recv() => if crate::elect::stops(sig) {
                reader.shutdown().await;
                return Ok(child::signal_exit(sig));
            },
        }
    }
}

/// Environment variables for `value` under `prefix`: `db.pool_size` is `PREFIX_DB_POOL_SIZE`;
/// strings bare, anything else as JSON.
fn env_vars(prefix: &str, value: &Value) -> Vec<(String, String)> {
    flatten(value)
        .into_iter()
        .map(|(path, v)| {
            let name = format!("{prefix}_{}", path.replace(['.', '-'], "_")).to_uppercase();
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (name, text)
        })
        .collect()
}

/// Writes `value` to `path` atomically (a temporary file renamed over it).
fn render_file(path: &Path, value: &Value) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), serde_json::to_vec_pretty(value)?)?;
    tmp.persist(path).map_err(|e| {
        CliError::msg(format!(
            "cannot write {}: {}",
            path.display(),
            e.error.kind()
        ))
    })?;
    Ok(())
}

fn start(e: &ExecArgs, rev: Option<Revision>, value: &Value) -> Result<Child> {
    let mut env = vec![(
        ENV_REVISION.to_string(),
        rev.map(|r| r.to_string()).unwrap_or_default(),
    )];
    if let Some(f) = &e.file {
        render_file(f, value)?;
        env.push((ENV_FILE.to_string(), f.display().to_string()));
    }
    if let Some(p) = &e.env {
        env.extend(env_vars(p, value));
    }
    child::spawn(&e.command, &env)
}

pub(super) async fn exec(what: Followed, e: ExecArgs) -> Result<u8> {
    let (reader, mut events, mut signals) = follow(what).await?;
    let mut shown = reader.current();
    let mut child = start(&e, shown.revision(), shown.json())?;
    loop {
        tokio::select! {
            status = child.wait() => {
                reader.shutdown().await;
                return Ok(exit_code(status?));
            }
            ev = events.next() => {
                if let Some(ConfigEvent::Rejected(r)) = &ev {
                    eprintln!("kvtk: kept the running configuration: {}", one_line(r));
                }
                if ev.is_none() {
                    return Err(CliError::msg("the configuration watch ended"));
                }
                // The reader reports a change only when the decoded value differs; the
                // comparison also covers a subscriber that lagged.
                let now = reader.current();
                if now.json() == shown.json() {
                    continue;
                }
                shown = now;
                match (e.signal, &e.file) {
                    (Some(sig), Some(f)) => {
                        render_file(f, shown.json())?;
                        child.signal(sig);
                    }
                    _ => {
                        child.stop(e.grace).await?;
                        child = start(&e, shown.revision(), shown.json())?;
                    }
                }
            }
            sig = signals.recv() => child.signal(sig),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        let vars = env_vars("APP", &json!({"db": {"pool_size": 4}, "name": "x"}));
        assert!(vars.contains(&("APP_DB_POOL_SIZE".into(), "4".into())));
        assert!(vars.contains(&("APP_NAME".into(), "x".into())));
    }

    #[test]
    fn signals_by_name() {
        assert_eq!(parse_signal("hup"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("SIGUSR1"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("nope").is_err());
    }
}
