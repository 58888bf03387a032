//! `portcullis.yaml`: raw serde types (with `deny_unknown_fields`) and the validated
//! [`Config`] with paths resolved against the config file's directory.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use portcullis_core::{Diagnostic, json};
use portcullis_exec::{EgressConfig, IpNet};
use portcullis_policy::{AgentEntity, EntityDecl, EntityRef};
use portcullis_redact::detect::{Category, CustomRule, Detector};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default store: a SQLite file beside the config.
pub const DEFAULT_STORE: &str = "sqlite://portcullis.db";
/// Default largest intent body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default upstream total timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default largest upstream response.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// The configuration file, as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address the gateway listens on (`host:port`). Default `127.0.0.1:8080`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Where state lives: `sqlite://PATH` (relative to this file; default
    /// `sqlite://portcullis.db`), `postgres://USER@HOST:PORT/DB?sslmode=verify-full` for
    /// several instances sharing one database, or `env:VAR` to read either URL from the
    /// environment (keeps a database password out of the file).
    #[serde(default)]
    pub store: Option<String>,
    /// The master key that encrypts stored secrets: `env:VAR` or `file:PATH`.
    #[serde(default)]
    pub master_key: Option<String>,
    /// Earlier master keys (`env:VAR` or `file:PATH`) that still open secrets sealed before
    /// `portcullis secret rotate-master-key` re-encrypted them under `master_key`.
    #[serde(default)]
    pub previous_master_keys: Vec<String>,
    /// Agents' policy data by agent id (tokens are created with `portcullis agent add`).
    #[serde(default)]
    pub agents: BTreeMap<String, RawAgent>,
    /// Credentials actions can use, by name.
    #[serde(default)]
    pub credentials: BTreeMap<String, RawCredential>,
    /// Glob patterns of action files, relative to this file.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Glob patterns of `.cedar` policy files, relative to this file.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Outbound connection rules.
    #[serde(default)]
    pub egress: RawEgress,
    /// Limits on what agents may send.
    #[serde(default)]
    pub limits: RawLimits,
    /// Trusted entity data for policies (allow-lists of repositories, payees, domains…).
    #[serde(default)]
    pub entities: Vec<RawEntity>,
    /// People who approve held intents or administer the gateway, by id. Their login
    /// tokens are created with `portcullis approvals token ID`.
    #[serde(default)]
    pub admins: BTreeMap<String, RawAdmin>,
    /// Human approval of held intents.
    #[serde(default)]
    pub approvals: RawApprovals,
    /// The MCP endpoint `/mcp` of `serve`.
    #[serde(default)]
    pub mcp: RawMcp,
    /// Detection of secrets and personal data in payloads, responses, logs and the audit log.
    #[serde(default)]
    pub redaction: RawRedaction,
    /// OpenBao or HashiCorp Vault, for credentials whose secret is `vault:PATH#FIELD`.
    #[serde(default)]
    pub vault: Option<crate::vault::RawVault>,
    /// Agents authenticated by JWTs from an OpenID Connect issuer (besides static tokens).
    #[serde(default)]
    pub oidc: Option<crate::oidc::RawOidc>,
    /// Rate and spend quotas by name, enforced across every instance sharing the store and
    /// visible to policies as `context.counters["NAME"]`.
    #[serde(default)]
    pub quotas: BTreeMap<String, crate::quota::RawQuota>,
    /// Prometheus metrics at `GET /metrics`.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// The gateway's own log lines (always redacted).
    #[serde(default)]
    pub logging: RawLogging,
    /// OpenTelemetry traces exported over OTLP (HTTP/protobuf).
    #[serde(default)]
    pub tracing: RawTracing,
    /// What `serve` does when told to stop (SIGTERM or Ctrl-C).
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// Signed checkpoints of the audit log.
    #[serde(default)]
    pub audit: RawAudit,
    /// Cross-call provenance: how long and how many values read from actions marked
    /// `provenance: untrusted` are kept per session, and which values are always trusted.
    #[serde(default)]
    pub provenance: crate::provenance::RawProvenance,
}

/// Signed audit checkpoints: every `checkpoint_every` events or `checkpoint_seconds`
/// seconds (whichever comes first, and only when there are new events), `serve` signs the
/// RFC 6962 Merkle root of the log with an Ed25519 key kept sealed in the secret store
/// (created on first use). They need a `master_key`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Events between checkpoints (default 1000; 0 turns checkpoints off).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Longest time between checkpoints while events arrive (default 300).
    #[serde(default)]
    pub checkpoint_seconds: Option<u64>,
    /// The secret holding the signing key's seed (default `audit-checkpoint-key`).
    #[serde(default)]
    pub checkpoint_key: Option<String>,
}

/// Log lines on standard error. `PORTCULLIS_LOG` (an `EnvFilter` such as `info` or
/// `portcullis_engine=debug`) overrides `level`; `-v` raises the default to `info`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// `human` (default: one readable line per event) or `json` (one JSON object per line,
    /// with the intent's span fields, for log pipelines).
    #[serde(default)]
    pub format: LogFormat,
    /// The least severe level written: `error`, `warn` (default), `info`, `debug` or `trace`.
    #[serde(default)]
    pub level: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// OpenTelemetry traces: one span per intent with a child span per pipeline stage. Every
