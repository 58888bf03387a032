//! Builtin rules for personal data.

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
        regex: r"\b(?:\d[ -]?){12,18}\d\b",
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
        regex: r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        validate: Some(check::iban),
        examples_true: &["IBAN: GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
        examples_false: &["GB82WEST12345698765433", "AB12 CDEF GHIJ"],
    },
    Rule {
        id: "us-ssn",
        category: Pii,
        description: "US social security number outside the never-issued ranges",
        keywords: &["-"],
        regex: r"\b\d{3}-\d{2}-\d{4}\b",
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
        regex: r"(?:^|[^\w+(.-])(?P<v>(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[-.])[2-9]\d{2}[-.]\d{4})\b",
        validate: None,
        examples_true: &["call (415) 555-0123 today", "phone: 212.555.0199", "fax 646-555-0147"],
        examples_false: &["123-456-7890", "415-155-0123", "2024-555-0123"],
    },
    Rule {
        id: "ipv4",
        category: Pii,
        description: "IPv4 address (not a four-part version number)",
        keywords: &["."],
        regex: r"(?:(?P<fp>\b(?i:version|ver|release|rev|build|v)[\s:=]*)|^|[^\w.])(?P<v>\d{1,3}(?:\.\d{1,3}){3}(?:\.\d+)*)\b",
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
