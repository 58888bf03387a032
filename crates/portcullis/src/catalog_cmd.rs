//! `portcullis catalog import-openapi`.

use std::process::ExitCode;

use anyhow::Context as _;

use portcullis_catalog::openapi::{self, ImportOptions};

use crate::cli::CatalogCmd;

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
        } => {
            let text = std::fs::read_to_string(&spec).with_context(|| format!("cannot read `{}`", spec.display()))?;
            let options = ImportOptions {
                operations,
                all_matching,
                credential,
                server,
                name_prefix,
            };
            let file =
                openapi::import(&text, &options).with_context(|| format!("cannot import from `{}`", spec.display()))?;
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
