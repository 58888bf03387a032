//! What an intent's outcome looks like to an MCP client: tool results, tool errors and
//! JSON-RPC errors, each built in one place.

use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, MetaObject};
use serde_json::{Value, json};

use portcullis_engine::{IntentError, IntentStatus, Submitted};

use super::status;

/// The `_meta` key naming the intent a result belongs to.
const INTENT_META: &str = "portcullis/intent_id";
/// How long to wait per status call, suggested to the client.
const SUGGESTED_WAIT: u64 = 60;

/// The tool result of an intent that reached a decision (or a later state).
pub(crate) fn outcome(s: &Submitted) -> CallToolResult {
    let body = &s.body();
    let id = body["id"].as_str().unwrap_or_default();
    let result = match s.status {
        IntentStatus::Executed => executed(body),
        IntentStatus::Denied => refused(body, "denied by policy"),
        IntentStatus::Expired => refused(body, "not approved before the approval window closed; nothing ran"),
        IntentStatus::Failed => {
            let error = body["error"].as_str().unwrap_or("the action could not be executed");
            with_structured(
                CallToolResult::error(vec![ContentBlock::text(format!("failed: {error}"))]),
                json!({"intent_id": id, "status": "failed", "error": error}),
            )
        }
        IntentStatus::Withheld => {
            let error = body["error"].as_str().unwrap_or("the response was withheld");
            with_structured(
                CallToolResult::error(vec![ContentBlock::text(format!("withheld: {error}"))]),
                json!({"intent_id": id, "status": "withheld", "error": error}),
            )
        }
        IntentStatus::OutcomeUnknown => {
            let error = body["error"].as_str().unwrap_or("the outcome is unknown");
            with_structured(
                CallToolResult::error(vec![ContentBlock::text(format!("outcome unknown: {error}"))]),
                json!({"intent_id": id, "status": "outcome_unknown", "error": error}),
            )
        }
        IntentStatus::PendingApproval => pending(body),
        IntentStatus::Executing => with_structured(
            CallToolResult::success(vec![ContentBlock::text(format!(
                "intent `{id}` is still executing; call `{}` again with this intent_id",
                status::NAME
            ))]),
            json!({"intent_id": id, "status": "executing"}),
        ),
        IntentStatus::DryRun => with_structured(
            CallToolResult::success(vec![ContentBlock::text(pretty(&body["request"]))]),
            json!({"intent_id": id, "status": "dry_run", "request": body["request"]}),
        ),
    };
    tagged(result, id)
}

/// An executed intent: the redacted, projected upstream body as structured content, and the
/// same as pretty JSON text. Structured content must be an object, so a body that isn't one
/// is wrapped as `{"status", "body"}`; so is any body when the action exposes response
/// headers (other than `content-type`), which then come along as `headers`. An upstream
/// error status makes it a tool error.
fn executed(body: &Value) -> CallToolResult {
    let result = &body["result"];
    let upstream = result["status"].as_u64().unwrap_or(0);
    let mut headers = result["headers"].as_object().cloned().unwrap_or_default();
    headers.retain(|name, _| !name.eq_ignore_ascii_case("content-type"));
    let structured = match &result["body"] {
        b @ Value::Object(_) if headers.is_empty() => b.clone(),
        b if headers.is_empty() => json!({"status": upstream, "body": b}),
        b => json!({"status": upstream, "headers": headers, "body": b}),
    };
    if upstream >= 400 {
        let text = format!("the upstream answered HTTP {upstream}:\n{}", pretty(&structured));
        return with_structured(CallToolResult::error(vec![ContentBlock::text(text)]), structured);
    }
    with_structured(
        CallToolResult::success(vec![ContentBlock::text(pretty(&structured))]),
        structured,
    )
}

/// A denied or expired intent: a tool error whose text gives the reasons.
fn refused(body: &Value, what: &str) -> CallToolResult {
    let reasons = reasons(body);
    let text = if reasons.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {}", reasons.join("; "))
    };
    let structured = json!({
        "intent_id": body["id"],
        "status": body["status"],
        "reasons": reasons,
    });
    with_structured(CallToolResult::error(vec![ContentBlock::text(text)]), structured)
}