/// attribute value passes through the redactor before it is exported.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// The OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`. Unset (the
    /// default), nothing is exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (default `portcullis`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Attach the intent's input to its span (default `false`). Redacted and capped at
    /// `payload_max_bytes` like every attribute.
    #[serde(default)]
    pub payloads: bool,
    /// Largest payload attribute in bytes (default 2048, at most 65536).
    #[serde(default)]
    pub payload_max_bytes: Option<usize>,
}

/// Graceful shutdown: stop accepting, let intents in flight finish, flush the audit log.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// How long intents in flight may take to finish once told to stop (default 40: above
    /// the default upstream connect and total timeouts together). An intent still running
    /// then is settled as `outcome_unknown` by whichever instance's maintenance finds it
    /// older than the longest an execution can take.
    #[serde(default)]
    pub deadline_seconds: Option<u64>,
}

/// Prometheus metrics at `GET /metrics`. They name actions, quotas and credentials and show
/// how much each is used, and the endpoint takes no token: enable it only where the listen
/// address is reachable by the scraper and not by agents, or filter the path at a proxy.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Serve `/metrics` (default `false`: the path is then 404 like any unknown one).
    #[serde(default)]
    pub enabled: bool,
}

/// The detector's rule set: every builtin rule unless disabled, plus the operator's own.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedaction {
    /// Ids of builtin rules to turn off (`portcullis check` lists unknown ids), e.g. `[ipv4]`.
    #[serde(default)]
    pub disable: Vec<String>,
    /// More rules. Each is checked at load against its own examples.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// An operator's detection rule.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Lowercase letters, digits and dashes; shown as `[REDACTED:ID]` and in findings.
    pub id: String,
    /// `secret` or `pii`.
    pub category: RuleCategory,
    /// What the rule finds.
    #[serde(default)]
    pub description: String,
    /// ASCII strings (case-insensitive), one of which occurs in every match: the pre-filter
    /// runs the regex only on texts containing one.
    pub keywords: Vec<String>,
    /// The pattern (Rust `regex` syntax, linear time). A group named `v` narrows what is
    /// redacted to that group; a match in which a group named `fp` takes part is ignored.
    pub regex: String,
    /// Texts in which the rule must find something (at least one).
    pub examples_true: Vec<String>,
    /// Texts in which the rule must find nothing.
    #[serde(default)]
    pub examples_false: Vec<String>,
}

/// The category of an operator's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleCategory {
    /// A credential.
    Secret,
    /// Personal data.
    Pii,
}

/// Which `Host` and `Origin` values the MCP endpoint accepts (DNS-rebinding protection).
///
/// `/mcp` always accepts the `Host` values `127.0.0.1:PORT`, `localhost:PORT` and
/// `[::1]:PORT` of the port `serve` listens on (and `IP:PORT` of a specific listen
/// address), and the origins `http://` + each of them. A request with any other `Host` is
/// refused with 403, and so is one whose `Origin` header names any other origin; requests
/// without an `Origin` (every non-browser client) are not affected by the origin list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    /// More `Host` values to accept, as `host:port` (or `host` for any port), e.g. the name
    /// clients use behind a reverse proxy: `gateway.example.com:443`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// More browser origins to accept, as `scheme://host[:port]`, e.g.
    /// `https://agents.example.com` (the scheme's default port is implied).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// The validated MCP settings.
#[derive(Debug, Clone, Default)]
pub struct McpSettings {
    /// Extra `Host` values (`host` or `host:port`), lowercase.
    pub allowed_hosts: Vec<String>,
    /// Extra origins as `scheme://host:port`, with the port always written out.
    pub allowed_origins: Vec<String>,
}

/// What a person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May approve or deny any held intent.
    Admin,
    /// May approve or deny held intents whose policy names one of their groups (or no group).
    Approver,
}

/// A person in `admins`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `admin` or `approver`.
    pub role: Role,
    /// Approver groups, matched against a policy's `@approvers("GROUP")`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Approval settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// How long a held intent waits for approval, in seconds. Default 3600.
    #[serde(default)]
    pub expiry_seconds: Option<u64>,
    /// A webhook told about every new hold.
    #[serde(default)]
    pub webhook: Option<RawWebhook>,
    /// The URL people use to reach this gateway (for links to `/ui` in notifications), e.g.
    /// `https://portcullis.example.com`. Default: `http://` and the address `serve` listens on.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// Message format of the hold webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// A JSON object describing the hold.
    #[default]
    Json,
    /// A Slack-compatible message (`{"text": …}`).
    Slack,
}

/// The hold webhook.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Where to POST. It goes through the egress guard like every upstream call.
    pub url: String,
    /// The name of a stored secret used as the HMAC-SHA256 key of the
    /// `X-Portcullis-Signature` header.
    #[serde(default)]
    pub secret: Option<String>,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Delivery attempts before giving up (the hold is kept either way). Default 5.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// Default time a hold waits for approval.
pub const DEFAULT_HOLD_EXPIRY_SECONDS: u64 = 3600;
/// Default webhook delivery attempts.
pub const DEFAULT_WEBHOOK_ATTEMPTS: u32 = 5;

