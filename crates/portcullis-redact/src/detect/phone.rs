//! Builtin rules for phone numbers in national formats (E.164 and North American numbers are
//! in [`super::pii`]).

use super::Rule;

/// The builtin national phone-number rules.
pub(crate) static RULES: &[Rule] = &[];
