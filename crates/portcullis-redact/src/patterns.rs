//! The byte strings that spell one secret value: the value itself and its encodings.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Secrets shorter than this are scrubbed only as they are, never in encoded form.
///
/// The encodings of a one-to-three byte value are short strings of ordinary characters (the hex
/// of `"ab"` is `6162`, its base64 `YWI=`) that turn up in unrelated output, so scrubbing them
/// would mangle responses while protecting almost nothing: a value that short can be guessed.
pub(crate) const MIN_ENCODED_LEN: usize = 4;

/// A base64 fragment of a secret embedded in a longer encoded string is scrubbed only when it
/// is at least this long; shorter fragments match unrelated base64 too often.
const MIN_FRAGMENT_LEN: usize = 8;

/// RFC 3986: everything but the unreserved characters is encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// JavaScript's `encodeURIComponent`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The WHATWG `application/x-www-form-urlencoded` serializer (space becomes `+`).
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

/// Adds every spelling of `secret` that the scrubber looks for to `out`.
pub(crate) fn add_patterns(secret: &str, out: &mut BTreeSet<Vec<u8>>) {
    if secret.is_empty() {
        return;
    }
    out.insert(secret.as_bytes().to_vec());
    if secret.len() < MIN_ENCODED_LEN {
        return;
    }
    add_base64(secret.as_bytes(), out);
    add_percent(secret, out);
    out.insert(hex::encode(secret).into_bytes());
    out.insert(hex::encode_upper(secret).into_bytes());
}

fn add_base64(secret: &[u8], out: &mut BTreeSet<Vec<u8>>) {
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.insert(engine.encode(secret).into_bytes());
    }
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            if let Some(fragment) = stable_fragment(&engine, secret, offset) {
                out.insert(fragment);
            }
        }
    }
}

/// The base64 characters that spell `secret` whatever surrounds it, when it starts at a byte
/// offset ≡ `offset` (mod 3) inside a longer encoded value (`Basic base64(user:secret)`).
///
/// Each character encodes 6 bits; only those whose bits all come from the secret are the same
/// in every such string. Encoding `offset` zero bytes before the secret puts it at the right
/// alignment, and the characters from `ceil(8·offset/6)` to `floor(8·(offset+len)/6)` are
/// exactly those.
fn stable_fragment(engine: &GeneralPurpose, secret: &[u8], offset: usize) -> Option<Vec<u8>> {
    let mut input = vec![0_u8; offset];
    input.extend_from_slice(secret);
    let encoded = engine.encode(&input).into_bytes();
    let start = (8 * offset).div_ceil(6);
    let end = 8 * (offset + secret.len()) / 6;
    let fragment = encoded.get(start..end)?;
    (fragment.len() >= MIN_FRAGMENT_LEN).then(|| fragment.to_vec())
}

fn add_percent(secret: &str, out: &mut BTreeSet<Vec<u8>>) {
    let mut encoded = Vec::new();
    for set in [RFC3986, URI_COMPONENT] {
        encoded.push(utf8_percent_encode(secret, set).to_string());
    }
    for set in [RFC3986, FORM] {
        // `%` itself is always encoded, so `%20` in the output can only come from a space.
        encoded.push(utf8_percent_encode(secret, set).to_string().replace("%20", "+"));
    }
    for upper in encoded {
        out.insert(lowercase_escapes(&upper).into_bytes());
        out.insert(upper.into_bytes());
    }
}

/// `%2F` → `%2f`; the characters left unencoded keep their case.
fn lowercase_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            out.push(c);
            if c == '%' {
                hex_left = 2;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(secret: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        add_patterns(secret, &mut out);
        out.into_iter().map(|p| String::from_utf8(p).unwrap()).collect()
    }

    #[test]
    fn short_secrets_have_only_their_exact_form() {
        assert_eq!(patterns("abc"), BTreeSet::from(["abc".to_owned()]));
        assert!(patterns("").is_empty());
        assert!(patterns("abcd").len() > 1);
    }

    #[test]
    fn fragments_are_the_middle_of_any_aligned_encoding() {
        let secret = b"s3cr3t-t0ken-value";
        for offset in 0..3 {
            let fragment = stable_fragment(&STANDARD_NO_PAD, secret, offset).unwrap();
            for prefix in [&b"abc"[..offset], &b"xyz"[..offset]] {
                for suffix in ["", "!", "!!", "!!!"] {
                    let mut input = prefix.to_vec();
                    input.extend_from_slice(secret);
                    input.extend_from_slice(suffix.as_bytes());
                    let encoded = STANDARD.encode(&input);
                    let fragment = std::str::from_utf8(&fragment).unwrap();
                    assert!(encoded.contains(fragment), "{encoded} lacks {fragment}");
                }
            }
        }
    }

    #[test]
    fn fragments_shorter_than_the_minimum_are_dropped() {
        // 5 bytes at offset 1: bits 8..48, characters 2..8, only 6 characters.
        assert_eq!(stable_fragment(&STANDARD_NO_PAD, b"abcde", 1), None);
    }

    #[test]
    fn percent_forms_cover_both_hex_cases_and_form_spaces() {
        let p = patterns("a b/c~");
        for form in ["a%20b%2Fc~", "a%20b%2fc~", "a+b%2Fc~", "a+b%2Fc%7E", "a+b%2fc%7e"] {
            assert!(p.contains(form), "missing {form}");
        }
    }

    #[test]
    fn hex_forms_are_lower_and_upper_case() {
        let p = patterns("\u{ff}key");
        assert!(p.contains("c3bf6b6579"));
        assert!(p.contains("C3BF6B6579"));
    }
}
