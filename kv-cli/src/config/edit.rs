//! `kvtk config edit`: the value in $VISUAL or $EDITOR, written only if nobody wrote
//! meanwhile.

use std::path::Path;

use kvtk_config::ConfigWriter;
use serde_json::Value;

use super::read::report;
use crate::error::{one_line, CliError, Result};
use crate::util::print_line;

pub(super) async fn edit(writer: &ConfigWriter<Value>) -> Result<u8> {
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

/// The error that says nothing was written and keeps the edit's file for the user.
fn keep(file: tempfile::NamedTempFile, why: String) -> CliError {
    match file.keep() {
        Ok((_, p)) => CliError::msg(format!(
            "{why}; nothing written (your edit is in {})",
            p.display()
        )),
        Err(_) => CliError::msg(format!("{why}; nothing written")),
    }
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
