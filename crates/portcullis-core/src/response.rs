/// A response as the upstream sent it, before redaction. It may contain credentials
/// and must go through the redactor before anything of it reaches the agent, a log or
/// the audit log.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, lowercase names, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, at most the configured size cap.
    pub body: Vec<u8>,
}
