//! The MCP request handler shared by both transports.

use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CancelTaskParams, CreateTaskResult, DetailedTask,
    GetTaskParams, GetTaskResult, Implementation, InitializeResult, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Task, TaskPayload, TaskStatus, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use portcullis_core::{AgentId, IntentId};
use portcullis_engine::{ActionView, Gateway, IntentError, IntentRequest, IntentStatus, Live, Submitted};
use portcullis_policy::Claims;
use tracing::Instrument as _;

use super::{render, status};

pub(crate) use portcullis_engine::{IDEMPOTENCY_META, SESSION_META};
/// How often a tasks client is asked to poll a held intent.
const TASK_POLL_MS: u64 = 2_000;

/// Serves one agent's MCP requests against the gateway.
#[derive(Debug, Clone)]
pub(crate) struct McpHandler {
    live: Arc<Live>,
    /// The agent of a stdio session; over HTTP each request names its own (authenticated
    /// in front of rmcp and passed in the request's extensions).
    agent: Option<AgentId>,
    /// Held for reading by every executing tool call, so that a shutdown can wait for them.
    in_flight: Arc<tokio::sync::RwLock<()>>,
    /// The session of a stdio connection: one client process, one task, unless a call
    /// names another. Over HTTP (stateless) a call names its session itself.
    session: Option<String>,
}

impl McpHandler {
    pub(crate) fn over_http(live: Arc<Live>) -> Self {
        Self {
            live,
            agent: None,
            in_flight: Arc::default(),
            session: None,
        }
    }

    pub(crate) fn for_agent(live: Arc<Live>, agent: AgentId, session: Option<String>) -> Self {
        Self {
            live,
            agent: Some(agent),
            in_flight: Arc::default(),
            session,
        }
    }

    /// The gateway serving now.
    fn gateway(&self) -> Arc<Gateway> {
        self.live.current()
    }

    /// The lock executing tool calls hold for reading.
    pub(crate) fn in_flight(&self) -> Arc<tokio::sync::RwLock<()>> {
        Arc::clone(&self.in_flight)
    }

    fn agent(&self, ctx: &RequestContext<RoleServer>) -> Result<AgentId, ErrorData> {
        if let Some(agent) = &self.agent {
            return Ok(agent.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<AgentId>())
            .cloned()
            .ok_or_else(|| ErrorData::invalid_request("the request carries no authenticated agent", None))
    }

    /// What the identity provider's token said about the agent (streamable HTTP with a JWT).
    fn claims(ctx: &RequestContext<RoleServer>) -> Option<Claims> {
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Claims>())
            .cloned()
    }

    /// A tool call as an intent. The pipeline runs in its own task, so that an intent that
    /// reached the upstream is finished and audited even when the client goes away.
    async fn submit(
        &self,
        agent: AgentId,
        claims: Option<Claims>,
        request: IntentRequest,
    ) -> Result<Submitted, IntentError> {
        let admitted = self.live.admit()?;
        let guard = Arc::clone(&self.in_flight).read_owned().await;
        tokio::spawn(
            async move {
                let _running = guard;
                let submitted = admitted.gateway.submit_as(&agent, claims.as_ref(), request).await;
                drop(admitted);
                submitted
            }
            .instrument(portcullis_engine::trace::intent_span()),
        )
        .await
        .map_err(|e| IntentError::StoreUnavailable(format!("the intent task failed: {e}")))?
    }

    async fn intent_status(&self, agent: &AgentId, args: Option<&JsonObject>) -> CallToolResponse {
        let args = match status::parse(args) {
            Ok(a) => a,
            Err(problem) => return render::invalid_arguments(&problem).into(),
        };
        let fetched = if args.wait.is_zero() {
            self.gateway().intent(agent, &args.intent_id).await
        } else {
            self.gateway().wait_intent(agent, &args.intent_id, args.wait).await
        };
        match fetched {
            Ok(s) => render::outcome(&s).into(),
            Err(e) => render::intent_error(e)
                .unwrap_or_else(|e| render::invalid_arguments(&e.message))
                .into(),
        }
    }

    /// A held intent as a task, for clients that declared the tasks extension.
    async fn task(&self, submitted: &Submitted) -> DetailedTask {
        let body = submitted.body();
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let (created, updated) = self.task_times(&id).await;
        let task = Task::new(id, TaskStatus::Working, created, updated).with_poll_interval_ms(TASK_POLL_MS);
        match submitted.status {
            IntentStatus::PendingApproval => {
                let reasons = reason_text(&body);
                DetailedTask::new(
                    task.with_status_message(format!("held for human approval: {reasons}")),
                    TaskPayload::Working,
                )
            }
            IntentStatus::Executing => DetailedTask::new(task.with_status_message("executing"), TaskPayload::Working),
            IntentStatus::Executed
            | IntentStatus::Denied
            | IntentStatus::Failed
            | IntentStatus::DryRun
            | IntentStatus::Expired
            | IntentStatus::Withheld
            | IntentStatus::OutcomeUnknown => {
                let result = match serde_json::to_value(render::outcome(submitted)) {
                    Ok(Value::Object(o)) => o,
                    _ => JsonObject::new(),
                };
                DetailedTask::new(task, TaskPayload::Completed { result })
            }
        }
    }