/// An agent's policy data.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Attributes visible to policy as `principal.NAME` (strings, booleans, whole numbers, lists, maps).
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Groups, visible to policy as `principal in AgentGroup::"NAME"`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// How a credential is put into a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// `Authorization: Bearer SECRET`.
    Bearer,
    /// `Authorization: Basic base64(USERNAME:SECRET)`.
    Basic,
    /// A custom header whose value is the secret (`header` names it, `prefix` is prepended).
    Header,
    /// A query parameter whose value is the secret (`param` names it).
    Query,
    /// An OAuth2 access token from the client-credentials grant, as `Authorization: Bearer`.
    Oauth2ClientCredentials,
    /// An OAuth2 access token from the refresh-token grant, as `Authorization: Bearer`.
    Oauth2RefreshToken,
}

/// How an OAuth2 client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1, the default).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// A credential entry.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// How it is injected.
    pub kind: CredentialKind,
    /// Where the secret comes from (not for the OAuth2 kinds): `NAME` or `store:NAME` (the
    /// encrypted store, `portcullis secret set NAME`), `env:VAR` (an environment variable,
    /// for development) or `vault:PATH#FIELD` (OpenBao/Vault KV v2, see `vault`).
    #[serde(default)]
    pub secret: Option<String>,
    /// OAuth2: the token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// OAuth2: the client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// OAuth2: where the client secret comes from (same forms as `secret`). Optional for
    /// public clients of the refresh-token grant.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// OAuth2: how the client authenticates at the token endpoint: `basic` (default) or `post`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// OAuth2: scopes to request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// OAuth2: the `audience` parameter some providers need.
    #[serde(default)]
    pub audience: Option<String>,
    /// OAuth2: the `resource` parameter (RFC 8707).
    #[serde(default)]
    pub resource: Option<String>,
    /// OAuth2 refresh-token grant: the name of the refresh token in the encrypted store. A
    /// rotated refresh token is written back there.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// For `basic`: the user name.
    #[serde(default)]
    pub username: Option<String>,
    /// For `header`: the header name.
    #[serde(default)]
    pub header: Option<String>,
    /// For `header`: text before the secret, e.g. `Token `.
    #[serde(default)]
    pub prefix: Option<String>,
    /// For `query`: the parameter name.
    #[serde(default)]
    pub param: Option<String>,
}

/// Outbound connection rules.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    /// Networks (CIDR or address) that may be reached even though they are private,
    /// loopback or otherwise internal. Empty by default: only public addresses.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Fixed addresses for host names, like curl's `--resolve`, e.g.
    /// `api.internal.example: [10.20.0.7]`. A name listed here is never looked up in DNS;
    /// its addresses are checked like any DNS answer (every one must be public or in
    /// `allow`, else the name is refused) and are the only ones connected to. Names are
    /// matched case-insensitively, with or without a trailing dot. Empty by default.
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<String>>,
    /// Connect timeout in milliseconds. Default 5000.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Total timeout per upstream call in milliseconds. Default 30000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Largest upstream response body in bytes. Default 10 MiB.
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
    /// A PEM file of certificate authorities trusted besides the system's (upstreams, mail
    /// servers, Vault or an identity provider behind a private CA), relative to this file.
    #[serde(default)]
    pub extra_roots: Option<String>,
}

/// Limits on agent requests.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest intent body in bytes. Default 1 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Deepest JSON nesting. Default 32.
    #[serde(default)]
    pub max_depth: Option<usize>,
}

/// A trusted entity for policies.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    /// Cedar entity type, e.g. `Allowlist`.
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Entity id, e.g. `email-domains`.
    pub id: String,
    /// Attributes, e.g. `{domains: [example.com]}`.
    #[serde(default)]
    pub attrs: Map<String, Value>,
    /// Parent entities.
    #[serde(default)]
    pub parents: Vec<RawEntityRef>,
}

/// A reference to an entity.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEntityRef {
    /// Entity type.
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Entity id.
    pub id: String,
}

