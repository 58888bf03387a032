use portcullis_core::Decision;

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
