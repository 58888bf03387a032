//! [`Scrubber`]: exact-value scrubbing of known secrets and their encodings.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::{PLACEHOLDER, decoded, json, patterns};

/// Scrubs every known secret value and its encodings out of text.
///
/// Built from the values of the credentials injected into a request, it replaces with
/// [`PLACEHOLDER`] every occurrence of:
///
/// - the exact value;
/// - its standard and URL-safe base64, with and without padding, and the part of its base64
///   that stays the same wherever it sits inside a longer encoded value (so an echoed
///   `Authorization: Basic base64(user:secret)` is caught), when at least 8 characters long;
/// - its percent-encodings (RFC 3986, `encodeURIComponent`, and form-style with `+` for a
///   space), with upper- or lower-case hex digits;
/// - its hex, lower- or upper-case;
/// - any spelling that decodes to one of the above through up to two layers of JSON string
///   escapes (`\u0067hp_…`) or percent-encoding, whatever characters were chosen to escape.
///
/// Secrets shorter than 4 bytes are scrubbed only in their exact form: their encodings are
/// short strings of ordinary characters that turn up everywhere, and a value that short can
/// be guessed anyway.
///
/// - for secrets of at least [`FRAGMENT_MIN_SECRET`] bytes, any [`FRAGMENT`] consecutive
///   bytes of theirs that include a digit, as written, and the runs they overlap: so a secret
///   split across JSON fields (or lines, or headers) in pieces of that size or more is masked
///   piece by piece, but a word in the secret (a prefix like `redirect-`) is not masked
///   wherever it occurs.
///
/// Matching is case-sensitive except for hex digits. Pieces shorter than [`FRAGMENT`]
/// bytes, or a secret encoded in a way not listed here (say, gzip), are not found: this is
/// the last line of defence behind response projection, not a guarantee.
///
/// `Debug` shows only how many secrets and patterns there are.
#[derive(Clone)]
pub struct Scrubber {
    matcher: Matcher,
    /// Every [`FRAGMENT`]-byte window of the long secrets, matched overlapping.
    fragments: Option<AhoCorasick>,
    secrets: usize,
    patterns: usize,
}

#[derive(Clone)]
enum Matcher {
    /// No secrets: nothing to scrub.
    Nothing,
    Patterns(AhoCorasick),
    /// The automaton could not be built (a pattern set far beyond any real one). Scrubbing
    /// then fails closed: every non-empty text becomes [`PLACEHOLDER`].
    Everything,
}

