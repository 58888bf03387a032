//! Integration tests: the real client against tiny HTTP servers on loopback.

// `cfg(test)` makes clippy treat the helpers as test code (unwrap allowed, as in every test).
#[cfg(test)]
mod egress;
#[cfg(test)]
mod prepare;
#[cfg(test)]
mod redirects;
#[cfg(test)]
mod server;
