//! Builtin rules for personal data, and the scan that finds where the rules for numbers can
//! match.
//!
//! The number rules' keywords are a single common character ("-", ".", ":") or none, so a
//! keyword pre-filter would let them run almost everywhere. [`scan`] instead looks at each
//! run of digits, letters and separators around an ASCII digit or a colon once, counts what
//! is in it, and keeps for each rule only the runs of its characters that have enough digits
//! and separators to hold a match. Their regexes say `[0-9]`, not the Unicode `\d`, so that
//! every match is made of those ASCII characters plus one character of context.

use std::ops::Range;

use super::Category::Pii;
use super::Rule;
use super::check;

/// The builtin personal-data rules.
pub(crate) static RULES: &[Rule] = &[
    Rule {
        id: "email",
        category: Pii,
        description: "Email address",
        keywords: &["@"],
        // The user name of a URL (`https://user:pass@host`, `https://user@host`) is not an
        // address; the `fp` branch swallows it so the mailbox-shaped tail is not reported.
        regex: r"(?:(?P<fp>://(?:[^\s:/@]*:)?)|\b)(?P<v>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b",
        validate: None,
        examples_true: &[
            "contact: jane.doe+test@mail.example.org",
            "<a href=\"mailto:bob@example.com\">",
        ],
        examples_false: &["@mention", "build@1.2.3", "user@localhost"],
    },
    Rule {
        id: "payment-card",
        category: Pii,
        description: "Payment card number (known issuer prefix, Luhn-valid, spaces or dashes allowed)",
        keywords: &[],
        regex: r"\b(?:[0-9][ -]?){12,18}[0-9]\b",
        validate: Some(check::payment_card),
        examples_true: &[
            "card 4111 1111 1111 1111 exp 12/30",
            "\"pan\":\"5555555555554444\"",
            "3782-822463-10005",
        ],
        examples_false: &[
            // Luhn-invalid.
            "4111 1111 1111 1112",
            // Luhn-valid but no card network issues numbers starting with 1.
            "1234567812345670",
            "order 12345678901234567890",
            "1700000000000",
        ],
    },
    Rule {
        id: "iban",
        category: Pii,
        description: "International bank account number (mod-97 checked)",
        keywords: &[],
        regex: r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        validate: Some(check::iban),
        examples_true: &["IBAN: GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
        examples_false: &["GB82WEST12345698765433", "AB12 CDEF GHIJ"],
    },
    Rule {
        id: "us-ssn",
        category: Pii,
        description: "US social security number outside the never-issued ranges",
        keywords: &["-"],
        regex: r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        validate: Some(check::us_ssn),
        examples_true: &["SSN 123-45-6789"],
        examples_false: &[
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
            "078-05-1120",
        ],
    },
    Rule {
        id: "phone-e164",
        category: Pii,
        description: "Phone number in E.164 form, optionally with spaces, dots or dashes",
        keywords: &["+"],
        regex: r"(?:^|[^\w+])(?P<v>\+[1-9](?:[ .-]?\d){6,14})\b",
        validate: Some(check::e164),
        examples_true: &["call +14155550123", "tel: +44 20 7946 0958", "+49-30-901820"],
        examples_false: &["+1", "1+2345678", "x = a+1234"],
    },
    Rule {
        id: "phone-nanp",
        category: Pii,
        description: "North American phone number in national form: (415) 555-0123, 415-555-0123",
        keywords: &["-", "."],
        regex: r"(?:^|[^\w+(.-])(?P<v>(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-.])[2-9][0-9]{2}[-.][0-9]{4})\b",
        validate: None,
        examples_true: &["call (415) 555-0123 today", "phone: 212.555.0199", "fax 646-555-0147"],
        examples_false: &["123-456-7890", "415-155-0123", "2024-555-0123"],
    },
    Rule {
        id: "ipv4",
        category: Pii,
        description: "IPv4 address (not a four-part version number)",
        keywords: &["."],
        regex: r"(?:(?P<fp>\b(?i:version|ver|release|rev|build|v)[\s:=]*)|^|[^\w.])(?P<v>[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?:\.[0-9]+)*)\b",
        validate: Some(check::ipv4),
        examples_true: &[
            "client 203.0.113.42 connected",
            "X-Forwarded-For: 10.0.0.1, 192.168.1.20",
        ],
        examples_false: &[
            "version 1.2.3.4",
            "v1.2.3.4",
            "1.2.3.4.5",
            "999.1.1.1",
            "ver=10.0.19041.1",
        ],
    },
    Rule {
        id: "ipv6",
        category: Pii,
        description: "IPv6 address, full or compressed",
        keywords: &[":"],
        regex: r"(?:^|[^\w:.])(?P<v>[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?:$|[^\w:])",
        validate: Some(check::ipv6),
        examples_true: &[
            "from 2001:db8:85a3::8a2e:370:7334 via",
            "[fe80::1ff:fe23:4567:890a]:443",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
        ],
        examples_false: &[
            "std::vec::Vec",
            "12:30:45",
            "a::b",
            "::",
            "00:1A:2B:3C:4D:5E",
            "2026-11-24T07:14:54Z",
        ],
    },
];

/// A builtin number rule whose windows [`scan`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    Card,
    Iban,
    Ssn,
    Nanp,
    Ipv4,
    Ipv6,
}