impl Scrubber {
    /// A scrubber for `secrets`; empty strings are ignored.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        let mut windows = BTreeSet::new();
        let mut count = 0;
        for secret in secrets {
            let secret = secret.as_ref();
            if !secret.is_empty() {
                count += 1;
                patterns::add_patterns(secret, &mut set);
                add_fragments(secret, &mut windows);
            }
        }
        let fragments = (!windows.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&windows)
                    .ok()
            })
            .flatten();
        let matcher = if set.is_empty() {
            Matcher::Nothing
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&set)
                .map_or(Matcher::Everything, Matcher::Patterns)
        };
        Self {
            matcher,
            fragments,
            secrets: count,
            patterns: set.len(),
        }
    }

    /// A scrubber that knows no secrets and returns every text unchanged.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            matcher: Matcher::Nothing,
            fragments: None,
            secrets: 0,
            patterns: 0,
        }
    }

    /// Whether there is nothing to scrub (no non-empty secret was given).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        matches!(self.matcher, Matcher::Nothing)
    }

    /// `text` with every secret replaced by [`PLACEHOLDER`]; borrowed when nothing was found.
    #[must_use]
    pub fn scrub_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let found = self.find(text.as_bytes());
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        // Matches start and end on character boundaries (every pattern is UTF-8 and escapes
        // are ASCII), so this is always valid UTF-8; the lossy path only keeps it panic-free.
        match String::from_utf8(replace(text.as_bytes(), &found)) {
            Ok(clean) => Cow::Owned(clean),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// `bytes` with every secret replaced by [`PLACEHOLDER`], for text that isn't UTF-8.
    ///
    /// Don't use this on a JSON document: escapes are decoded only as far as two layers deep,
    /// while a parser decodes every layer it is given. Parse it and use
    /// [`Scrubber::scrub_json`].
    #[must_use]
    pub fn scrub_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        replace(bytes, &self.find(bytes))
    }

    /// Scrubs every string value and every object key of `value`, after JSON decoding, so
    /// escapes in the source document can't hide a secret. A number whose digits contain a
    /// secret becomes the string [`PLACEHOLDER`]; keys that become equal get a `#2`, `#3`…
    /// suffix so no member is lost.
    pub fn scrub_json(&self, value: &mut serde_json::Value) {
        if !self.is_empty() {
            json::scrub_value(self, value);
        }
    }

    /// The ranges of `text` to replace: sorted, and merged where they overlap.
    fn find(&self, text: &[u8]) -> Vec<Range<usize>> {
        let patterns = match &self.matcher {
            Matcher::Nothing => return Vec::new(),
            Matcher::Everything if text.is_empty() => return Vec::new(),
            Matcher::Everything => return std::iter::once(0..text.len()).collect(),
            Matcher::Patterns(patterns) => patterns,
        };
        let mut found: Vec<_> = patterns.find_iter(text).map(|m| m.range()).collect();
        decoded::find_decoded(patterns, text, &mut found);
        if let Some(fragments) = &self.fragments {
            found.extend(fragments.find_overlapping_iter(text).map(|m| m.range()));
        }
        merge(found)
    }

    #[cfg(test)]
    pub(crate) fn failing_closed() -> Self {
        Self {
            matcher: Matcher::Everything,
            fragments: None,
            secrets: 1,
            patterns: 0,
        }
    }
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("secrets", &self.secrets)
            .field("patterns", &self.patterns)
            .field("fail_closed", &matches!(self.matcher, Matcher::Everything))
            .finish()
    }
}

/// The length of the secret pieces found on their own.
pub const FRAGMENT: usize = 8;
/// The shortest secret whose pieces are looked for (shorter ones only whole): a short
/// secret's pieces are ordinary words.
pub const FRAGMENT_MIN_SECRET: usize = 16;

/// Adds every [`FRAGMENT`]-byte window of `secret` (on character boundaries) when it is at
/// least [`FRAGMENT_MIN_SECRET`] bytes long.
fn add_fragments(secret: &str, windows: &mut BTreeSet<String>) {
    if secret.len() < FRAGMENT_MIN_SECRET {
        return;
    }
    for (start, _) in secret.char_indices() {
        let end = start + FRAGMENT;
        if end > secret.len() {
            break;
        }
        // A window of letters alone is often a word of the secret's readable part (a
        // prefix, a label), which must not be masked wherever it occurs.
        if let Some(window) = secret.get(start..end)
            && window.bytes().any(|b| b.is_ascii_digit())
        {
            windows.insert(window.to_owned());
        }
    }
}

fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start < last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// `text` with each of the sorted, disjoint `ranges` replaced by [`PLACEHOLDER`].
fn replace(text: &[u8], ranges: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut copied = 0;
    for range in ranges {
        out.extend_from_slice(text.get(copied..range.start).unwrap_or_default());
        out.extend_from_slice(PLACEHOLDER.as_bytes());
        copied = range.end;
    }
    out.extend_from_slice(text.get(copied..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;

    /// Has `/` and `+`-producing bytes, `~`, a space and a non-ASCII letter, so every encoding
    /// differs from the value and the two base64 alphabets differ.
    const SECRET: &str = "s3cr3t/t0ken~? wäß>>";

    fn scrubber() -> Scrubber {
        Scrubber::new([SECRET, "ghp_0123456789abcdef"])
    }

    fn assert_scrubbed(text: &str, hidden: &str) {
        assert!(text.contains(hidden), "test text {text} must contain {hidden}");
        let clean = scrubber().scrub_str(text);
        assert!(!clean.contains(hidden), "{hidden} left in {clean}");
        assert!(clean.contains(PLACEHOLDER), "{clean}");
    }

    #[test]
    fn the_exact_value_is_replaced_by_the_placeholder() {
        let clean = scrubber().scrub_str("token ghp_0123456789abcdef, again ghp_0123456789abcdef");
        assert_eq!(clean, "token <redacted>, again <redacted>");
    }

    #[test]
    fn every_base64_form_is_scrubbed() {
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            let encoded = engine.encode(SECRET);
            assert_scrubbed(&format!("x {encoded} y"), &encoded);
        }
        assert_ne!(STANDARD.encode(SECRET), URL_SAFE.encode(SECRET));
    }

    #[test]
    fn base64_of_a_longer_value_is_scrubbed_at_each_offset() {
        for prefix in ["", "u", "us", "user:", "xx"] {
            for suffix in ["", "y", "yy", "yyy"] {
                for engine in [STANDARD, URL_SAFE_NO_PAD] {
                    let encoded = engine.encode(format!("{prefix}{SECRET}{suffix}"));
                    let clean = scrubber().scrub_str(&encoded).into_owned();
                    let (left, right) = clean.split_once(PLACEHOLDER).unwrap();
                    // Only the characters that mix secret bits with surrounding bits are left.
                    let secret_end = 8 * (prefix.len() + SECRET.len()) / 6;
                    assert!(left.len() <= (8 * prefix.len()).div_ceil(6), "{clean}");
                    assert!(right.len() <= encoded.len() - secret_end, "{clean}");
                    assert!(encoded.starts_with(left) && encoded.ends_with(right));
                }
            }
        }
    }

    #[test]
    fn basic_auth_echoed_back_is_scrubbed() {
        let header = format!("Basic {}", STANDARD.encode("octocat:ghp_0123456789abcdef"));
        let clean = scrubber().scrub_str(&header).into_owned();
        // `octocat:` is 8 bytes, so the token starts mid-character: `p` mixes both.
        assert_eq!(clean, "Basic b2N0b2NhdDp<redacted>g==");
    }

    #[test]
    fn percent_and_form_encodings_are_scrubbed() {
        let encoded = "s3cr3t%2Ft0ken~%3F%20w%C3%A4%C3%9F%3E%3E";
        assert_scrubbed(&format!("GET /?q={encoded}"), encoded);
        assert_scrubbed(&format!("GET /?q={}", encoded.to_lowercase()), &encoded.to_lowercase());
        let form = "s3cr3t%2Ft0ken%7E%3F+w%C3%A4%C3%9F%3E%3E";
        assert_scrubbed(&format!("a=1&q={form}&b=2"), form);
        let mixed = "s3cr3t%2ft0%6Ben~%3F%20w%c3%A4%C3%9F>>";
        assert_scrubbed(&format!("q={mixed}"), mixed);
    }

    #[test]
    fn hex_is_scrubbed_in_either_case() {
        let lower = hex::encode(SECRET);
        assert_scrubbed(&format!("id={lower}"), &lower);
        let upper = hex::encode_upper(SECRET);
        assert_scrubbed(&format!("id={upper}"), &upper);
    }

    #[test]
    fn matching_is_case_sensitive_for_the_value_itself() {
        let text = "GHP_0123456789ABCDEF";
        // The case-changed letters are not the secret; `_0123456789` is a piece of
        // it as written, and pieces of eight bytes or more are masked.
        assert_eq!(scrubber().scrub_str(text), format!("GHP{PLACEHOLDER}ABCDEF"));
        let text = "GHP_0123ABCDEF";
        assert!(matches!(scrubber().scrub_str(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn text_without_secrets_is_borrowed_unchanged() {
        let text = "nothing to see here: %41 \\u0041 aGVsbG8= 68656c6c6f";
        assert!(matches!(scrubber().scrub_str(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(Scrubber::empty().scrub_str(SECRET), Cow::Borrowed(_)));
    }

    #[test]
    fn short_secrets_are_scrubbed_only_as_they_are() {
        let s = Scrubber::new(["abc"]);
        assert_eq!(s.scrub_str("xabcx YWJj 616263"), "x<redacted>x YWJj 616263");
    }

    #[test]
    fn empty_secrets_are_ignored() {
        assert!(Scrubber::new([""]).is_empty());
        assert!(Scrubber::new(Vec::<String>::new()).is_empty());
        assert!(Scrubber::empty().is_empty());
        assert!(!Scrubber::new(["", "x"]).is_empty());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_scrubbed() {
        let mut body = b"\xff\xfe ".to_vec();
        body.extend_from_slice(SECRET.as_bytes());
        body.push(0x80);
        assert_eq!(scrubber().scrub_bytes(&body), b"\xff\xfe <redacted>\x80");
    }

    #[test]
    fn debug_does_not_show_the_values() {
        let debug = format!("{:?}", scrubber());
        assert!(!debug.contains("ghp_") && !debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("secrets: 2"), "{debug}");
    }

    #[test]
    fn a_scrubber_that_could_not_be_built_hides_everything() {
        let s = Scrubber::failing_closed();
        assert_eq!(s.scrub_str("anything"), PLACEHOLDER);
        assert_eq!(s.scrub_str(""), "");
        assert!(!s.is_empty());
    }

    #[test]
    fn overlapping_matches_become_one_placeholder() {
        assert_eq!(merge(vec![5..9, 0..3, 2..4, 9..10]), vec![0..4, 5..9, 9..10]);
    }
}

#[cfg(test)]
mod fragment_tests {
    use super::*;

    const SECRET: &str = "tok_7Qm2Vx9Lp4Rz8Kd1Wn6Hs3";

    #[test]
    fn a_long_secret_split_into_pieces_is_masked_piece_by_piece() {
        let scrubber = Scrubber::new([SECRET]);
        let (first, second) = SECRET.split_at(SECRET.len() / 2);
        let mut value = serde_json::json!({"first": first, "second": second, "note": "kept as is"});
        scrubber.scrub_json(&mut value);
        let text = value.to_string();
        assert!(!text.contains(first) && !text.contains(second), "{text}");
        assert_eq!(value["note"], "kept as is");
        // A piece inside other text is cut out to its last byte, not just one window.
        let line = format!("prefix {} suffix", &SECRET[3..20]);
        assert_eq!(scrubber.scrub_str(&line), format!("prefix {PLACEHOLDER} suffix"));
    }

    #[test]
    fn short_pieces_and_short_secrets_are_left_alone() {
        let scrubber = Scrubber::new([SECRET]);
        let piece = &SECRET[..FRAGMENT - 1];
        assert_eq!(scrubber.scrub_str(piece), piece, "shorter than a fragment");
        let short = Scrubber::new(["hunter2-hunter"]);
        assert_eq!(
            short.scrub_str("hunter2-"),
            "hunter2-",
            "a short secret is only found whole"
        );
        assert_eq!(short.scrub_str("x hunter2-hunter y"), format!("x {PLACEHOLDER} y"));
    }
}

#[cfg(test)]
mod word_tests {
    use super::*;

    #[test]
    fn words_in_a_secrets_readable_part_are_not_masked_elsewhere() {
        let scrubber = Scrubber::new(["redirect-1a2b3c4d/+=5e6f7a8b&:9c0d1e2f"]);
        let text = "too many redirects: `127.0.0.1` redirected again";
        assert_eq!(scrubber.scrub_str(text), text);
        let (first, second) = "redirect-1a2b3c4d/+=5e6f7a8b&:9c0d1e2f".split_at(19);
        assert!(!scrubber.scrub_str(first).contains("1a2b3c4d"));
        assert!(!scrubber.scrub_str(second).contains("5e6f7a8b"));
    }
}