/// A validated credential entry.
#[derive(Debug, Clone)]
pub struct CredentialSpec {
    /// How it is injected.
    pub kind: CredentialKind,
    /// Where the secret comes from (every kind but the OAuth2 ones).
    pub secret: Option<crate::credentials::SecretSource>,
    /// The OAuth2 grant, for the OAuth2 kinds.
    pub oauth2: Option<crate::oauth2::OAuth2Spec>,
    /// User name (basic).
    pub username: Option<String>,
    /// Header name (header).
    pub header: Option<String>,
    /// Prefix (header).
    pub prefix: String,
    /// Query parameter (query).
    pub param: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file.
    pub path: PathBuf,
    /// The listen address.
    pub listen: SocketAddr,
    /// The store URL with its path resolved.
    pub store: String,
    /// The master key spec.
    pub master_key: Option<String>,
    /// Earlier master keys' specs, still accepted for opening secrets.
    pub previous_master_keys: Vec<String>,
    /// Agents' policy data.
    pub agents: BTreeMap<String, AgentEntity>,
    /// Credentials.
    pub credentials: BTreeMap<String, CredentialSpec>,
    /// Action files found by the globs.
    pub action_files: Vec<PathBuf>,
    /// Policy files found by the globs.
    pub policy_files: Vec<PathBuf>,
    /// Egress rules.
    pub egress: EgressConfig,
    /// Largest intent body.
    pub max_body_bytes: usize,
    /// JSON limits.
    pub json_limits: json::Limits,
    /// Trusted entities.
    pub entities: Vec<EntityDecl>,
    /// People who approve or administer.
    pub admins: BTreeMap<String, RawAdmin>,
    /// How long holds wait.
    pub hold_expiry: Duration,
    /// The hold webhook.
    pub webhook: Option<RawWebhook>,
    /// The public URL of the gateway, for links in notifications.
    pub public_url: Option<String>,
    /// The MCP endpoint's extra allowed hosts and origins.
    pub mcp: McpSettings,
    /// Whether `GET /metrics` is served.
    pub metrics_enabled: bool,
    /// The detector for secrets and personal data (builtin rules, less the disabled ones,
    /// plus the operator's).
    pub detector: Arc<Detector>,
    /// Rate and spend quotas.
    pub quotas: crate::quota::Quotas,
    /// OpenBao/Vault, if configured.
    pub vault: Option<crate::vault::VaultSpec>,
    /// JWT agent authentication, if configured.
    pub oidc: Option<crate::oidc::OidcSpec>,
    /// Log format and level.
    pub logging: LogSettings,
    /// Trace export, if configured.
    pub tracing: Option<TracingSettings>,
    /// How long intents in flight may take to finish at shutdown.
    pub shutdown_deadline: Duration,
    /// Audit checkpoints.
    pub audit: AuditSettings,
    /// Cross-call provenance settings, with the trusted values hashed.
    pub provenance: crate::provenance::ProvenanceSettings,
}

/// Audit checkpoint settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Events between checkpoints; 0 means off.
    pub checkpoint_every: u64,
    /// Longest time between checkpoints while events arrive.
    pub checkpoint_interval: Duration,
    /// The secret holding the signing key's seed.
    pub checkpoint_key: String,
}

/// Default events between checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
/// Default seconds between checkpoints.
pub const DEFAULT_CHECKPOINT_SECONDS: u64 = 300;
/// Default name of the checkpoint key's secret.
pub const DEFAULT_CHECKPOINT_KEY: &str = "audit-checkpoint-key";

/// Log format and level, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// Human or JSON lines.
    pub format: LogFormat,
    /// The configured level (an `EnvFilter` directive), if any.
    pub level: Option<String>,
}

/// Trace export, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// The OTLP/HTTP traces endpoint.
    pub endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// Whether the input is attached (redacted and capped).
    pub payloads: bool,
    /// The cap on a payload attribute.
    pub payload_max_bytes: usize,
}

/// Default largest payload attribute on a span.
pub const DEFAULT_TRACE_PAYLOAD_BYTES: usize = 2048;
/// Largest allowed `tracing.payload_max_bytes`.
pub const MAX_TRACE_PAYLOAD_BYTES: usize = 65_536;
/// Default shutdown deadline.
pub const DEFAULT_SHUTDOWN_DEADLINE_SECONDS: u64 = 40;
/// Log levels accepted in `logging.level`.
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

fn log_settings(raw: RawLogging, report: &mut dyn FnMut(&str, String)) -> LogSettings {
    let level = raw.level.filter(|l| {
        let known = LOG_LEVELS.contains(&l.as_str());
        if !known {
            report(
                "logging.level",
                format!("`{l}` is not a level: use one of {}", LOG_LEVELS.join(", ")),
            );
        }
        known
    });
    LogSettings {
        format: raw.format,
        level,
    }
}

fn tracing_settings(raw: RawTracing, report: &mut dyn FnMut(&str, String)) -> Option<TracingSettings> {
    let endpoint = raw.otlp_endpoint?;
    match url::Url::parse(&endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => {
            report(
                "tracing.otlp_endpoint",
                format!("`{endpoint}` is not an http(s) URL such as `http://127.0.0.1:4318/v1/traces`"),
            );
            return None;
        }
    }
    let payload_max_bytes = raw.payload_max_bytes.unwrap_or(DEFAULT_TRACE_PAYLOAD_BYTES);
    if payload_max_bytes == 0 || payload_max_bytes > MAX_TRACE_PAYLOAD_BYTES {
        report(
            "tracing.payload_max_bytes",
            format!("must be between 1 and {MAX_TRACE_PAYLOAD_BYTES}, not {payload_max_bytes}"),
        );
    }
    Some(TracingSettings {
        endpoint,
        service_name: raw.service_name.unwrap_or_else(|| "portcullis".to_owned()),
        payloads: raw.payloads,
        payload_max_bytes: payload_max_bytes.clamp(1, MAX_TRACE_PAYLOAD_BYTES),
    })
}

/// The store URL, resolved: a SQLite path relative to the config's directory, a
/// PostgreSQL URL as is, `env:VAR` read from the environment. Messages never include the
/// URL past its scheme, since it may carry a password.
fn store_url(dir: &Path, text: &str) -> Result<String, String> {
    let from_env;
    let text = match text.strip_prefix("env:") {
        Some(var) => {
            from_env = std::env::var(var).map_err(|_| format!("`store` names `env:{var}`, which is not set"))?;
            from_env.as_str()
        }
        None => text,
    };
    if let Some(p) = text.strip_prefix("sqlite://") {
        return Ok(if p.starts_with(':') {
            text.to_owned()
        } else {
            format!("sqlite://{}", dir.join(p).display())
        });
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(text.to_owned());
    }
    let scheme = text.split_once(':').map_or("", |(s, _)| s);
    Err(format!(
        "`store` with scheme `{scheme}` is not supported: use `sqlite://PATH` or `postgres://…`"
    ))
}

