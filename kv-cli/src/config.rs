//! `kvtk config …`: a configuration document (or a prefix of field keys) written through
//! kvtk-config's validated, compare-and-set writer, and followed through its reader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kvtk_config::{flatten, ConfigEvent, ConfigReader, ConfigWriter, Source, Written};
use kvtk_core::{Bucket, BucketConfig, Kv, Revision};
use nix::sys::signal::Signal;
use serde_json::{json, Map, Value};

use crate::child::{self, exit_code, Child, Signals};
use crate::connect::{connect, ConnectArgs};
use crate::error::{one_line, CliError, Result};
use crate::kv::parse_revision;
use crate::util::{parse_duration, print_json, print_line};

/// The environment variable with the revision the command's configuration came from.
pub(crate) const ENV_REVISION: &str = "KVTK_CONFIG_REVISION";
/// The environment variable with the path of the rendered file (`exec --file`).
pub(crate) const ENV_FILE: &str = "KVTK_CONFIG_FILE";

#[derive(clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(clap::Args)]
struct Target {
    /// Bucket of the configuration (created with history 10 on the first write)
    #[arg(
        long,
        default_value = "config",
        env = "KVTK_CONFIG_BUCKET",
        global = true
    )]
    bucket: String,
    /// Key of the configuration document
    #[arg(long, default_value = "config", env = "KVTK_CONFIG_KEY", global = true)]
    key: String,
    /// Keep one field per key under PREFIX instead of one document under --key
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// Refuse (and, for watch and exec, ignore) values this JSON Schema rejects
    #[arg(long, value_name = "FILE", global = true)]
    schema: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum ConfigCmd {
    /// Print the configuration, or the value at a dotted PATH
    Get {
        /// Dotted path, such as db.pool_size
        path: Option<String>,
        /// Print JSON with the revision
        #[arg(long)]
        json: bool,
    },
    /// Set the value at a dotted PATH (VALUE is JSON, else a string)
    Set {
        /// Dotted path, such as db.pool_size
        path: String,
        /// The value: JSON (10, true, {"a":1}) or else taken as a string
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Replace the configuration with a JSON file (validated first; refused as a whole)
    Apply {
        /// A JSON file
        file: PathBuf,
    },
    /// Edit in $VISUAL or $EDITOR; validated, written only if nobody wrote meanwhile
    Edit,
    /// Every revision the bucket still holds, oldest first
    History {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// The fields that differ between two revisions
    Diff {
        /// The older revision
        #[arg(value_parser = parse_revision)]
        from: Revision,
        /// The newer revision
        #[arg(value_parser = parse_revision)]
        to: Revision,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Write the configuration as it was at REV (validated again)
    Rollback {
        /// The revision to restore
        #[arg(value_parser = parse_revision)]
        rev: Revision,
    },
    /// Print the configuration, then every validated change
    Watch {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Run a command with the configuration rendered to a file or the environment;
    /// restart it (or signal it) on every validated change, not on an identical rewrite
    Exec(ExecArgs),
}

#[derive(clap::Args)]
struct ExecArgs {
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

type Validator = Arc<dyn Fn(&Value) -> std::result::Result<(), String> + Send + Sync>;

pub(crate) async fn run(args: ConfigArgs, conn: &ConnectArgs) -> Result<u8> {
    let t = &args.target;
    let validator = load_schema(t.schema.as_deref())?;
    let kv = connect(conn).await?;
    let source = match &t.prefix {
        Some(p) => Source::prefix(p),
        None => Source::document(&t.key),
    };
    let writes = matches!(
        args.cmd,
        ConfigCmd::Set { .. }
            | ConfigCmd::Apply { .. }
            | ConfigCmd::Edit
            | ConfigCmd::Rollback { .. }
    );
    let bucket = match bucket(&kv, &t.bucket, writes).await {
        Ok(b) => b,
        // Nobody configured anything yet: reads show the empty document.
        Err(e) if !writes && e.kind() == kvtk_core::ErrorKind::BucketNotFound => {
            return missing_bucket(args.cmd);
        }
        Err(e) => return Err(e.into()),
    };
    let writer = writer(bucket.clone(), source.clone(), validator.clone());
    match args.cmd {
        ConfigCmd::Get { path, json } => get(&writer, path.as_deref(), json).await,
        ConfigCmd::Set { path, value } => {
            let v = parse_value(&value);
            report(writer.update(|cur| set_path(cur, &path, v.clone())).await?)
        }
        ConfigCmd::Apply { file } => report(writer.set(&read_json(&file)?).await?),
        ConfigCmd::Edit => edit(&writer).await,
        ConfigCmd::History { json } => history(&writer, json).await,
        ConfigCmd::Diff { from, to, json } => diff(&writer, from, to, json).await,
        ConfigCmd::Rollback { rev } => report(writer.rollback(rev).await?),
        ConfigCmd::Watch { json } => watch(bucket, source, validator, json).await,
        ConfigCmd::Exec(e) => exec(bucket, source, validator, e).await,
    }
}

async fn bucket(kv: &Kv, name: &str, create: bool) -> Result<Bucket, kvtk_core::Error> {
    if !create {
        return kv.open(name).await;
    }
    let cfg = BucketConfig::new(name).history(10).atomic_batches(true);
    kv.create_or_open(cfg).await
}

/// A read of a bucket not made yet: what the same read of an empty bucket says (the empty
/// document, no history); following it (`watch`, `exec`) needs the bucket.
fn missing_bucket(cmd: ConfigCmd) -> Result<u8> {
    match cmd {
        ConfigCmd::Get { path: None, json } => {
            let empty = Value::Object(Map::new());
            if json {
                print_json(&json!({ "revision": null, "value": empty }))?;
            } else {
                print_line(human(&empty)?)?;
            }
            Ok(0)
        }
        ConfigCmd::Get { path: Some(p), .. } => Err(CliError::msg(format!("no value at {p}"))),
        ConfigCmd::History { json: true } => {
            print_json(&Vec::<Value>::new())?;
            Ok(0)
        }
        ConfigCmd::History { json: false } => Ok(0),
        ConfigCmd::Diff { from, .. } => Err(CliError::msg(format!(
            "revision {from} is not in the history"
        ))),
        _ => Err(CliError::msg("the configuration bucket does not exist yet")),
    }
}

fn writer(bucket: Bucket, source: Source, validator: Option<Validator>) -> ConfigWriter<Value> {
    let w = ConfigWriter::<Value>::new(bucket, source);
    match validator {
        Some(v) => w.validate(move |value: &Value| v(value)),
        None => w,
    }
}

/// The schema's check, or none.
fn load_schema(path: Option<&Path>) -> Result<Option<Validator>> {
    let Some(path) = path else { return Ok(None) };
    let schema: Value = read_json(path)?;
    let compiled = jsonschema::validator_for(&schema).map_err(|e| {
        CliError::msg(format!(
            "{} is not a valid JSON Schema: {e}",
            path.display()
        ))
    })?;
    Ok(Some(Arc::new(move |v: &Value| {
        let errors: Vec<String> = compiled
            .iter_errors(v)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { &at })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("schema: {}", errors.join("; ")))
        }
    })))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::msg(format!("cannot read {}: {}", path.display(), e.kind())))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::msg(format!("{} is not valid JSON: {e}", path.display())))
}

