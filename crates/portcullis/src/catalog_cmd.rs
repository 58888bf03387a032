//! `portcullis catalog import-openapi`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use portcullis_catalog::openapi::{self, ImportOptions, ImportProgress};

use crate::cli::CatalogCmd;
use crate::progress::Progress;

pub fn run(cmd: CatalogCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CatalogCmd::ImportOpenapi {
            spec,
            operations,
            all_matching,
            credential,
            out,
            server,
            name_prefix,
            names,
        } => {
            let options = ImportOptions {
                operations,
                all_matching,
                credential,
                server,
                name_prefix,
                names,
            };
            let file = import(&spec, &options)?;
            std::fs::write(&out, &file).with_context(|| format!("cannot write `{}`", out.display()))?;
            let count = file.lines().filter(|l| l.starts_with("name: ")).count();
            println!(
                "wrote {count} action(s) to {}: review them, then add the file to `actions`",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--name OPERATION_ID=ACTION_NAME`, split at the last `=` (an action name has none); the
/// importer checks that the operation exists and the name is valid.
pub fn parse_name(arg: &str) -> Result<(String, String), String> {
    match arg.rsplit_once('=') {
        Some((id, name)) if !id.is_empty() && !name.is_empty() => Ok((id.to_owned(), name.to_owned())),
        _ => Err(format!(
            "expected OPERATION_ID=ACTION_NAME, e.g. `issues/create=github.open_issue`, not `{arg}`"
        )),
    }
}

/// Reads and imports `spec`, with a spinner while the document is read and parsed, then a
/// bar over the operations (cleared before anything is printed).
fn import(spec: &Path, options: &ImportOptions) -> anyhow::Result<String> {
    let progress = Progress::spinner(format!("reading `{}`", spec.display()));
    let text = std::fs::read_to_string(spec).with_context(|| format!("cannot read `{}`", spec.display()))?;
    progress.message("parsing the document");
    openapi::import_with_progress(&text, options, |step| match step {
        ImportProgress::Selected { total } => progress.switch_to_bar(total, "importing operations"),
        ImportProgress::Built { done } => progress.set(done),
        ImportProgress::Checking => progress.message("checking the actions"),
    })
    .with_context(|| format!("cannot import from `{}`", spec.display()))
}