/// A held intent, for clients without the tasks extension: not an error; the text says
/// what happens next and how to get the outcome.
fn pending(body: &Value) -> CallToolResult {
    let id = body["id"].as_str().unwrap_or_default();
    let reasons = reasons(body);
    let text = format!(
        "Held for human approval ({}). Nothing has run yet. Intent id: {id}\n\
         To get the outcome once a person has decided, call the tool `{}` with \
         {{\"intent_id\": \"{id}\", \"wait_seconds\": {SUGGESTED_WAIT}}}; repeat while its status is \
         `pending_approval`.",
        reasons.join("; "),
        status::NAME,
    );
    let structured = json!({
        "intent_id": id,
        "status": "pending_approval",
        "reasons": reasons,
        "approval": body["approval"],
    });
    with_structured(CallToolResult::success(vec![ContentBlock::text(text)]), structured)
}

/// What a failed call looks like: a tool error the agent can read, or a JSON-RPC error for
/// a call that named no tool it may call. One exhaustive match, so that a new error kind
/// forces a decision about what of it reaches the agent.
pub(crate) fn intent_error(e: IntentError) -> Result<CallToolResult, ErrorData> {
    let message = e.to_string();
    let (text, structured) = match e {
        // Never reached: `/mcp` answers 401 first, and `portcullis mcp` checks its token
        // at start-up. Refuse without detail anyway.
        IntentError::Unauthenticated => return Err(ErrorData::invalid_request(message, None)),
        // A nonexistent action and one this agent may not see answer the same.
        IntentError::UnknownAction(name) => return Err(unknown_tool(&name)),
        IntentError::InvalidInput { action, problems } => (
            format!(
                "invalid input for `{action}`:\n{}",
                problems.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n")
            ),
            json!({"error": "invalid_input", "problems": problems}),
        ),
        IntentError::Malformed(_) => (message, json!({"error": "malformed_request"})),
        IntentError::IdempotencyConflict(_) => (message, json!({"error": "idempotency_conflict"})),
        IntentError::IdempotencyInProgress(_) => (message, json!({"error": "idempotency_in_progress"})),
        IntentError::IntentNotFound => ("no such intent of yours".to_owned(), json!({"error": "not_found"})),
        IntentError::OutcomeNotRecorded(id) => (
            format!(
                "the action ran, but its outcome could not be recorded; call `{}` with intent_id `{id}` for the result",
                status::NAME
            ),
            json!({"error": "outcome_not_recorded", "intent_id": id}),
        ),
        IntentError::RateLimited(limit) => (
            message,
            json!({"error": "rate_limited", "quota": limit.quota, "used": limit.used, "max": limit.max,
                   "requested": limit.requested, "resets_at": limit.resets_at,
                   "retry_after_seconds": limit.retry_after_secs}),
        ),
        // The cause stays in the gateway's log: it may name internal paths.
        IntentError::StoreUnavailable(_) => (message, json!({"error": "unavailable"})),
        IntentError::NotAccepting(not_ready) => (message, json!({"error": "not_ready", "check": not_ready.check})),
    };
    Ok(with_structured(
        CallToolResult::error(vec![ContentBlock::text(text)]),
        structured,
    ))
}

/// The JSON-RPC error for a tool that doesn't exist or isn't this agent's to call.
pub(crate) fn unknown_tool(name: &str) -> ErrorData {
    ErrorData::invalid_params(format!("unknown tool `{name}`"), None)
}

/// A tool error for bad arguments of the gateway's own tools.
pub(crate) fn invalid_arguments(problem: &str) -> CallToolResult {
    with_structured(
        CallToolResult::error(vec![ContentBlock::text(format!("invalid arguments: {problem}"))]),
        json!({"error": "invalid_input", "problems": [problem]}),
    )
}

fn reasons(body: &Value) -> Vec<String> {
    body["decision"]["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn with_structured(mut result: CallToolResult, structured: Value) -> CallToolResult {
    result.structured_content = Some(structured);
    result
}

fn tagged(result: CallToolResult, id: &str) -> CallToolResult {
    if id.is_empty() {
        return result;
    }
    let mut meta = JsonObject::new();
    meta.insert(INTENT_META.to_owned(), Value::String(id.to_owned()));
    result.with_meta(Some(MetaObject(meta)))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_withheld_result_is_a_tool_error_naming_what_was_found() {
        let error = "the action was executed, but its response was withheld because it contains data this action may not return (payment-card at /pan)";
        let submitted = Submitted::new(
            IntentStatus::Withheld,
            &json!({"id": "int_1", "status": "withheld", "error": error}),
        );
        let result = serde_json::to_value(outcome(&submitted)).unwrap();
        assert_eq!(result["isError"], true, "{result}");
        assert_eq!(result["content"][0]["text"], format!("withheld: {error}"));
        assert_eq!(
            result["structuredContent"],
            json!({"intent_id": "int_1", "status": "withheld", "error": error})
        );
    }
}
