//! Validators: checksums, entropy floors and false-positive guards that a regex cannot express.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC-32 (IEEE 802.3, the polynomial of zlib and of Go's `crc32.ChecksumIEEE`).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `n` in base 62, left-padded with `0` to six digits (a `u32` always fits in six).
pub(crate) fn base62_6(mut n: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// GitHub's token checksum: after the `xxx_` prefix, 30 random characters, then the base-62
/// CRC-32 of those 30 characters in six.
pub(crate) fn github_checksum(token: &str) -> bool {
    let Some((_, body)) = token.split_once('_') else {
        return false;
    };
    let bytes = body.as_bytes();
    bytes.len() == 36 && base62_6(crc32(&bytes[..30])) == bytes[30..]
}

/// Shannon entropy of `s` in bits per character.
pub(crate) fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for &byte in s.as_bytes() {
        counts[usize::from(byte)] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = f64::from(count) / len;
            -p * p.log2()
        })
        .sum()
}

/// The Luhn check used by payment card numbers; non-digits are ignored.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .filter(|d| d.is_ascii_digit())
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                if d > 4 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// A card number: 13 to 19 digits, one kind of separator at most, a known issuer prefix, and a
/// valid Luhn check digit.
pub(crate) fn payment_card(s: &str) -> bool {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_digit).collect();
    let mixed_separators = s.contains(' ') && s.contains('-');
    (13..=19).contains(&digits.len()) && !mixed_separators && known_iin(&digits) && luhn(&digits)
}

/// Issuer identification number prefixes of the major card networks.
fn known_iin(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 { digits.iter().take(n).fold(0, |acc, d| acc * 10 + u32::from(d - b'0')) };
    let (two, three, four) = (prefix(2), prefix(3), prefix(4));
    digits.first() == Some(&b'4') // Visa
        || (51..=55).contains(&two) || (2221..=2720).contains(&four) // Mastercard
        || two == 34 || two == 37 // American Express
        || four == 6011 || two == 65 || (644..=649).contains(&three) // Discover
        || (3528..=3589).contains(&four) // JCB
        || (300..=305).contains(&three) || two == 36 || two == 38 || two == 39 // Diners
        || two == 62 // UnionPay
}

/// An IBAN: two letters, two check digits, 11 to 30 more alphanumerics, mod-97 remainder 1.
pub(crate) fn iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0u32;
    for &byte in tail.iter().chain(head) {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return false,
        };
        let scale = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * scale + value) % 97;
    }
    remainder == 1
}

/// A US social security number `AAA-GG-SSSS` outside the ranges never issued, and not one of
/// the numbers published as examples.
pub(crate) fn us_ssn(s: &str) -> bool {
    const EXAMPLES: [&str; 2] = ["078-05-1120", "219-09-9999"];
    let mut parts = s.split('-');
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    area != "000"
        && area != "666"
        && !area.starts_with('9')
        && group != "00"
        && serial != "0000"
        && !EXAMPLES.contains(&s)
}

/// An E.164 number has 8 to 15 digits in all (country code included).
pub(crate) fn e164(s: &str) -> bool {
    (8..=15).contains(&s.bytes().filter(u8::is_ascii_digit).count())
}

/// Exactly four dotted octets, each at most 255 and without a leading zero; not a loopback
/// (`127.0.0.0/8`) or the unspecified address, which every machine has and which identify
/// no one (and which an operator needs to read in an egress refusal).
pub(crate) fn ipv4(s: &str) -> bool {
    let octets: Vec<&str> = s.split('.').collect();
    octets.len() == 4
        && octets
            .iter()
            .all(|octet| octet.parse::<u8>().is_ok() && !(octet.len() > 1 && octet.starts_with('0')))
        && s.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// A JWT's first part decodes to a JSON object naming its `alg`.
pub(crate) fn jwt(s: &str) -> bool {
    let header = s.split('.').next().unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|value| value.get("alg").is_some_and(serde_json::Value::is_string))
}

/// AWS documents a few key pairs in its examples; they all end in `EXAMPLE` or `EXAMPLEKEY`.
pub(crate) fn not_aws_example(s: &str) -> bool {
    !s.contains("EXAMPLE")
}

/// An AWS secret access key: 40 base64 characters of 30 random bytes, so mixed case and
/// digits; not a hex digest (a git SHA is also 40 characters) nor a documented example.
pub(crate) fn aws_secret(s: &str) -> bool {
    let has = |pred: fn(&u8) -> bool| s.bytes().any(|b| pred(&b));
    not_aws_example(s)
        && has(u8::is_ascii_uppercase)
        && has(u8::is_ascii_lowercase)
        && has(u8::is_ascii_digit)
        && shannon_entropy(s) >= 4.0
}

/// HTTP Basic credentials: base64 of `user:password` with a non-empty password.
pub(crate) fn basic_credentials(s: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .is_some_and(|pair| pair.split_once(':').is_some_and(|(_, password)| !password.is_empty()))
}

/// A value that looks like a template variable, a mask or a redaction rather than a secret.
fn placeholder(s: &str) -> bool {
    s.starts_with(['$', '<', '{', '%', '['])
        || s.bytes().all(|b| b == b'*' || b == b'x' || b == b'X' || b == b'.')
        || s.eq_ignore_ascii_case("password")
        || s.eq_ignore_ascii_case("changeme")
        || s.contains("EXAMPLE")
}

/// Hex digests and UUIDs: identifiers that are high-entropy but not secret.
fn hash_or_uuid(s: &str) -> bool {
    let hex = s.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    (hex && [40, 64, 128].contains(&s.len())) || uuid
}

/// The password part of a URL or connection string: anything but a placeholder.
pub(crate) fn password(s: &str) -> bool {
    !placeholder(s)
}

/// The value of a `password = "…"`-style assignment: at least 3.5 bits per character, not a
/// placeholder, not a hash or UUID.
pub(crate) fn high_entropy_value(s: &str) -> bool {
    shannon_entropy(s) >= 3.5 && !placeholder(s) && !hash_or_uuid(s)
}

/// An IPv6 address with at least four hex digits, so that `a::b` and `::` in code are not one.
pub(crate) fn ipv6(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>()
        .is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified())
        && s.bytes().filter(u8::is_ascii_hexdigit).count() >= 4
}

/// The body of a PEM block cut short: a run of at least 32 base64 characters after the header
/// line (prose after a quoted header has spaces every few letters), lines raw or escaped.
pub(crate) fn pem_body(s: &str) -> bool {
    let body = s.rsplit("-----").next().unwrap_or_default();
    let body = body.replace("\\n", " ").replace("\\r", " ");
    body.split_whitespace()
        .any(|run| run.len() >= 32 && run.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)))
}

/// A national phone number has 9 to 13 digits with its trunk `0` or country code; fewer is an
/// hour range or a short code.
pub(crate) fn national_phone(s: &str) -> bool {
    (9..=13).contains(&s.bytes().filter(u8::is_ascii_digit).count())
}
