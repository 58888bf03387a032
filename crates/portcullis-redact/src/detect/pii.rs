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
use super::phone;

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
        // The layouts cards are printed in, each with one separator throughout: 4-4-4-4
        // (Visa, Mastercard; 13 to 19 digits as 4-4-4-1…4 with an optional 3), 4-6-5
        // (American Express), 4-6-4 (Diners), or no separator. A looser pattern would take
        // the next group of digits along and then fail the checksum.
        regex: concat!(
            r"\b(?:[0-9]{13,19}",
            r"|[0-9]{4}(?: [0-9]{4}){2} [0-9]{1,4}(?: [0-9]{3})?|[0-9]{4} [0-9]{6} [0-9]{4,5}",
            r"|[0-9]{4}(?:-[0-9]{4}){2}-[0-9]{1,4}(?:-[0-9]{3})?|[0-9]{4}-[0-9]{6}-[0-9]{4,5})\b",
        ),
        validate: Some(check::payment_card),
        examples_true: &[
            "card 4111 1111 1111 1111 exp 12/30",
            "\"pan\":\"5555555555554444\"",
            "3782-822463-10005",
            "card 3782-822463-10005 0 items",
            "4111 1111 1111 1111 12/30",
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
        regex: r"(?:^|[^\w+])(?P<v>\+[1-9](?:[ .-]?[0-9]){6,14})\b",
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
        description: "IPv4 address (not a four-part version number, not a product version like Chrome/124.0.0.0)",
        keywords: &["."],
        // `fp`: a version label before (`version 1.2.3.4`, `"ver":"10.0.19041.1"`), or a
        // product token (`Chrome/124.0.0.0` in a user agent).
        regex: r#"(?:(?P<fp>\b(?i:version|ver|release|rev|build|v)["'\s:=]*|\b[A-Za-z]+/)|^|[^\w.])(?P<v>[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?:\.[0-9]+)*)\b"#,
        validate: Some(check::ipv4),
        examples_true: &[
            "client 203.0.113.42 connected",
            "X-Forwarded-For: 10.0.0.1, 192.168.1.20",
            "GET http://203.0.113.7/status",
        ],
        examples_false: &[
            "version 1.2.3.4",
            "v1.2.3.4",
            "1.2.3.4.5",
            "999.1.1.1",
            "ver=10.0.19041.1",
            "{\"version\": \"17.1.9.5\"}",
            "{\"ver\":\"10.0.19041.1\"}",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0.0.0 Safari/537.36",
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
    E164,
    Nanp,
    Ipv4,
    Ipv6,
    Uk,
    Fr,
    De,
}

const SCANS: [Scan; 10] = [
    Scan::Card,
    Scan::Iban,
    Scan::Ssn,
    Scan::E164,
    Scan::Nanp,
    Scan::Ipv4,
    Scan::Ipv6,
    Scan::Uk,
    Scan::Fr,
    Scan::De,
];

impl Scan {
    /// The scan for `rule` when it is one of the builtin number rules, unchanged.
    pub(crate) fn of(rule: &Rule) -> Option<Self> {
        let builtin = RULES
            .iter()
            .chain(phone::RULES)
            .find(|builtin| builtin.id == rule.id && builtin.regex == rule.regex)?;
        SCANS.into_iter().find(|scan| scan.rule_id() == builtin.id)
    }

    fn rule_id(self) -> &'static str {
        match self {
            Self::Card => "payment-card",
            Self::Iban => "iban",
            Self::Ssn => "us-ssn",
            Self::E164 => "phone-e164",
            Self::Nanp => "phone-nanp",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Uk => "phone-uk",
            Self::Fr => "phone-fr",
            Self::De => "phone-de",
        }
    }

    /// The characters a match is made of, apart from its context.
    fn class(self) -> u16 {
        match self {
            Self::Card => DIGIT | SPACE | DASH,
            Self::Iban => DIGIT | UPPER | SPACE,
            Self::Ssn => DIGIT | DASH,
            Self::E164 => DIGIT | SPACE | DASH | DOT | PLUS,
            Self::Nanp => DIGIT | SPACE | DASH | DOT | PAREN,
            Self::Ipv4 => DIGIT | DOT,
            Self::Ipv6 => DIGIT | HEX | COLON,
            // The national forms end with `.`, `/` or `-` before a space as a number at the
            // end of a sentence does; the window reaches past them (see `window`).
            Self::Uk => DIGIT | SPACE | PLUS | PAREN,
            Self::Fr => DIGIT | SPACE | DOT | DASH | PLUS | PAREN,
            Self::De => DIGIT | SPACE | SLASH | DASH | PLUS | PAREN,
        }
    }

    /// Whether a run with `count` can hold a match (a necessary condition only).
    fn may_match(self, count: &Count) -> bool {
        match self {
            Self::Card => count.stretch_digits >= 13,
            Self::Iban => count.digits >= 2 && count.upper >= 2 && count.len - count.spaces >= 12,
            Self::Ssn => count.stretch_digits >= 9 && count.dashes >= 2,
            Self::E164 => count.stretch_digits >= 7 && count.plus >= 1,
            Self::Nanp => count.stretch_digits >= 10 && count.dashes + count.dots >= 1,
            Self::Ipv4 => count.stretch_digits >= 4 && count.dots >= 3,
            Self::Ipv6 => count.colons >= 2,
            Self::Uk | Self::Fr => count.stretch_digits >= 10,
            Self::De => count.stretch_digits >= 6,
        }
    }

    /// The fewest of this rule's characters a match holds (`1.2.3.4`, `::`), so that most
    /// parts of a run are dropped before they are counted.
    fn min_len(self) -> usize {
        match self {
            Self::Ipv6 => 2,
            Self::Ipv4 | Self::De => 7,
            Self::E164 => 8,
            Self::Uk | Self::Fr => 10,
            Self::Ssn => 11,
            Self::Nanp | Self::Iban => 12,
            Self::Card => 13,
        }
    }

    /// The window around a run of this rule's characters: the run, plus the context its
    /// regex may match before and after it.
    fn window(self, text: &str, run: Range<usize>) -> Range<usize> {
        let bytes = text.as_bytes();
        match self {
            Self::Ipv4 => prev_char(text, label_context(bytes, run.start, b"\"':=/"))..next_char(text, run.end),
            // A label (`order 0123 456789`) before, and `[./:-]` then a space after.
            Self::Uk | Self::Fr | Self::De => {
                prev_char(text, label_context(bytes, run.start, b":#."))..next_char(text, next_char(text, run.end))
            }
            _ => prev_char(text, run.start)..next_char(text, run.end),
        }
    }
}