const SCANS: [Scan; 6] = [Scan::Card, Scan::Iban, Scan::Ssn, Scan::Nanp, Scan::Ipv4, Scan::Ipv6];

impl Scan {
    /// The scan for `rule` when it is one of the builtin number rules, unchanged.
    pub(crate) fn of(rule: &Rule) -> Option<Self> {
        let builtin = RULES
            .iter()
            .find(|builtin| builtin.id == rule.id && builtin.regex == rule.regex)?;
        SCANS.into_iter().find(|scan| scan.rule_id() == builtin.id)
    }

    fn rule_id(self) -> &'static str {
        match self {
            Self::Card => "payment-card",
            Self::Iban => "iban",
            Self::Ssn => "us-ssn",
            Self::Nanp => "phone-nanp",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }

    /// The characters a match is made of, apart from its context.
    fn class(self) -> u8 {
        match self {
            Self::Card => DIGIT | SPACE | DASH,
            Self::Iban => DIGIT | UPPER | SPACE,
            Self::Ssn => DIGIT | DASH,
            Self::Nanp => DIGIT | SPACE | DASH | DOT | PAREN,
            Self::Ipv4 => DIGIT | DOT,
            Self::Ipv6 => DIGIT | HEX | COLON,
        }
    }

    /// Whether a run with `count` can hold a match (a necessary condition only).
    fn may_match(self, count: &Count) -> bool {
        match self {
            Self::Card => count.digits >= 13,
            Self::Iban => count.digits >= 2 && count.upper >= 2 && count.len - count.spaces >= 12,
            Self::Ssn => count.digits >= 9 && count.dashes >= 2,
            Self::Nanp => count.digits >= 10 && count.dashes + count.dots >= 1,
            Self::Ipv4 => count.digits >= 4 && count.dots >= 3,
            Self::Ipv6 => count.colons >= 2,
        }
    }

    /// The window around a run of this rule's characters: the run, plus the context its
    /// regex may match before and after it.
    fn window(self, text: &str, run: Range<usize>) -> Range<usize> {
        let start = match self {
            Self::Ipv4 => version_context(text.as_bytes(), run.start),
            _ => run.start,
        };
        prev_char(text, start)..next_char(text, run.end)
    }
}

/// The windows [`scan`] found, per rule; each list sorted and disjoint.
#[derive(Debug, Default)]
pub(crate) struct Windows([Vec<Range<usize>>; 6]);

impl Windows {
    pub(crate) fn of(&self, scan: Scan) -> &[Range<usize>] {
        self.0.get(scan as usize).map_or(&[], Vec::as_slice)
    }

    fn push(&mut self, scan: Scan, window: Range<usize>) {
        if let Some(windows) = self.0.get_mut(scan as usize) {
            match windows.last_mut() {
                Some(last) if window.start <= last.end => last.end = last.end.max(window.end),
                _ => windows.push(window),
            }
        }
    }
}

const DIGIT: u8 = 1;
const SPACE: u8 = 2;
const DASH: u8 = 4;
const DOT: u8 = 8;
const COLON: u8 = 16;
const HEX: u8 = 32;
const UPPER: u8 = 64;
const PAREN: u8 = 128;

/// What each ASCII byte is to the number rules; 0 for every other byte.
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        class[byte] = match b {
            b'0'..=b'9' => DIGIT,
            b' ' => SPACE,
            b'-' => DASH,
            b'.' => DOT,
            b':' => COLON,
            b'(' | b')' => PAREN,
            b'a'..=b'f' => HEX,
            b'A'..=b'F' => HEX | UPPER,
            b'G'..=b'Z' => UPPER,
            _ => 0,
        };
        byte += 1;
    }
    class
};