/// A command-line value: JSON when it parses, else a string.
fn parse_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

/// Sets `path` (dotted) in `root`, making objects on the way.
fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    for part in path.split('.') {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        cur = map.entry(part.to_string()).or_insert(Value::Null);
    }
    *cur = value;
}

fn get_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, part| v.get(part))
}

fn report(w: Written) -> Result<u8> {
    let rev = w
        .revision
        .map_or_else(|| "none".to_string(), |r| r.to_string());
    if w.changed.is_empty() {
        print_line(format!("unchanged (revision {rev})"))?;
    } else {
        // The document's root is "" when a first write created it: name the fields only.
        let fields: Vec<&str> = w
            .changed
            .iter()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .collect();
        let fields = if fields.is_empty() {
            "the whole document".to_string()
        } else {
            fields.join(", ")
        };
        print_line(format!("revision {rev}: {fields}"))?;
    }
    Ok(0)
}

/// A value for people: strings bare, anything else as pretty JSON.
fn human(v: &Value) -> Result<String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other)?,
    })
}

async fn get(writer: &ConfigWriter<Value>, path: Option<&str>, json: bool) -> Result<u8> {
    let (value, rev) = writer.get().await?;
    let v = match path {
        Some(p) => get_path(&value, p)
            .ok_or_else(|| CliError::msg(format!("no value at {p}")))?
            .clone(),
        None => value,
    };
    if json {
        print_json(&json!({ "revision": rev.map(Revision::get), "value": v }))?;
    } else {
        print_line(human(&v)?)?;
    }
    Ok(0)
}

async fn history(writer: &ConfigWriter<Value>, json: bool) -> Result<u8> {
    let versions = writer.history().await?;
    let rows: Vec<Value> = versions
        .iter()
        .map(|v| match &v.value {
            Ok(value) => json!({ "revision": v.revision.get(), "value": value }),
            Err(r) => json!({ "revision": v.revision.get(), "rejected": r.message() }),
        })
        .collect();
    if json {
        print_json(&rows)?;
        return Ok(0);
    }
    for v in &versions {
        match &v.value {
            Ok(value) => print_line(format!("{}  {value}", v.revision))?,
            Err(r) => print_line(format!("{}  (not valid: {})", v.revision, r.message()))?,
        }
    }
    Ok(0)
}

/// The configuration at `rev` from the history.
async fn at(writer: &ConfigWriter<Value>, rev: Revision) -> Result<Value> {
    let v = writer
        .history()
        .await?
        .into_iter()
        .find(|v| v.revision == rev)
        .ok_or_else(|| CliError::msg(format!("revision {rev} is not in the history")))?;
    v.value
        .map_err(|r| CliError::msg(format!("revision {rev} is not valid: {}", r.message())))
}

