//! The Portcullis pipeline, wiring the parts together with no transport code:
//!
//! ```text
//! authenticate → resolve → validate → render → decide → audit(decided)
//!   → prepare(+credential) → execute → redact → audit(outcome) → result
//! ```
//!
//! Each stage's output type is the next stage's input, so the order is checked by the
//! compiler: a request can only be prepared from a `Permitted` input, which only the
//! policy engine builds, and the agent only ever receives an `AgentResult`, which only the
//! redactor builds.

mod approvals;
pub mod checkpoint;
pub mod config;
pub mod credentials;
mod error;
mod eval;
mod gateway;
mod intent;
mod live;
mod load;
pub mod metrics;
mod notify;
pub mod oauth2;
pub mod oidc;
pub mod provenance;
pub mod quota;
mod scrubbers;
pub mod trace;
pub mod vault;

pub use approvals::{ApprovalError, HoldView, MAX_WAIT, Person, VoteResult};
pub use config::Config;
pub use error::{IntentError, NotReady, RateLimit, StartError};
pub use eval::{EvalCase, EvalOutcome, TranscriptCall, evaluate_cases};
pub use gateway::{ActionView, Gateway, Submitted};
pub use intent::{
    DecisionView, IDEMPOTENCY_META, IntentRequest, IntentResponse, IntentStatus, RequestView, SESSION_META,
};
pub use live::{Admitted, Check, Live, Readiness, ReloadRefused, Reloaded};
pub use load::{Loaded, check, load};
pub use metrics::Metrics;
