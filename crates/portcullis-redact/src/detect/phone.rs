//! Builtin rules for phone numbers in national formats (E.164 and North American numbers are
//! in [`super::pii`]).
//!
//! A national number is a short run of digits, so each rule insists on the grouping people
//! actually write (a trunk `0`, an area code, a space between groups) and refuses a number
//! glued to other digits, dots or dashes, which is how dates, times, version strings and
//! ordinary numbers look. A run preceded by a word such as `order` or `version` is not a phone
//! number either. Every example number is from a range reserved for drama or documentation.

use super::Category::Pii;
use super::Rule;
use super::check;

/// A number after a word that says it is something else (`order 0123 456789`).
macro_rules! not_after_a_label {
    () => {
        r"(?:(?P<fp>\b(?i:order|invoice|ticket|ref|id|no|version|build|release|serial|account)[\s:#.]*)|^|[^\w+./#-])"
    };
}

/// The end of a number: not followed by more digits, by `.5`, `-3` or `:30`.
macro_rules! number_end {
    () => {
        r"(?:$|[^\w./:-]|[./:-](?:$|\s))"
    };
}

/// The builtin national phone-number rules.
pub(crate) static RULES: &[Rule] = &[
    Rule {
        id: "phone-uk",
        category: Pii,
        description: "UK phone number in national form (020 7946 0958, 07700 900123) or as +44 (0)20 …",
        keywords: &["0", "+44"],
        regex: concat!(
            not_after_a_label!(),
            r"(?P<v>0(?:2[0-9] [0-9]{4} [0-9]{4}|[1378][0-9]{2} [0-9]{3} [0-9]{4}|[17][0-9]{3} [0-9]{5,6})",
            r"|\+44 ?(?:\(0\) ?)?(?:2[0-9] ?[0-9]{4} ?[0-9]{4}|[1378][0-9]{2} ?[0-9]{3} ?[0-9]{4}|[17][0-9]{3} ?[0-9]{5,6}))",
            number_end!()
        ),
        validate: None,
        examples_true: &[
            "call 020 7946 0958 after nine",
            // A word merely ending in a label (`casi-no`) is not one.
            "the casino 020 7946 0958 opens at six",
            "mobile: 07700 900123",
            "Tel. 0161 496 0000",
            "+44 (0)20 7946 0958",
            "+44 (0) 7700 900123,",
        ],
        examples_false: &[
            "version 020 7946 0958",
            "020-7946-0958-1",
            "ids 0207946095812",
            "at 07:00 900123",
        ],
    },
    Rule {
        id: "phone-fr",
        category: Pii,
        description: "French phone number in national form (01 23 45 67 89) or as +33 (0)1 …",
        keywords: &["0"],
        regex: concat!(
            not_after_a_label!(),
            r"(?P<v>0[1-9](?: [0-9]{2}){4}|0[1-9](?:\.[0-9]{2}){4}|0[1-9](?:-[0-9]{2}){4}",
            r"|\+33 ?\(0\) ?[1-9](?:[ .-]?[0-9]{2}){4})",
            number_end!()
        ),
        validate: None,
        examples_true: &[
            "Téléphone : 01 23 45 67 89",
            "portable 06.12.34.56.78",
            "+33 (0)1 23 45 67 89",
        ],
        examples_false: &[
            "v01.23.45.67.89",
            "01.23.45.67.89.10",
            "ref 01 23 45 67 89",
            "0 1 2 3 4 5 6 7 8 9",
        ],
    },
    Rule {
        id: "phone-de",
        category: Pii,
        description: "German phone number in national form (030 901820, 0151 23456789) or as +49 (0)30 …",
        keywords: &["0"],
        regex: concat!(
            not_after_a_label!(),
            r"(?P<v>0[1-9][0-9]{1,4}(?: |/| / |-)[0-9]{3,8}(?:[ -][0-9]{2,5})?",
            r"|\+49 ?\(0\) ?[1-9][0-9]{1,4}[ /-]?[0-9]{3,8}(?:[ -][0-9]{2,5})?)",
            number_end!()
        ),
        validate: Some(check::national_phone),
        examples_true: &[
            "Telefon: 030 901820",
            "mobil 0151 23456789",
            "Tel. 089/1234567",
            "+49 (0)30 901820",
        ],
        examples_false: &[
            "order 0123 456789",
            "open 0900 1730",
            "2024-05-12 08:15:00",
            "release 0.12.3",
            "030-901820-5-7",
        ],
    },
];