/// The windows [`scan`] found, per rule; each list sorted and disjoint.
#[derive(Debug, Default)]
pub(crate) struct Windows([Vec<Range<usize>>; 10]);

impl Windows {
    pub(crate) fn of(&self, scan: Scan) -> &[Range<usize>] {
        self.0.get(scan as usize).map_or(&[], Vec::as_slice)
    }

    /// Every window of every rule.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Range<usize>> {
        self.0.iter().flatten()
    }

    /// Whether no rule has a window.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(Vec::is_empty)
    }

    /// Empties every list, keeping their allocations.
    pub(crate) fn clear(&mut self) {
        self.0.iter_mut().for_each(Vec::clear);
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

const DIGIT: u16 = 1;
const SPACE: u16 = 1 << 1;
const DASH: u16 = 1 << 2;
const DOT: u16 = 1 << 3;
const COLON: u16 = 1 << 4;
const HEX: u16 = 1 << 5;
const UPPER: u16 = 1 << 6;
const PAREN: u16 = 1 << 7;
const PLUS: u16 = 1 << 8;
const SLASH: u16 = 1 << 9;

/// What each ASCII byte is to the number rules; 0 for every other byte.
static CLASS: [u16; 256] = {
    let mut class = [0u16; 256];
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
            b'+' => PLUS,
            b'/' => SLASH,
            b'a'..=b'f' => HEX,
            b'A'..=b'F' => HEX | UPPER,
            b'G'..=b'Z' => UPPER,
            _ => 0,
        };
        byte += 1;
    }
    class
};