    /// When the hold was created and last changed; now for an intent that was never held.
    async fn task_times(&self, id: &str) -> (String, String) {
        let hold = match IntentId::new(id) {
            Ok(id) => self.gateway().store().get_hold(&id).await.ok().flatten(),
            Err(_) => None,
        };
        match hold {
            Some(h) => {
                let updated = h.decided_at.unwrap_or_else(|| h.created_at.clone());
                (h.created_at, updated)
            }
            None => {
                let now = portcullis_core::now_rfc3339();
                (now.clone(), now)
            }
        }
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder().enable_tools().enable_tasks().build();
        let mut info = InitializeResult::new(capabilities);
        info.server_info = Implementation::new("portcullis", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "Each tool is an action approved by this gateway's operators. Calls are checked by policy: \
             a refused call is a tool error giving the reasons; a call held for human approval returns \
             its intent id, and `portcullis_intent_status` returns the outcome once a person decides."
                .to_owned(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let agent = self.agent(&ctx)?;
        let claims = Self::claims(&ctx);
        // The gateway's own tool name is reserved: an action of that name is not offered.
        let mut tools: Vec<Tool> = self
            .gateway()
            .actions_for(&agent, claims.as_ref())
            .into_iter()
            .filter(|a| a.name != status::NAME)
            .map(action_tool)
            .collect();
        if self.gateway().may_hold(&agent, claims.as_ref()) {
            tools.push(status::tool());
        }
        let mut result = ListToolsResult::with_all_items(tools);
        // The list depends on who asks, and on policies that may be reloaded.
        result.ttl_ms = Some(0);
        result.cache_scope = Some(CacheScope::Private);
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let agent = self.agent(&ctx)?;
        if request.name == status::NAME {
            if !self.gateway().may_hold(&agent, Self::claims(&ctx).as_ref()) {
                return Err(render::unknown_tool(status::NAME));
            }
            return Ok(self.intent_status(&agent, request.arguments.as_ref()).await);
        }
        let key = ctx
            .meta
            .get(IDEMPOTENCY_META)
            .or_else(|| request.meta.as_ref().and_then(|m| m.get(IDEMPOTENCY_META)))
            .cloned();
        // The session: the call's `_meta`, else the HTTP request's header, else the stdio
        // connection's own.
        let session = ctx
            .meta
            .get(SESSION_META)
            .or_else(|| request.meta.as_ref().and_then(|m| m.get(SESSION_META)))
            .cloned()
            .or_else(|| {
                ctx.extensions
                    .get::<axum::http::request::Parts>()
                    .and_then(|parts| parts.headers.get(crate::rest::SESSION_HEADER))
                    .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            })
            .or_else(|| self.session.clone().map(Value::String));
        let limits = self.gateway().loaded().config.json_limits;
        let parsed = IntentRequest::from_tool_call(request.name.into(), request.arguments, key, session, limits);
        let intent = match parsed {
            Ok(r) => r,
            Err(e) => return render::intent_error(self.gateway().reject_request(&agent, e).await).map(Into::into),
        };
        let tasks = ctx.client_capabilities().is_some_and(|c| c.supports_tasks());
        match self.submit(agent, Self::claims(&ctx), intent).await {
            Ok(s) if tasks && s.status == IntentStatus::PendingApproval => {
                let detailed = self.task(&s).await;
                Ok(CallToolResponse::Task(CreateTaskResult::new(detailed.task)))
            }
            Ok(s) => Ok(render::outcome(&s).into()),
            Err(e) => render::intent_error(e).map(Into::into),
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let agent = self.agent(&ctx)?;
        match self.gateway().intent(&agent, &request.task_id).await {
            Ok(s) => Ok(GetTaskResult::new(self.task(&s).await)),
            Err(IntentError::IntentNotFound) => Err(ErrorData::invalid_params(
                format!("unknown task `{}`", request.task_id),
                None,
            )),
            Err(e) => Err(ErrorData::internal_error(e.to_string(), None)),
        }
    }

    async fn cancel_task(&self, request: CancelTaskParams, ctx: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        let agent = self.agent(&ctx)?;
        // The agent that asked can't withdraw the request from the approvers; an approver
        // can deny it, and an undecided hold expires.
        match self.gateway().intent(&agent, &request.task_id).await {
            Ok(_) => Err(ErrorData::invalid_request(
                "a held intent can't be cancelled by the agent; an approver can deny it, and it expires undecided",
                None,
            )),
            Err(_) => Err(ErrorData::invalid_params(
                format!("unknown task `{}`", request.task_id),
                None,
            )),
        }
    }
}

/// An action as a tool: name, description, input schema and hints. Every action reaches
/// beyond the gateway, so `openWorldHint` is true.
fn action_tool(a: ActionView) -> Tool {
    let schema = match a.input_schema {
        Value::Object(o) => o,
        _ => JsonObject::from_iter([("type".to_owned(), Value::String("object".to_owned()))]),
    };
    Tool::new(a.name, a.description, Arc::new(schema)).annotate(
        ToolAnnotations::new()
            .read_only(a.hints.read_only)
            .destructive(a.hints.destructive)
            .idempotent(a.hints.idempotent)
            .open_world(true),
    )
}

fn reason_text(body: &Value) -> String {
    body["decision"]["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}