async fn diff(
    writer: &ConfigWriter<Value>,
    from: Revision,
    to: Revision,
    json: bool,
) -> Result<u8> {
    let (old, new) = (
        flatten(&at(writer, from).await?),
        flatten(&at(writer, to).await?),
    );
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let changes: Vec<(&String, Option<&Value>, Option<&Value>)> = paths
        .into_iter()
        .map(|p| (p, old.get(p), new.get(p)))
        .filter(|(_, a, b)| a != b)
        .collect();
    if json {
        let rows: Vec<Value> = changes
            .iter()
            .map(|(p, a, b)| json!({ "path": p, "old": a, "new": b }))
            .collect();
        print_json(&rows)?;
        return Ok(0);
    }
    let show = |v: Option<&Value>| v.map_or_else(|| "(absent)".to_string(), Value::to_string);
    for (p, a, b) in changes {
        print_line(format!("{p}: {} -> {}", show(a), show(b)))?;
    }
    Ok(0)
}

async fn edit(writer: &ConfigWriter<Value>) -> Result<u8> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".to_string());
    let (mut current, _) = writer.get().await?;
    for _ in 0..5 {
        let text = format!("{}\n", serde_json::to_string_pretty(&current)?);
        let file = tempfile::Builder::new()
            .prefix("kvtk-config-")
            .suffix(".json")
            .tempfile()?;
        std::fs::write(file.path(), &text)?;
        run_editor(&editor, file.path()).await?;
        let edited_text = std::fs::read_to_string(file.path())?;
        if edited_text == text {
            print_line("no changes")?;
            return Ok(0);
        }
        let keep = |file: tempfile::NamedTempFile, why: String| -> CliError {
            match file.keep() {
                Ok((_, p)) => CliError::msg(format!(
                    "{why}; nothing written (your edit is in {})",
                    p.display()
                )),
                Err(_) => CliError::msg(format!("{why}; nothing written")),
            }
        };
        let edited: Value = match serde_json::from_str(&edited_text) {
            Ok(v) => v,
            Err(e) => return Err(keep(file, format!("the edited text is not JSON: {e}"))),
        };
        let seen = current.clone();
        let mut conflict = false;
        let written = writer
            .update(|cur| {
                // Compare-and-set on what the editor showed: a value written meanwhile
                // is never overwritten blindly.
                conflict = *cur != seen;
                if !conflict {
                    *cur = edited.clone();
                }
            })
            .await;
        match written {
            Err(e) => return Err(keep(file, one_line(&e))),
            Ok(w) if !conflict => return report(w),
            Ok(_) => {
                let (now, rev) = writer.get().await?;
                let kept = file
                    .keep()
                    .map(|(_, p)| p.display().to_string())
                    .unwrap_or_default();
                eprintln!(
                    "kvtk: the configuration changed while you edited (now revision {}); your edit is in {kept}; editing the new value",
                    rev.map_or_else(|| "none".into(), |r| r.to_string())
                );
                current = now;
            }
        }
    }
    Err(CliError::msg(
        "the configuration kept changing while you edited; nothing written",
    ))
}

async fn run_editor(editor: &str, path: &Path) -> Result<()> {
    // Through sh, so EDITOR may carry arguments ("code --wait").
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .await
        .map_err(|e| CliError::msg(format!("cannot start the editor: {}", e.kind())))?;
    if !status.success() {
        return Err(CliError::msg(format!(
            "the editor exited with {status}; nothing written"
        )));
    }
    Ok(())
}

async fn reader(
    bucket: Bucket,
    source: Source,
    validator: Option<Validator>,
) -> Result<ConfigReader<Value>> {
    let b = ConfigReader::<Value>::builder(source).bucket(bucket);
    let b = match validator {
        Some(v) => b.validate(move |value: &Value| v(value)),
        None => b,
    };
    Ok(b.await?)
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

async fn watch(
    bucket: Bucket,
    source: Source,
    validator: Option<Validator>,
    json: bool,
) -> Result<u8> {
    let reader = reader(bucket, source, validator).await?;
    let mut events = reader.events();
    let first = reader.current();
    change_line(first.revision(), first.json(), json)?;
    let mut signals = Signals::new()?;
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

async fn exec(
    bucket: Bucket,
    source: Source,
    validator: Option<Validator>,
    e: ExecArgs,
) -> Result<u8> {
    let reader = reader(bucket, source, validator).await?;
    let mut events = reader.events();
    let mut signals = Signals::new()?;
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
    fn paths_set_and_get() {
        let mut v = json!(null);
        set_path(&mut v, "db.pool", json!(4));
        set_path(&mut v, "name", json!("x"));
        assert_eq!(v, json!({"db": {"pool": 4}, "name": "x"}));
        assert_eq!(get_path(&v, "db.pool"), Some(&json!(4)));
        assert_eq!(get_path(&v, "db.none"), None);
    }

    #[test]
    fn values_are_json_or_strings() {
        assert_eq!(parse_value("10"), json!(10));
        assert_eq!(parse_value("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(parse_value("hello"), json!("hello"));
    }

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