fn class(byte: u8) -> u16 {
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
    plus: usize,
    /// The most digits in a stretch without letters or colons, which is all the digits a
    /// match of a rule for numbers without letters can hold.
    stretch_digits: usize,
}

impl Count {
    fn of(bytes: &[u8]) -> Self {
        let mut count = Self {
            len: bytes.len(),
            ..Self::default()
        };
        let mut stretch = 0;
        for &byte in bytes {
            let class = class(byte);
            count.digits += usize::from(class & DIGIT != 0);
            count.spaces += usize::from(class & SPACE != 0);
            count.dashes += usize::from(class & DASH != 0);
            count.dots += usize::from(class & DOT != 0);
            count.colons += usize::from(class & COLON != 0);
            count.upper += usize::from(class & UPPER != 0);
            count.plus += usize::from(class & PLUS != 0);
            stretch = (stretch + usize::from(class == DIGIT)) * usize::from(class & (HEX | UPPER | COLON) == 0);
            count.stretch_digits = count.stretch_digits.max(stretch);
        }
        count
    }
}

/// Fills `windows` with the windows of `text` in which each number rule can match.
///
/// Every match of these rules is a run of the rule's characters (`[0-9 -]` for a card number)
/// holding an ASCII digit or a colon, plus context. The scan jumps from one digit or colon to
/// the next eight bytes at a time, widens each to the run of characters of any of the rules
/// around it, and counts what the runs long enough to hold a match contain. Only when the
/// counts allow a match does it split the run into each rule's own runs and count again.
pub(crate) fn scan(text: &str, windows: &mut Windows) {
    windows.clear();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(hit) = next_digit_or_colon(bytes, at) {
        // `at` is 0 or just past the end of the previous run, so this stops at `at` at most.
        let mut start = hit;
        while start > at && bytes.get(start - 1).is_some_and(|&b| class(b) != 0) {
            start -= 1;
        }
        let mut end = hit;
        while bytes.get(end).is_some_and(|&b| class(b) != 0) {
            end += 1;
        }
        let run = bytes.get(start..end).unwrap_or_default();
        // Most runs are short (`42`, `3.5`, `12:30`): only IPv6 (`::1`) fits in fewer than
        // seven bytes.
        let passes = if run.len() >= 7 {
            Gate::of(run).passes()
        } else {
            run.iter().filter(|&&b| b == b':').count() >= 2
        };
        if passes {
            scan_run(text, start..end, windows);
        }
        at = end + 1;
    }
}

/// What the scan tracks over a run, byte by byte without branches, to skip the runs no rule
/// can match in (hex digests, identifiers, timestamps) before counting anything else.
#[derive(Debug, Default)]
struct Gate {
    /// Digits and separators in the current stretch without letters or colons.
    digits: usize,
    separators: usize,
    /// Whether a stretch so far could hold a match of a rule for numbers without letters:
    /// thirteen digits (a card), or four digits with a separator (`1.2.3.4`, `+1 555…`).
    numeric: bool,
    colons: usize,
    /// The last four bytes, two bits each: capital letter, digit or other.
    shape: u8,
    /// Whether two capital letters were followed by two digits (an IBAN's start).
    iban: bool,
}

impl Gate {
    fn of(run: &[u8]) -> Self {
        let mut gate = Self::default();
        for &byte in run {
            gate.add(class(byte));
        }
        gate
    }

    fn add(&mut self, class: u16) {
        let breaks = usize::from(class & (HEX | UPPER | COLON) != 0);
        self.numeric |= (breaks != 0) & self.stretch_may_match();
        self.digits = (self.digits + usize::from(class == DIGIT)) * (1 - breaks);
        self.separators = (self.separators + usize::from(class & SEPARATORS != 0)) * (1 - breaks);
        self.colons += usize::from(class == COLON);
        let code = u8::from(class & UPPER != 0) | (u8::from(class == DIGIT) << 1);
        self.shape = (self.shape << 2) | code;
        self.iban |= self.shape == 0b01_01_10_10;
    }

    fn stretch_may_match(&self) -> bool {
        (self.digits >= 13) | ((self.digits >= 4) & (self.separators != 0))
    }

