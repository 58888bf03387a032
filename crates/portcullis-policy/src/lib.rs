//! Cedar policy for Portcullis.
//!
//! The Cedar schema is generated from the catalog (each action's JSON Schema becomes the
//! type of `context.input`), from the agents' attributes and from the trusted entity data
//! in the configuration. Policies are validated against it in strict mode at load, so a
//! policy that names an action, attribute or input field that doesn't exist is a load
//! error with its file and line. Evaluation is default deny, forbid wins, and any
//! evaluation error denies.

mod authorize;
mod context;
mod counters;
mod engine;
mod entities;
mod permitted;
mod provenance;
mod reads;
mod schema;

pub use counters::{CounterSpec, CounterState, SUM_SCALE};
pub use engine::{Claims, Decided, Facts, PolicyEngine, PolicyInputs};
pub use entities::{AgentEntity, EntityDecl, EntityRef};
pub use permitted::Permitted;
pub use provenance::{InputProvenance, Mark};