impl Config {
    /// The master key and the previous ones, loaded; `None` without a `master_key`.
    ///
    /// # Errors
    /// When a key can't be read (the error names the variable or file, never the key).
    pub fn keyring(&self) -> Result<Option<portcullis_secrets::Keyring>, portcullis_secrets::SecretsError> {
        let Some(current) = &self.master_key else {
            return Ok(None);
        };
        let current = portcullis_secrets::MasterKey::load(current)?;
        let previous = self
            .previous_master_keys
            .iter()
            .map(|spec| portcullis_secrets::MasterKey::load(spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(portcullis_secrets::Keyring::new(current, previous)))
    }

    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    /// Every problem found, with file and line where known.
    pub fn load(path: &Path) -> Result<Self, Vec<Diagnostic>> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| vec![Diagnostic::at(path, None, format!("cannot read config file: {e}"))])?;
        Self::parse(path, &source)
    }

    /// Validates config text as if read from `path`.
    ///
    /// # Errors
    /// Every problem found.
    pub fn parse(path: &Path, source: &str) -> Result<Self, Vec<Diagnostic>> {
        match Self::parse_all(path, source) {
            (Some(config), problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(problems),
        }
    }

    /// Validates config text and returns every problem together with the best config that
    /// could be made of it (broken entries left out or defaulted), so that `portcullis check`
    /// can go on to check the actions and policies it names. `None` when not even that
    /// could be made (the file is not a YAML mapping).
    #[must_use]
    pub fn parse_all(path: &Path, source: &str) -> (Option<Self>, Vec<Diagnostic>) {
        let mut problems = Vec::new();
        let raw: RawConfig = match serde_saphyr::from_str(source) {
            Ok(raw) => raw,
            Err(e) => {
                let text = e.without_snippet().to_string();
                let first = text.lines().next().unwrap_or("invalid YAML").trim().to_owned();
                problems.push(Diagnostic::at(
                    path,
                    e.location().map(|l| l.line()),
                    format!("invalid config: {first}"),
                ));
                match salvage(source) {
                    Some(raw) => raw,
                    None => return (None, problems),
                }
            }
        };
        let config = Self::from_raw(path, source, raw, &mut problems);
        (Some(config), problems)
    }

    fn from_raw(path: &Path, source: &str, raw: RawConfig, problems: &mut Vec<Diagnostic>) -> Self {
        let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let mut report = |needle: &str, msg: String| {
            problems.push(Diagnostic::at(path, portcullis_core::line_of(source, needle), msg));
        };
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse().unwrap_or_else(|_| {
            report(
                "listen",
                format!("`listen` `{listen_text}` is not an address like `127.0.0.1:8080`"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let store = store_url(&dir, raw.store.as_deref().unwrap_or(DEFAULT_STORE)).unwrap_or_else(|m| {
            report("store", m);
            String::new()
        });
        if let Some(mk) = &raw.master_key
            && !(mk.starts_with("env:") || mk.starts_with("file:"))
        {
            report("master_key", "`master_key` must be `env:VAR` or `file:PATH`".to_owned());
        }
        if raw
            .previous_master_keys
            .iter()
            .any(|mk| !(mk.starts_with("env:") || mk.starts_with("file:")))
        {
            report(
                "previous_master_keys",
                "every entry of `previous_master_keys` must be `env:VAR` or `file:PATH`".to_owned(),
            );
        }
        if raw.master_key.is_none() && !raw.previous_master_keys.is_empty() {
            report(
                "previous_master_keys",
                "`previous_master_keys` needs a `master_key` to re-encrypt under".to_owned(),
            );
        }
        let resolve_key = |mk: String| match mk.strip_prefix("file:") {
            Some(p) => format!("file:{}", dir.join(p).display()),
            None => mk,
        };
        let master_key = raw.master_key.map(resolve_key);
        let previous_master_keys = raw.previous_master_keys.into_iter().map(resolve_key).collect();
        let mut credentials = BTreeMap::new();
        for (name, c) in raw.credentials {
            match credential(&name, c) {
                Ok(spec) => {
                    credentials.insert(name, spec);
                }
                Err(m) => report(&format!("{name}:"), m),
            }
        }
        let mut allow = Vec::new();
        for a in &raw.egress.allow {
            match a.parse::<IpNet>() {
                Ok(n) => allow.push(n),
                Err(e) => report(a, format!("`egress.allow` entry `{a}`: {e}")),
            }
        }
        let hosts = egress_hosts(&raw.egress.hosts, &mut report);
        let egress = EgressConfig {
            allow,
            hosts,
            connect_timeout: Duration::from_millis(raw.egress.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS)),
            timeout: Duration::from_millis(raw.egress.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            max_response_bytes: raw.egress.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            extra_roots: match &raw.egress.extra_roots {
                None => Vec::new(),
                Some(file) => portcullis_exec::load_roots(&dir.join(file)).unwrap_or_else(|m| {
                    report("extra_roots", format!("`egress.extra_roots`: {m}"));
                    Vec::new()
                }),
            },
        };
        let action_files = expand(&dir, "actions", &raw.actions, &mut report);
        let policy_files = expand(&dir, "policies", &raw.policies, &mut report);
        let agents = raw
            .agents
            .into_iter()
            .map(|(id, a)| {
                (
                    id,
                    AgentEntity {
                        attributes: a.attributes,
                        groups: a.groups,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>();
        for id in agents.keys() {
            if let Err(e) = portcullis_core::AgentId::new(id.clone()) {
                report(&format!("{id}:"), e.to_string());
            }
        }
        for (id, admin) in &raw.admins {
            if portcullis_core::AgentId::new(id.clone()).is_err() {
                report(
                    &format!("{id}:"),
                    format!("admin id `{id}` may contain only ASCII letters, digits, `_`, `-` and `.`"),
                );
            }
            if agents.contains_key(id) {
                report(
                    &format!("{id}:"),
                    format!("`{id}` is both an agent and an admin: an agent must never approve"),
                );
            }
            if admin.role == Role::Approver && admin.groups.is_empty() {
                report(
                    &format!("{id}:"),
                    format!("approver `{id}` has no `groups`: it could approve only holds that name no group"),
                );
            }
        }
        if let Some(u) = &raw.approvals.public_url
            && url::Url::parse(u).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            report(
                "public_url",
                format!("`approvals.public_url` `{u}` is not an http(s) URL"),
            );
        }
        if raw.approvals.expiry_seconds == Some(0) {
            report(
                "expiry_seconds",
                "`approvals.expiry_seconds` must be at least 1".to_owned(),
            );
        }
        if let Some(w) = &raw.approvals.webhook
            && url::Url::parse(&w.url).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            report(
                "url:",
                format!("`approvals.webhook.url` `{}` is not an http(s) URL", w.url),
            );
        }
        let mcp = mcp_settings(&raw.mcp, &mut report);
        let oidc = raw.oidc.and_then(|o| match crate::oidc::OidcSpec::from_raw(o) {
            Ok(spec) => Some(spec),
            Err(m) => {
                report("oidc:", m);
                None
            }
        });
        let vault = raw
            .vault
            .and_then(|v| match crate::vault::VaultSpec::from_raw(v, &dir) {
                Ok(spec) => Some(spec),
                Err(m) => {
                    report("vault:", m);
                    None
                }
            });
        let (quotas, quota_problems) =
            crate::quota::Quotas::new(raw.quotas, |name| portcullis_core::line_of(source, &format!("{name}:")));
        for (name, m) in quota_problems {
            report(&format!("{name}:"), m);
        }
        let detector = detector(raw.redaction, &mut report);
        let logging = log_settings(raw.logging, &mut report);
        let tracing = tracing_settings(raw.tracing, &mut report);
        let audit = AuditSettings {
            checkpoint_every: raw.audit.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT_EVERY),
            checkpoint_interval: Duration::from_secs(
                raw.audit
                    .checkpoint_seconds
                    .unwrap_or(DEFAULT_CHECKPOINT_SECONDS)
                    .max(1),
            ),
            checkpoint_key: raw
                .audit
                .checkpoint_key
                .unwrap_or_else(|| DEFAULT_CHECKPOINT_KEY.to_owned()),
        };
        let shutdown_deadline = Duration::from_secs(
            raw.shutdown
                .deadline_seconds
                .unwrap_or(DEFAULT_SHUTDOWN_DEADLINE_SECONDS),
        );
        let entities = raw
            .entities
            .into_iter()
            .map(|e| EntityDecl {
                uid: EntityRef {
                    entity_type: e.entity_type,
                    id: e.id,
                },
                attrs: e.attrs,
                parents: e
                    .parents
                    .into_iter()
                    .map(|p| EntityRef {
                        entity_type: p.entity_type,
                        id: p.id,
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        let provenance = crate::provenance::ProvenanceSettings::new(raw.provenance, &agents, &entities, &detector)
            .unwrap_or_else(|problems| {
                for m in problems {
                    report("provenance:", m);
                }
                crate::provenance::ProvenanceSettings::default()
            });
        Self {
            path: path.to_owned(),
            listen,
            store,
            master_key,
            previous_master_keys,
            agents,
            credentials,
            action_files,
            policy_files,
            egress,
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            json_limits: json::Limits {
                max_depth: raw.limits.max_depth.unwrap_or(json::DEFAULT_MAX_DEPTH),
            },
            entities,
            admins: raw.admins,
            hold_expiry: Duration::from_secs(raw.approvals.expiry_seconds.unwrap_or(DEFAULT_HOLD_EXPIRY_SECONDS)),
            webhook: raw.approvals.webhook,
            public_url: raw.approvals.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            mcp,
            metrics_enabled: raw.metrics.enabled,
            quotas,
            vault,
            oidc,
            detector,
            logging,
            tracing,
            shutdown_deadline,
            audit,
            provenance,
        }
    }
}

/// Builds the detector; on a problem, reports it and falls back to every builtin rule, so
/// that `portcullis check` goes on checking the rest.
fn detector(raw: RawRedaction, report: &mut dyn FnMut(&str, String)) -> Arc<Detector> {
    let custom: Vec<CustomRule> = raw
        .rules
        .into_iter()
        .map(|r| CustomRule {
            id: r.id,
            category: match r.category {
                RuleCategory::Secret => Category::Secret,
                RuleCategory::Pii => Category::Pii,
            },
            description: r.description,
            keywords: r.keywords,
            regex: r.regex,
            examples_true: r.examples_true,
            examples_false: r.examples_false,
        })
        .collect();
    match Detector::configure(&raw.disable, &custom) {
        Ok(detector) => Arc::new(detector),
        Err(errors) => {
            for e in errors {
                report(&e.rule, format!("`redaction`: {e}"));
            }
            Arc::new(Detector::builtin())
        }
    }
}

/// Checks the MCP host and origin lists; origins get their port written out, so that
/// `https://a.example` means port 443 and not "any port".
fn mcp_settings(raw: &RawMcp, report: &mut dyn FnMut(&str, String)) -> McpSettings {
    let mut settings = McpSettings::default();
    for h in &raw.allowed_hosts {
        let ok = !h.is_empty()
            && !h.contains(['/', '@', '?', '#'])
            && !h.chars().any(char::is_whitespace)
            && url::Url::parse(&format!("http://{h}/")).is_ok_and(|u| u.host().is_some());
        if ok {
            settings.allowed_hosts.push(h.to_ascii_lowercase());
        } else {
            report(
                h,
                format!("`mcp.allowed_hosts` entry `{h}` is not a `host` or `host:port`"),
            );
        }
    }
    for o in &raw.allowed_origins {
        match url::Url::parse(o) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && !o.ends_with('/')
                    && u.username().is_empty()
                    && u.query().is_none() =>
            {
                let (scheme, host) = (u.scheme(), u.host_str().unwrap_or_default());
                let port = u.port_or_known_default().unwrap_or(80);
                settings.allowed_origins.push(format!("{scheme}://{host}:{port}"));
            }
            _ => report(
                o,
                format!("`mcp.allowed_origins` entry `{o}` is not an origin like `https://app.example.com`"),
            ),
        }
    }
    settings
}

/// The keys of a config that failed to deserialize that still deserialize on their own
/// (an unknown or malformed key is left out), so that one typo doesn't hide the rest.
fn salvage(source: &str) -> Option<RawConfig> {
    let Ok(Value::Object(map)) = serde_saphyr::from_str::<Value>(source) else {
        return None;
    };
    let mut kept = Map::new();
    for (key, value) in map {
        let mut trial = kept.clone();
        trial.insert(key, value);
        if serde_json::from_value::<RawConfig>(Value::Object(trial.clone())).is_ok() {
            kept = trial;
        }
    }
    serde_json::from_value(Value::Object(kept)).ok()
}

fn credential(name: &str, c: RawCredential) -> Result<CredentialSpec, String> {
    let need = |field: &Option<String>, what: &str| {
        field
            .clone()
            .ok_or_else(|| format!("credential `{name}` of kind `{what}` needs `{}`", field_name(what)))
    };
    let oauth2 = crate::oauth2::OAuth2Spec::from_raw(name, &c)?;
    let secret = match (&c.secret, &oauth2) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "credential `{name}`: an OAuth2 credential has no `secret` (its token comes from `token_url`)"
            ));
        }
        (Some(s), None) => {
            Some(crate::credentials::SecretSource::parse(s).map_err(|e| format!("credential `{name}`: {e}"))?)
        }
        (None, None) => {
            return Err(format!(
                "credential `{name}` of kind `{}` needs `secret`",
                kind_name(c.kind)
            ));
        }
        (None, Some(_)) => None,
    };
    let (username, header, param) = match c.kind {
        CredentialKind::Bearer | CredentialKind::Oauth2ClientCredentials | CredentialKind::Oauth2RefreshToken => {
            (None, None, None)
        }
        CredentialKind::Basic => (Some(need(&c.username, "basic")?), None, None),
        CredentialKind::Header => {
            let h = need(&c.header, "header")?;
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("credential `{name}`: `{h}` is not a valid header name"));
            }
            (None, Some(h), None)
        }
        CredentialKind::Query => (None, None, Some(need(&c.param, "query")?)),
    };
    if c.prefix.as_deref().is_some_and(|p| p.contains(['\r', '\n'])) {
        return Err(format!("credential `{name}`: `prefix` contains a line break"));
    }
    Ok(CredentialSpec {
        kind: c.kind,
        secret,
        oauth2,
        username,
        header,
        prefix: c.prefix.unwrap_or_default(),
        param,
    })
}

fn kind_name(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Bearer => "bearer",
        CredentialKind::Basic => "basic",
        CredentialKind::Header => "header",
        CredentialKind::Query => "query",
        CredentialKind::Oauth2ClientCredentials => "oauth2_client_credentials",
        CredentialKind::Oauth2RefreshToken => "oauth2_refresh_token",
    }
}

fn field_name(kind: &str) -> &'static str {
    match kind {
        "basic" => "username",
        "header" => "header",
        _ => "param",
    }
}

