//! `portcullis_intent_status`: the gateway's own tool that fetches the outcome of a held
//! intent, for clients that don't speak the tasks extension. Listed only to agents with an
//! action some `@hold` permit applies to.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

/// The tool's name.
pub(crate) const NAME: &str = "portcullis_intent_status";
/// The longest a single call waits (the gateway's long-poll limit).
const MAX_WAIT_SECONDS: u64 = 60;

/// The tool as listed.
pub(crate) fn tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "intent_id": {"type": "string", "minLength": 1, "maxLength": 100,
                          "description": "The intent id returned by the held tool call"},
            "wait_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS,
                             "description": "Wait up to this many seconds for a decision (default 0)"},
        },
        "required": ["intent_id"],
        "additionalProperties": false,
    });
    let Value::Object(schema) = schema else {
        return Tool::new(NAME, "", JsonObject::new());
    };
    Tool::new(
        NAME,
        "Get the outcome of a tool call that was held for human approval: still pending, \
         executed (with its result), denied (with the reasons), failed or expired. \
         Optionally waits for a decision.",
        Arc::new(schema),
    )
    .annotate(
        ToolAnnotations::new()
            .read_only(true)
            .destructive(false)
            .idempotent(true)
            .open_world(false),
    )
}

/// The arguments of a call.
#[derive(Debug)]
pub(crate) struct StatusArgs {
    pub(crate) intent_id: String,
    pub(crate) wait: Duration,
}

/// Parses the arguments strictly, naming the offending field.
pub(crate) fn parse(args: Option<&JsonObject>) -> Result<StatusArgs, String> {
    let empty = JsonObject::new();
    let args = args.unwrap_or(&empty);
    if let Some(k) = args
        .keys()
        .find(|k| !matches!(k.as_str(), "intent_id" | "wait_seconds"))
    {
        return Err(format!("unknown field `{k}`"));
    }
    let intent_id = match args.get("intent_id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 100 => s.clone(),
        Some(_) => return Err("`intent_id` must be a string of 1 to 100 characters".to_owned()),
        None => return Err("missing field `intent_id`".to_owned()),
    };
    let wait = match args.get("wait_seconds") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_WAIT_SECONDS => n,
            _ => {
                return Err(format!(
                    "`wait_seconds` must be a whole number from 0 to {MAX_WAIT_SECONDS}"
                ));
            }
        },
    };
    Ok(StatusArgs {
        intent_id,
        wait: Duration::from_secs(wait),
    })
}
