//! Loading everything a gateway (or `portcullis check`) needs, collecting every problem.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_catalog::Catalog;
use portcullis_core::{ActionName, Diagnostic};
use portcullis_policy::{PolicyEngine, PolicyInputs};
use portcullis_redact::Projection;
use portcullis_redact::detect::SENSITIVE_KEY;

use crate::config::Config;

/// Config, catalog and policies, loaded and cross-checked.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// The catalog.
    pub catalog: Catalog,
    /// The policies.
    pub policy: PolicyEngine,
    /// Compiled `response.keep` projections by action.
    pub projections: HashMap<ActionName, Arc<Projection>>,
}

/// Loads the catalog and policies named by `config` and checks every cross-reference
/// (credentials named by actions exist, projections compile).
///
/// # Errors
/// Every problem found.
pub fn load(config: Config) -> Result<Loaded, Vec<Diagnostic>> {
    let (loaded, problems) = load_all(config);
    match loaded {
        Some(l) if problems.is_empty() => Ok(l),
        _ => Err(problems),
    }
}

/// Loads as much as can be loaded and reports every problem: a broken action file
/// doesn't stop the policies from being checked against the actions that did load.
fn load_all(config: Config) -> (Option<Loaded>, Vec<Diagnostic>) {
    let mut problems = Vec::new();
    if config.action_files.is_empty() {
        problems.push(Diagnostic::at(
            &config.path,
            None,
            "no action files: set `actions` to at least one glob",
        ));
    }
    let (catalog, mut catalog_problems) = Catalog::load_partial(&config.action_files, config.json_limits);
    problems.append(&mut catalog_problems);
    let mut projections = HashMap::new();
    for action in catalog.iter() {
        if let Some(name) = &action.credential
            && !config.credentials.contains_key(name)
        {
            problems.push(Diagnostic::at(
                &action.file,
                action.credential_line,
                format!(
                    "action `{}` uses credential `{name}`, which is not defined under `credentials`",
                    action.name
                ),
            ));
        }
        if let (Some(name), Some(_)) = (&action.credential, action.smtp())
            && let Some(spec) = config.credentials.get(name)
            && spec.kind != crate::config::CredentialKind::Basic
        {
            problems.push(Diagnostic::at(
                &action.file,
                action.credential_line,
                format!(
                    "action `{}` sends mail, so its credential `{name}` must be of kind `basic` (the SMTP login's user name and password)",
                    action.name
                ),
            ));
        }
        for kind in &action.response.allow {
            let known = kind == SENSITIVE_KEY || config.detector.rule_ids().any(|id| id == kind);
            if !known {
                problems.push(Diagnostic::at(
                    &action.file,
                    Some(action.line),
                    format!(
                        "action `{}`: `response.allow` names `{kind}`, which is no detection rule (nor `{SENSITIVE_KEY}`)",
                        action.name
                    ),
                ));
            }
        }
        if let Some(keep) = &action.response.keep {
            match Projection::parse(keep) {
                Ok(p) => {
                    projections.insert(action.name.clone(), Arc::new(p));
                }
                Err(e) => problems.push(Diagnostic::at(
                    &action.file,
                    Some(action.line),
                    format!("action `{}`: {e}", action.name),
                )),
            }
        }
    }
    for quota in config.quotas.iter() {
        for m in quota.check(&catalog) {
            problems.push(Diagnostic::at(&config.path, quota.line, m));
        }
    }
    let policy = PolicyEngine::load(PolicyInputs {
        catalog: &catalog,
        agents: &config.agents,
        entities: &config.entities,
        policy_files: &config.policy_files,
        counters: &config.quotas.specs(&catalog),
        claim_attributes: &config
            .oidc
            .as_ref()
            .map(crate::oidc::OidcSpec::attribute_names)
            .unwrap_or_default(),
    });
    let policy = match policy {
        Ok(p) => {
            let groups: std::collections::BTreeSet<&String> =
                config.admins.values().flat_map(|a| a.groups.iter()).collect();
            for (id, group) in p.approver_groups() {
                if !groups.contains(&group) {
                    problems.push(Diagnostic::general(format!(
                        "policy `{id}`: `@approvers(\"{group}\")` names a group no person in `admins` belongs to"
                    )));
                }
            }
            Some(p)
        }
        Err(mut e) => {
            problems.append(&mut e);
            None
        }
    };
    (
        policy.map(|policy| Loaded {
            config,
            catalog,
            policy,
            projections,
        }),
        problems,
    )
}

/// Everything `portcullis check` verifies without a store: config, catalog, policies,
/// with every problem reported at once.
///
/// # Errors
/// Every problem found.
pub fn check(path: &std::path::Path) -> Result<Loaded, Vec<Diagnostic>> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| vec![Diagnostic::at(path, None, format!("cannot read config file: {e}"))])?;
    let (config, mut problems) = Config::parse_all(path, &source);
    let Some(config) = config else { return Err(problems) };
    let (loaded, mut more) = load_all(config);
    problems.append(&mut more);
    match loaded {
        Some(l) if problems.is_empty() => Ok(l),
        _ => Err(problems),
    }
}