fn class(byte: u8) -> u8 {
    CLASS[usize::from(byte)]
}

/// What a run holds.
#[derive(Debug, Default)]
struct Count {
    len: usize,
    digits: usize,
    spaces: usize,
    dashes: usize,
    dots: usize,
    colons: usize,
    upper: usize,
}

impl Count {
    fn of(bytes: &[u8]) -> Self {
        let mut count = Self {
            len: bytes.len(),
            ..Self::default()
        };
        for &byte in bytes {
            let class = class(byte);
            count.digits += usize::from(class & DIGIT != 0);
            count.spaces += usize::from(class & SPACE != 0);
            count.dashes += usize::from(class & DASH != 0);
            count.dots += usize::from(class & DOT != 0);
            count.colons += usize::from(class & COLON != 0);
            count.upper += usize::from(class & UPPER != 0);
        }
        count
    }
}

/// The windows of `text` in which each number rule can match.
///
/// Every match of these rules is a run of the rule's characters (`[0-9 -]` for a card number)
/// holding an ASCII digit or a colon, plus context. The scan goes once over the runs of
/// characters of any of the rules, and counts what those long enough to hold a match contain.
/// Only when the counts allow a match does it split the run into each rule's own runs and
/// count again.
pub(crate) fn scan(text: &str) -> Windows {
    let mut windows = Windows::default();
    // Branch-free bookkeeping per byte: mispredicted branches at every edge of a run would
    // cost more than the rest of the scan (JSON alternates digits and letters all the time).
    let (mut start, mut seen, mut colons) = (0, 0, 0);
    for (at, &byte) in text.as_bytes().iter().enumerate() {
        let class = class(byte);
        let ends = class == 0;
        // `&`, not `&&`: one rarely taken branch instead of one per edge of a run.
        if ends & may_hold_a_match(at - start, seen, colons) {
            scan_run(text, start..at, &mut windows);
        }
        start = if ends { at + 1 } else { start };
        seen = if ends { 0 } else { seen | class };
        colons = if ends { 0 } else { colons + usize::from(class == COLON) };
    }
    if may_hold_a_match(text.len() - start, seen, colons) {
        scan_run(text, start..text.len(), &mut windows);
    }
    windows
}

/// Whether a run of `len` bytes of the classes in `seen`, `colons` of them colons, is worth
/// counting: the shortest match but an IPv6 one is `1.2.3.4`, and IPv6 needs two colons.
fn may_hold_a_match(len: usize, seen: u8, colons: usize) -> bool {
    (len >= 7 && seen & DIGIT != 0) | (colons >= 2)
}

fn scan_run(text: &str, run: Range<usize>, windows: &mut Windows) {
    let Some(bytes) = text.as_bytes().get(run.clone()) else {
        return;
    };
    let count = Count::of(bytes);
    for scan in SCANS {
        if !scan.may_match(&count) {
            continue;
        }
        let mut offset = 0;
        for part in bytes.split(|&b| class(b) & scan.class() == 0) {
            let start = run.start + offset;
            offset += part.len() + 1;
            if scan.may_match(&Count::of(part)) {
                windows.push(scan, scan.window(text, start..start + part.len()));
            }
        }
    }
}

/// Where the `fp` context of the IPv4 rule (`version 1.2.3.4`, `ver=10.0.19041.1`) can start
/// before a run starting at `start`: back over whitespace, `:` and `=`, then over a word of at
/// most seven letters (non-ASCII bytes count as both, for Unicode spaces and case folding).
fn version_context(bytes: &[u8], mut start: usize) -> usize {
    let is = |at: usize, f: fn(u8) -> bool| at > 0 && bytes.get(at - 1).is_some_and(|&b| f(b));
    while is(start, |b| {
        b.is_ascii_whitespace() || b == 0x0B || b == b':' || b == b'=' || !b.is_ascii()
    }) {
        start -= 1;
    }
    let floor = start.saturating_sub(16);
    while start > floor && is(start, |b| b.is_ascii_alphabetic() || !b.is_ascii()) {
        start -= 1;
    }
    start
}

/// The start of the character before `at` (`at` itself at the start of `text`).
fn prev_char(text: &str, at: usize) -> usize {
    let mut start = at.saturating_sub(1);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    start
}

/// The end of the character starting at `at` (`at` itself at the end of `text`).
fn next_char(text: &str, at: usize) -> usize {
    let mut end = (at + 1).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    end
}