/// `egress.hosts`, names normalized (lowercase, no trailing dot) and every address parsed.
fn egress_hosts(
    raw: &BTreeMap<String, Vec<String>>,
    report: &mut dyn FnMut(&str, String),
) -> BTreeMap<String, Vec<IpAddr>> {
    let mut hosts = BTreeMap::new();
    for (written, addrs) in raw {
        let name = written.strip_suffix('.').unwrap_or(written).to_ascii_lowercase();
        if let Err(why) = pinnable_name(&name) {
            report(written, format!("`egress.hosts` name `{written}` {why}"));
            continue;
        }
        if addrs.is_empty() {
            report(written, format!("`egress.hosts` entry `{written}` lists no address"));
            continue;
        }
        let mut parsed = Vec::with_capacity(addrs.len());
        for a in addrs {
            match a.parse::<IpAddr>() {
                Ok(ip) => parsed.push(ip),
                Err(_) => report(
                    a,
                    format!(
                        "`egress.hosts` entry `{written}`: `{a}` is not an IP address like `10.0.0.7` or `fd00::7`"
                    ),
                ),
            }
        }
        if parsed.len() != addrs.len() {
            continue;
        }
        if hosts.insert(name.clone(), parsed).is_some() {
            report(
                written,
                format!(
                    "`egress.hosts` names `{name}` twice (names are matched case-insensitively, with or without a final dot)"
                ),
            );
        }
    }
    hosts
}

