use portcullis_catalog::{ActionDef, ValidInput, ValidationError};
use portcullis_core::Decision;
use portcullis_redact::detect::{Detector, Treatment};
use serde_json::Value;

/// A value that policy allowed. Only this crate can build one, so a function that takes
/// a `Permitted<T>` (the request builder, and through it the executor) can only run
/// after an allow.
#[derive(Debug, Clone)]
pub struct Permitted<T> {
    inner: T,
    decision: Decision,
}

impl<T> Permitted<T> {
    pub(crate) fn new(inner: T, decision: Decision) -> Self {
        Self { inner, decision }
    }

    /// The permitted value.
    pub fn get(&self) -> &T {
        &self.inner
    }

    /// The allow decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Takes the value out, ending the proof.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl Permitted<ValidInput> {
    /// The permitted input with what `detector` finds in it masked (an action that redacts
    /// its outbound payload), validated again. Masking only replaces values the policy
    /// already saw with placeholders, so the permission carries over to the result; no other
    /// change to a permitted input is possible.
    ///
    /// # Errors
    /// When the masked input no longer matches the action's schema (a masked `format: email`
    /// field, say); nothing may then be sent.
    pub fn redacted(self, action: &ActionDef, detector: &Detector) -> Result<Self, ValidationError> {
        let mut value: Value = self.inner.value().clone();
        detector.redact_json(&mut value, Treatment::Mask);
        let inner = action.validate(value)?;
        Ok(Self {
            inner,
            decision: self.decision,
        })
    }
}
