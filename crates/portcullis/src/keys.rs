//! Agent tokens.

/// A new agent token: `pcl_` and 32 random bytes as hex (256 bits, so a plain SHA-256 of
/// it is a safe stored form: there is nothing to brute-force).
pub fn new_agent_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("pcl_{hex}")
}