/// Whether `name` (lowercase, no trailing dot) is a host name a URL can carry as a name:
/// ASCII labels of letters, digits, `-` and `_`, not a spelling of an IP address (which
/// would never be resolved, so an entry for it could only mislead).
fn pinnable_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("is not a host name");
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.is_ascii() {
        return Err("is not ASCII: write an international name in its `xn--` form");
    }
    if !labels.iter().all(label_ok) {
        return Err("is not a host name");
    }
    // A URL reads a host whose last label is a number (`127.1`, `0x7f`) as an IPv4 address.
    let last = labels.last().copied().unwrap_or_default();
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if last.bytes().all(|b| b.is_ascii_digit()) || hex {
        return Err("is an IP address, not a name");
    }
    Ok(())
}

fn expand(dir: &Path, key: &str, patterns: &[String], report: &mut dyn FnMut(&str, String)) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for pat in patterns {
        let full = dir.join(pat);
        match glob::glob(&full.to_string_lossy()) {
            Ok(paths) => {
                let before = out.len();
                out.extend(paths.filter_map(Result::ok));
                if out.len() == before {
                    report(pat, format!("`{key}` pattern `{pat}` matches no file"));
                }
            }
            Err(e) => report(pat, format!("`{key}` pattern `{pat}` is invalid: {e}")),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The JSON Schema of the configuration file, generated from [`RawConfig`].
#[must_use]
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_hosts_and_origins_are_checked_and_origins_get_their_port() {
        let src = "mcp:\n  allowed_hosts: [Gateway.Example.com, \"gw.example.com:8443\", \"bad/host\"]\n  \
                   allowed_origins: [\"https://agents.example.com\", \"http://a.example:8080\", \"https://x.example/path\", \"ftp://y.example\"]\n";
        let (config, problems) = Config::parse_all(Path::new("portcullis.yaml"), src);
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("`bad/host`"), "{messages:?}");
        assert!(messages[1].contains("`https://x.example/path`"), "{messages:?}");
        assert!(messages[2].contains("`ftp://y.example`"), "{messages:?}");
        let mcp = config.map(|c| c.mcp).unwrap_or_default();
        assert_eq!(mcp.allowed_hosts, ["gateway.example.com", "gw.example.com:8443"]);
        assert_eq!(
            mcp.allowed_origins,
            ["https://agents.example.com:443", "http://a.example:8080"]
        );
    }

    #[test]
    fn egress_hosts_are_normalized_and_every_bad_entry_is_reported() {
        let src = "egress:\n  hosts:\n    Api.Internal.Example.: [10.20.0.7, \"fd00::7\"]\n    \
                   ok.test: [127.0.0.1]\n    empty.test: []\n    bad.test: [10.0.0.1, \"[::1]\", nowhere]\n    \
                   \"127.1\": [127.0.0.1]\n    OK.test.: [127.0.0.2]\n    \"a/b\": [127.0.0.1]\n";
        let (config, problems) = Config::parse_all(Path::new("portcullis.yaml"), src);
        let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let expected = [
            "`egress.hosts` name `127.1` is an IP address, not a name",
            "`egress.hosts` names `ok.test` twice",
            "`egress.hosts` name `a/b` is not a host name",
            "`egress.hosts` entry `bad.test`: `[::1]` is not an IP address",
            "`egress.hosts` entry `bad.test`: `nowhere` is not an IP address",
            "`egress.hosts` entry `empty.test` lists no address",
        ];
        assert_eq!(messages.len(), expected.len(), "{messages:#?}");
        for e in expected {
            assert!(messages.iter().any(|m| m.contains(e)), "`{e}` not in {messages:#?}");
        }
        let hosts = config.map(|c| c.egress.hosts).unwrap_or_default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(hosts["api.internal.example"], [ip("10.20.0.7"), ip("fd00::7")]);
        assert_eq!(hosts["ok.test"].len(), 1);
        assert!(!hosts.contains_key("bad.test") && !hosts.contains_key("empty.test"));
    }
}
