//! Egress for Portcullis: the execute stage of the pipeline.
//!
//! [`Egress`] sends a prepared request through the SSRF guard (forbidden address ranges,
//! checked on IP-literal hosts and on every resolved address, which are then pinned), with no
//! proxy, timeouts and a response size cap, and returns the [`RawResponse`] for the redactor.
//! Redirects are not followed unless the action enables them (`request.redirects`); then each
//! hop is guarded like the first, and the credential never leaves its realm ([`redirect`]).
//!
//! An `smtp:` action is sent by [`Egress::send_mail`] through the same guard and timeouts
//! ([`mail`] builds the message, a small SMTP client speaks to the server).
//!
//! [`RawResponse`]: portcullis_core::RawResponse

pub mod egress;
pub mod error;
mod guard;
pub mod mail;
pub mod net;
pub mod prepare;
pub mod redirect;
mod smtp;
mod tls;

pub use egress::{DangerousEgress, Egress, EgressConfig, OutboundRequest};
pub use error::{ExecError, NetParseError, RedirectError, SmtpError};
pub use net::{IpNet, forbidden_reason};
pub use tls::{client_config as tls_client_config, load_roots};
