//! Command-line interface.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use portcullis_core::AgentId;
use portcullis_engine::Config;
use portcullis_secrets::MasterKey;
use portcullis_store::Store;

/// Portcullis: a secure execution gateway for AI agents.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "PORTCULLIS_CONFIG",
        default_value = "portcullis.yaml"
    )]
    pub config: PathBuf,
    /// Log at info level (or set PORTCULLIS_LOG, e.g. `debug`).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (REST API, MCP at `/mcp`, approvals UI, health endpoints).
    Serve {
        /// Listen address, overriding `listen` in the config.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Serve MCP over standard input and output (for desktop clients), as the agent whose
    /// token is in the environment variable PORTCULLIS_AGENT_TOKEN. Logs go to standard error.
    Mcp,
    /// Validate the configuration, actions, credential references and policies.
    Check {
        /// Print the Cedar schema generated from the catalog.
        #[arg(long)]
        print_schema: bool,
        /// Print the JSON Schema of the configuration file and exit.
        #[arg(long, exclusive = true)]
        config_schema: bool,
    },
    /// Decide a batch of intents from a JSON Lines file without executing them.
    Eval {
        /// The cases file: one `{"agent", "action", "input", "expect"?}` per line.
        #[arg(long)]
        cases: PathBuf,
    },
    /// Manage encrypted secrets.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Manage agents and their tokens.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Inspect and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Review held intents: list, show, approve, deny (through the running gateway), and
    /// create login tokens for the people in `admins`.
    #[command(subcommand)]
    Approvals(ApprovalsCmd),
    /// Make the running gateway re-read its configuration, catalog and policies (as
    /// `SIGHUP` does), through the admin API with an admin's login token. A configuration
    /// with problems is refused, each problem is printed, and the old one keeps serving.
    Reload(Remote),
    /// Generate action files from an API description.
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// Create the store's tables or bring them up to this version's schema, then exit
    /// (`serve` does the same at start; this lets a deployment migrate once, before
    /// rolling out new instances). Refuses a store written by a newer version.
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCmd {
    /// Write action files for operations of an OpenAPI 3.0 or 3.1 document (JSON or YAML),
    /// for review before they are added to `actions`.
    ImportOpenapi {
        /// The OpenAPI document.
        spec: PathBuf,
        /// An operation id to import (repeatable).
        #[arg(long = "operation", value_name = "OPERATION_ID")]
        operations: Vec<String>,
        /// Also import every operation whose id matches this glob, e.g. `issues/*`.
        #[arg(long, value_name = "GLOB")]
        all_matching: Option<String>,
        /// The credential (an entry under `credentials`) the actions use.
        #[arg(long, value_name = "NAME")]
        credential: String,
        /// The action file to write (one YAML document per action).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The base URL, instead of the document's first server.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Prepended to action names: `github` makes `issues/create` `github.issues_create`.
        #[arg(long, value_name = "PREFIX")]
        name_prefix: Option<String>,
        /// The action name for one operation, used as it is, without the prefix:
        /// `issues/create=github.open_issue` (repeatable).
        #[arg(
            long = "name",
            value_name = "OPERATION_ID=ACTION_NAME",
            value_parser = crate::catalog_cmd::parse_name
        )]
        names: Vec<(String, String)>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// List held intents you may decide (pending ones unless `--all`).
    List {
        /// Include decided, executed and expired ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one held intent: the action, the agent, the reasons and the exact payload.
    Show {
        /// The intent id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a held intent. Without `--sha256`, the payload is fetched and shown first
    /// and the approval is bound to its hash.
    Approve {
        /// The intent id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// The payload hash you reviewed; the approval fails if the held payload differs.
        #[arg(long)]
        sha256: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Deny a held intent (final).
    Deny {
        /// The intent id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Create (or replace) the login token of a person listed under `admins`; printed once.
    Token {
        /// The person's id in `admins`.
        name: String,
    },
}

/// Where the gateway is and who you are.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// The gateway's URL (default: `http://` + `listen` from the config).
    #[arg(long, env = "PORTCULLIS_URL")]
    pub url: Option<String>,
    /// Your login token (from `portcullis approvals token NAME`).
    #[arg(long, env = "PORTCULLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store a secret read from standard input (never from the command line).
    Set {
        /// The secret's name.
        name: String,
    },
    /// List secret names and timestamps (never values).
    List,
    /// Remove a secret.
    Rm {
        /// The secret's name.
        name: String,
    },
    /// Print a new random master key (base64) for `master_key: file:PATH` or `env:VAR`.
    Keygen,
    /// Re-encrypt every stored secret under `master_key`. Put the new key in `master_key`
    /// and the old one in `previous_master_keys` first; every secret stays readable while
    /// this runs and if it is interrupted (run it again to finish). Then remove the old key.
    RotateMasterKey,
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Create an agent and print its token once (only its hash is stored).
    Add {
        /// The agent id, as used in policies (`Agent::"ID"`).
        name: String,
    },
    /// List agents.
    List,
    /// Remove an agent (its token stops working).
    Rm {
        /// The agent id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Check the hash chain and the signed checkpoints; exit 1 and name each modified,
    /// deleted or reordered event, a tail cut off after a checkpoint, and each forged,
    /// deleted or mismatching checkpoint.
    Verify {
        /// Checkpoints exported earlier (`audit checkpoint export`), kept outside the
        /// database: also checked against the log, and missing ones reported.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
    },
    /// Signed checkpoints of the log.
    #[command(subcommand)]
    Checkpoint(CheckpointCmd),
    /// Print the inclusion proof of one event in the smallest checkpoint covering it.
    Prove {
        /// The event's sequence number.
        seq: u64,
    },
    /// Check a proof printed by `audit prove`, without the store.
    VerifyProof {
        /// The proof file.
        file: PathBuf,
        /// The checkpoint key the proof must be signed with (hex), e.g. from an earlier
        /// export.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Print the last events.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
    },
    /// Export the whole log.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCmd {
    /// Sign a checkpoint of the whole log now (needs the master key) and print it.
    Create,
    /// Write every checkpoint as JSON lines, to keep outside the database.
    Export {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also POST them as `{"checkpoints": […]}` to this URL.
        #[arg(long)]
        webhook: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { listen } => crate::serve::run(&cli.config, listen, cli.verbose).await,
        Command::Reload(remote) => crate::approvals_cmd::reload(&cli.config, remote).await,
        Command::Mcp => crate::mcp_cmd::run(&cli.config).await,
        Command::Check {
            print_schema,
            config_schema,
        } => check(&cli.config, print_schema, config_schema).await,
        Command::Eval { cases } => crate::eval_cmd::run(&cli.config, &cases),
        Command::Secret(cmd) => secret(&cli.config, cmd).await,
        Command::Agent(cmd) => agent(&cli.config, cmd).await,
        Command::Audit(AuditCmd::VerifyProof { file, public_key }) => {
            crate::checkpoint_cmd::verify_proof(&file, public_key.as_deref())
        }
        Command::Audit(cmd) => crate::audit_cmd::run(&cli.config, &open_store(&cli.config).await?, cmd).await,
        Command::Approvals(cmd) => crate::approvals_cmd::run(&cli.config, cmd).await,
        Command::Catalog(cmd) => crate::catalog_cmd::run(cmd),
        Command::Migrate => {
            let store = open_store(&cli.config).await?;
            println!(
                "store {} is at schema version {}",
                store.location(),
                portcullis_store::SCHEMA_VERSION
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|problems| anyhow::anyhow!(crate::cli::render_problems(&problems)))
}

pub fn render_problems(problems: &[portcullis_core::Diagnostic]) -> String {
    let mut out: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    out.insert(0, format!("{} problem(s) found:", problems.len()));
    out.join("\n")
}

pub async fn open_store(config: &Path) -> anyhow::Result<Store> {
    let config = load_config(config)?;
    Ok(Store::open(&config.store).await?)
}

async fn check(path: &Path, print_schema: bool, config_schema: bool) -> anyhow::Result<ExitCode> {
    if config_schema {
        println!(
            "{}",
            serde_json::to_string_pretty(&portcullis_engine::config::json_schema())?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = match portcullis_engine::check(path) {
        Ok(l) => l,
        Err(problems) => {
            eprintln!("{}", render_problems(&problems));
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut problems = Vec::new();
    let store_file = loaded.config.store.strip_prefix("sqlite://").map(PathBuf::from);
    if store_file.as_ref().is_some_and(|f| f.exists()) {
        let store = Store::open(&loaded.config.store).await?;
        for (name, cred) in &loaded.config.credentials {
            // Secrets in the store: the credential's own, an OAuth2 client secret there, and
            // a refresh token. Environment variables and Vault are read only when used.
            let oauth2 = cred.oauth2.as_ref();
            let stored = [cred.secret.as_ref(), oauth2.and_then(|o| o.client_secret.as_ref())]
                .into_iter()
                .flatten()
                .filter_map(|s| match s {
                    portcullis_engine::credentials::SecretSource::Store(n) => Some(n.clone()),
                    _ => None,
                })
                .chain(oauth2.and_then(|o| o.refresh_token.clone()));
            for secret in stored {
                if store.get_secret(&secret).await?.is_none() {
                    problems.push(format!(
                        "  {}: credential `{name}` uses secret `{secret}`, which is not in the store (run `portcullis secret set {secret}`)",
                        path.display(),
                    ));
                }
            }
        }
    } else if !loaded.config.credentials.is_empty() {
        eprintln!("note: the store does not exist yet, so stored secrets were not checked");
    }
    if !problems.is_empty() {
        eprintln!("{} problem(s) found:\n{}", problems.len(), problems.join("\n"));
        return Ok(ExitCode::FAILURE);
    }
    if print_schema {
        println!("{}", serde_json::to_string_pretty(loaded.policy.schema_json())?);
    }
    eprintln!(
        "ok: {} action(s), {} polic(ies), {} credential(s), {} agent(s), {} redaction rule(s), {} quota(s) configured",
        loaded.catalog.len(),
        loaded.policy.policy_count(),
        loaded.config.credentials.len(),
        loaded.config.agents.len(),
        loaded.config.detector.rule_ids().count(),
        loaded.config.quotas.iter().count()
    );
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        bail!("invalid secret name `{name}`: use 1 to 128 ASCII letters, digits, `_`, `-` or `.`");
    }
    Ok(())
}

async fn secret(path: &Path, cmd: SecretCmd) -> anyhow::Result<ExitCode> {
    if let SecretCmd::Keygen = cmd {
        println!("{}", MasterKey::generate_encoded());
        return Ok(ExitCode::SUCCESS);
    }
    let config = load_config(path)?;
    let store = Store::open(&config.store).await?;
    match cmd {
        SecretCmd::Set { name } => {
            check_name(&name)?;
            let spec = config
                .master_key
                .as_deref()
                .context("no `master_key` in the config: secrets can't be encrypted")?;
            let keyring = config
                .keyring()?
                .with_context(|| format!("`master_key` {spec} can't be loaded"))?;
            let key = keyring.current();
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("while reading the secret from standard input")?;
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value);
            if value.is_empty() {
                bail!("the secret read from standard input is empty");
            }
            let sealed = portcullis_secrets::seal(key, &name, value.as_bytes())?;
            store.put_secret(&sealed).await?;
            eprintln!("secret `{name}` stored (encrypted)");
        }
        SecretCmd::List => {
            for s in store.list_secrets().await? {
                println!("{}\tcreated {}\tupdated {}", s.name, s.created_at, s.updated_at);
            }
        }
        SecretCmd::Rm { name } => {
            if !store.remove_secret(&name).await? {
                bail!("no secret named `{name}`");
            }
            eprintln!("secret `{name}` removed");
        }
        SecretCmd::RotateMasterKey => return rotate_master_key(&config, &store).await,
        SecretCmd::Keygen => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Passes over the store before the rotation gives up on secrets that keep being stored
/// under another key (a gateway still running with the previous `master_key` writing a
/// rotated OAuth2 refresh token, say).
const ROTATION_PASSES: usize = 3;

/// Re-encrypts every secret not yet sealed by the current master key. Each secret is one
/// conditional update, so an interruption leaves every secret readable with the keyring,
/// and a second run finishes the job. After each pass every secret's key version is read
/// again: one stored meanwhile under another key is re-encrypted by the next pass. A secret
/// no configured key opens, or one still under another key after the last pass, is reported,
/// and `previous_master_keys` is said to be removable only when neither is left.
async fn rotate_master_key(config: &Config, store: &Store) -> anyhow::Result<ExitCode> {
    let keyring = config
        .keyring()?
        .context("no `master_key` in the config: there is no key to re-encrypt under")?;
    let current = keyring.current().id();
    let mut tally = Rotation::default();
    let mut stale = Vec::new();
    for pass in 0..ROTATION_PASSES {
        tally.unreadable.clear();
        reseal_pass(&keyring, store, &mut tally, pass == 0).await?;
        stale = not_under(store, current).await?;
        // Retrying helps only with secrets some key opens but that are not under this one.
        if stale.iter().all(|(name, _)| tally.unreadable.contains_key(name)) {
            break;
        }
    }
    eprintln!(
        "re-encrypted {} secret(s) under master key {current:08x}; {} already were",
        tally.resealed.len(),
        tally.already
    );
    if tally.changed > 0 {
        eprintln!(
            "{} secret(s) were stored again during the rotation and were checked again",
            tally.changed
        );
    }
    let mut ok = true;
    for (name, version) in stale.iter().filter(|(name, _)| !tally.unreadable.contains_key(name)) {
        ok = false;
        eprintln!(
            "secret `{name}` is still sealed by master key {version:08x}: something stored it with that key \
             during the rotation, likely a gateway still running with the previous `master_key`"
        );
    }
    if !ok {
        eprintln!(
            "reload or restart every gateway with this `master_key` (keeping `previous_master_keys`) \
             and run `portcullis secret rotate-master-key` again; keep `previous_master_keys` until then"
        );
    }
    if !tally.unreadable.is_empty() {
        ok = false;
        for problem in tally.unreadable.values() {
            eprintln!("  {problem}");
        }
        eprintln!(
            "{} secret(s) could not be re-encrypted and were left as they are",
            tally.unreadable.len()
        );
    }
    if !ok {
        return Ok(ExitCode::FAILURE);
    }
    if !config.previous_master_keys.is_empty() {
        eprintln!(
            "every secret is sealed by `master_key` now: `previous_master_keys` can be removed \
             (every gateway must already run with this `master_key`)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What a rotation did so far.
#[derive(Default)]
struct Rotation {
    /// The secrets re-encrypted (a name once, however many passes re-encrypted it).
    resealed: std::collections::BTreeSet<String>,
    /// Found under the current key by the first pass.
    already: usize,
    /// Stored again between being read and being re-encrypted (the next pass looks again).
    changed: usize,
    /// Name → why no configured key opens it (the last pass's).
    unreadable: std::collections::BTreeMap<String, String>,
}

/// One pass: every secret not under the current key re-encrypted, unless it changed meanwhile.
async fn reseal_pass(
    keyring: &portcullis_secrets::Keyring,
    store: &Store,
    tally: &mut Rotation,
    first: bool,
) -> anyhow::Result<()> {
    let current = keyring.current();
    for meta in store.list_secrets().await? {
        let Some(sealed) = store.get_secret(&meta.name).await? else {
            continue; // removed meanwhile
        };
        if sealed.key_version == current.id() {
            tally.already += usize::from(first);
            continue;
        }
        let value = match portcullis_secrets::open(keyring, &sealed) {
            Ok(v) => v,
            Err(e) => {
                tally.unreadable.insert(meta.name, e.to_string());
                continue;
            }
        };
        let new = portcullis_secrets::seal(current, &sealed.name, value.expose_secret().as_bytes())?;
        if store.reseal_secret(&sealed, &new).await? {
            tally.resealed.insert(sealed.name.clone());
        } else {
            // Stored again meanwhile, under whichever key its writer has: the key versions
            // read after the pass tell.
            tally.changed += 1;
        }
    }
    Ok(())
}

/// Every stored secret not sealed by key `current`, with the key that sealed it, read again
/// from the store.
async fn not_under(store: &Store, current: u32) -> anyhow::Result<Vec<(String, u32)>> {
    let mut stale = Vec::new();
    for meta in store.list_secrets().await? {
        if let Some(sealed) = store.get_secret(&meta.name).await?
            && sealed.key_version != current
        {
            stale.push((meta.name, sealed.key_version));
        }
    }
    Ok(stale)
}

async fn agent(path: &Path, cmd: AgentCmd) -> anyhow::Result<ExitCode> {
    let store = open_store(path).await?;
    match cmd {
        AgentCmd::Add { name } => {
            let id = AgentId::new(name)?;
            let token = crate::keys::new_agent_token();
            store
                .add_agent(&id, &portcullis_core::sha256_hex(token.as_bytes()))
                .await?;
            println!("{token}");
            eprintln!("agent `{id}` created; the token above is shown only once");
        }
        AgentCmd::List => {
            for a in store.list_agents().await? {
                println!("{}\tcreated {}", a.id, a.created_at);
            }
        }
        AgentCmd::Rm { name } => {
            let id = AgentId::new(name)?;
            if !store.remove_agent(&id).await? {
                bail!("no agent named `{id}`");
            }
            eprintln!("agent `{id}` removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
