//! Agent tokens.

/// A new agent token: `pcl_` and 32 random bytes as hex (256 bits, so a plain SHA-256 of
/// it is a safe stored form: there is nothing to brute-force).
pub fn new_agent_token() -> String {
    token("pcl_")
}

/// A new login token for a person in `admins`: `pcp_` and 32 random bytes as hex.
pub fn new_person_token() -> String {
    token("pcp_")
}

fn token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}