    /// Whether the run may hold a match: a numeric stretch, two colons (IPv6) or two
    /// capital letters then two digits (an IBAN's country code and check digits).
    fn passes(&self) -> bool {
        self.numeric || self.stretch_may_match() || self.colons >= 2 || self.iban
    }
}

/// The characters between groups of digits in the number rules.
const SEPARATORS: u16 = SPACE | DASH | DOT | PAREN | PLUS | SLASH;

/// The first ASCII digit or colon (bytes `0x30..=0x3A`) at or after `from`.
fn next_digit_or_colon(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    const LOW7: u64 = ONES * 0x7F;
    let rest = bytes.get(from..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut offset = from;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        // "Has a byte between m and n" (exclusive) from Bit Twiddling Hacks, with m = 0x2F
        // and n = 0x3B; exact as a yes or no for the word.
        let low = x & LOW7;
        let between = (ONES * (127 + 0x3B) - low) & !x & (low + ONES * (127 - 0x2F)) & HIGH;
        if between != 0 {
            break;
        }
        offset += 8;
    }
    bytes
        .get(offset..)?
        .iter()
        .position(|&b| (b'0'..=b':').contains(&b))
        .map(|position| offset + position)
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
            let part_range = start..start + part.len();
            if part.len() >= scan.min_len()
                && scan.may_match(&Count::of(part))
                && (scan != Scan::Ipv6 || ipv6_context(text.as_bytes(), part_range.clone()))
            {
                windows.push(scan, scan.window(text, part_range));
            }
        }
    }
}

/// Whether the IPv6 rule can match in the maximal run of hexadecimal digits and colons at
/// `run`: its regex wants the address right after a character that is not a word character,
/// a colon or a dot (or the start of the text), and right before one that is not a word
/// character or a colon (or the end), so an address fills its run, and the characters
/// around it must be such. Most runs with two colons are paths (`app::http::server`,
/// `config.rs:318:33`), glued to letters. A byte of a non-ASCII character may be of a
/// non-word character and counts as one.
fn ipv6_context(bytes: &[u8], run: Range<usize>) -> bool {
    let word = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    let before = run.start.checked_sub(1).and_then(|at| bytes.get(at));
    let after = bytes.get(run.end);
    before.is_none_or(|&byte| !(word(byte) || byte == b':' || byte == b'.'))
        && after.is_none_or(|&byte| !(word(byte) || byte == b':'))
}

/// For the card rule, [`card_without_last_group`].
pub(crate) fn shorter_value(rule: &Rule) -> Option<fn(&str) -> Option<usize>> {
    (rule.id == "payment-card").then_some(card_without_last_group as fn(&str) -> Option<usize>)
}

/// For a card number in the 4-4-4-n layout followed by a group of three digits with the same
/// separator (`4111 1111 1111 1111 123`, read as a 19-digit number first), the length
/// without that group: when the 19 digits fail the checksum, the three digits just follow
/// the card, and the regex, having matched them, never tries the card on its own.
pub(crate) fn card_without_last_group(value: &str) -> Option<usize> {
    let separator = value.bytes().find(|&byte| byte == b' ' || byte == b'-')?;
    let groups = value.bytes().filter(|&byte| byte == separator).count() + 1;
    let cut = value.bytes().rposition(|byte| byte == separator)?;
    (groups == 5 && value.len() - cut == 4).then_some(cut)
}

/// Where a label before a run starting at `start` can start (`version 1.2.3.4`,
/// `"ver":"10.0.19041.1"`, `order #0123 456789`): back over whitespace and `separators`, then
/// over a word of at most sixteen bytes (non-ASCII bytes count as both, for Unicode spaces and
/// case folding).
fn label_context(bytes: &[u8], mut start: usize, separators: &[u8]) -> usize {
    let is = |at: usize, f: &dyn Fn(u8) -> bool| at > 0 && bytes.get(at - 1).is_some_and(|&b| f(b));
    while is(start, &|b| {
        b.is_ascii_whitespace() || b == 0x0B || separators.contains(&b) || !b.is_ascii()
    }) {
        start -= 1;
    }
    let floor = start.saturating_sub(16);
    while start > floor && is(start, &|b| b.is_ascii_alphabetic() || !b.is_ascii()) {
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
