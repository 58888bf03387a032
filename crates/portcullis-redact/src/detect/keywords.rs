//! Every occurrence of every rule keyword in a text, which is where the rules can match.
//!
//! Keywords matched exactly (token prefixes such as `ghp_` or `AKIA`) and keywords matched
//! ASCII case-insensitively (`password`, `secret`) are searched separately, each set with
//! the SIMD "Teddy" searcher of `aho-corasick` where the CPU has one. That searcher reports
//! the leftmost match, not overlapping ones, so the search restarts one byte after each hit
//! and adds the keywords that are a prefix of the one found (which start there too). A
//! case-insensitive set is searched in lowercased blocks of the text. Texts too short for
//! Teddy, and every text where the CPU has no Teddy, are searched with an Aho-Corasick
//! automaton that reports overlapping matches directly.

use std::ops::Range;

use aho_corasick::packed::{self, MatchKind};
use aho_corasick::{AhoCorasick, Span};

/// Teddy slows down past this many patterns; larger sets are split.
const GROUP: usize = 64;
/// How much of a text a case-insensitive set lowercases at a time.
const BLOCK: usize = 64 * 1024;
/// A text shorter than Teddy's minimum length (a few SIMD registers' worth, below which it
/// falls back to a slower search) is searched with the automaton; this caps that length.
const SHORT_TEXT: usize = 128;

/// The keyword searches of a rule set.
#[derive(Debug, Default)]
pub(super) struct Keywords {
    sets: Vec<Set>,
    /// Whether a search could not be built, so that every rule must run on the whole text.
    pub(super) failed: bool,
}

/// One set of keywords searched together.
#[derive(Debug)]
struct Set {
    /// `None` where the CPU has no SIMD Teddy implementation.
    teddy: Option<packed::Searcher>,
    /// Reports overlapping matches, for short texts and when there is no `teddy`.
    automaton: AhoCorasick,
    /// Per pattern (longest first): its length, the rules it belongs to, and the other
    /// patterns that are a prefix of it.
    patterns: Vec<Pattern>,
    /// Whether to match ASCII case-insensitively.
    fold: bool,
}

#[derive(Debug)]
struct Pattern {
    len: usize,
    owners: Vec<usize>,
    prefixes: Vec<usize>,
}

impl Keywords {
    /// The searches for `keywords`: each keyword with the index of its rule and whether it
    /// is matched exactly.
    pub(super) fn new<'k>(keywords: impl IntoIterator<Item = (&'k str, usize, bool)>) -> Self {
        let mut exact: Vec<(String, Vec<usize>)> = Vec::new();
        let mut folded: Vec<(String, Vec<usize>)> = Vec::new();
        for (keyword, owner, is_exact) in keywords {
            let (list, keyword) = if is_exact {
                (&mut exact, keyword.to_owned())
            } else {
                (&mut folded, keyword.to_ascii_lowercase())
            };
            match list.iter_mut().find(|(known, _)| *known == keyword) {
                Some((_, owners)) => owners.push(owner),
                None => list.push((keyword, vec![owner])),
            }
        }
        let mut out = Self::default();
        for (mut list, fold) in [(exact, false), (folded, true)] {
            // Longest first, so that of the keywords starting at one place the leftmost-first
            // search reports the one the others are prefixes of.
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
            for group in list.chunks(GROUP) {
                match Set::new(group, fold) {
                    Some(set) => out.sets.push(set),
                    None => out.failed = true,
                }
            }
        }
        out
    }

    /// Fills `hits` with every keyword occurrence in `text` as the index of a rule it
    /// belongs to and its range, sorted by rule then position.
    pub(super) fn find(&self, text: &str, lower: &mut Vec<u8>, hits: &mut Vec<(usize, Range<usize>)>) {
        hits.clear();
        for set in &self.sets {
            set.find(text.as_bytes(), lower, hits);
        }
        if hits.len() > 1 {
            hits.sort_unstable_by_key(|(owner, range)| (*owner, range.start));
        }
    }
}

impl Set {
    fn new(group: &[(String, Vec<usize>)], fold: bool) -> Option<Self> {
        let patterns = group
            .iter()
            .map(|(keyword, owners)| Pattern {
                len: keyword.len(),
                owners: owners.clone(),
                prefixes: group
                    .iter()
                    .enumerate()
                    .filter(|(_, (other, _))| other.len() < keyword.len() && keyword.starts_with(other.as_str()))
                    .map(|(index, _)| index)
                    .collect(),
            })
            .collect();
        let keywords = group.iter().map(|(keyword, _)| keyword);
        let teddy = packed::Config::new()
            .match_kind(MatchKind::LeftmostFirst)
            .only_teddy(true)
            .builder()
            .extend(keywords.clone())
            .build();
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(fold)
            .build(keywords)
            .ok()?;
        Some(Self {
            teddy,
            automaton,
            patterns,
            fold,
        })
    }

    fn find(&self, text: &[u8], lower: &mut Vec<u8>, hits: &mut Vec<(usize, Range<usize>)>) {
        match &self.teddy {
            Some(searcher) if text.len() >= SHORT_TEXT.min(searcher.minimum_len()) => {
                self.find_teddy(searcher, text, lower, hits);
            }
            _ => {
                for found in self.automaton.find_overlapping_iter(text) {
                    // Overlapping matches include the prefixes.
                    self.push(found.pattern().as_usize(), found.start(), false, hits);
                }
            }
        }
    }

    fn find_teddy(
        &self,
        searcher: &packed::Searcher,
        text: &[u8],
        lower: &mut Vec<u8>,
        hits: &mut Vec<(usize, Range<usize>)>,
    ) {
        if self.fold {
            let longest = self.patterns.first().map_or(0, |pattern| pattern.len);
            let mut at = 0;
            while at < text.len() {
                // Each block also holds the start of every keyword starting in it.
                let end = text.len().min(at + BLOCK + longest.saturating_sub(1));
                let block = text.get(at..end).unwrap_or_default();
                lower.clear();
                lower.extend(block.iter().map(u8::to_ascii_lowercase));
                let starts = BLOCK.min(block.len());
                self.find_in(searcher, lower, starts, at, hits);
                at += BLOCK;
            }
        } else {
            self.find_in(searcher, text, text.len(), 0, hits);
        }
    }

    /// The keywords starting before `starts` in `haystack`, which begins at `offset` in the
    /// text.
    fn find_in(
        &self,
        searcher: &packed::Searcher,
        haystack: &[u8],
        starts: usize,
        offset: usize,
        hits: &mut Vec<(usize, Range<usize>)>,
    ) {
        let mut from = 0;
        while from < starts {
            let Some(found) = searcher.find_in(haystack, Span::from(from..haystack.len())) else {
                break;
            };
            if found.start() >= starts {
                break;
            }
            self.push(found.pattern().as_usize(), offset + found.start(), true, hits);
            from = found.start() + 1;
        }
    }

    /// Records pattern `index` at `start`, and the patterns that are its prefixes when
    /// `with_prefixes`.
    fn push(&self, index: usize, start: usize, with_prefixes: bool, hits: &mut Vec<(usize, Range<usize>)>) {
        let Some(pattern) = self.patterns.get(index) else {
            return;
        };
        let prefixes = pattern
            .prefixes
            .iter()
            .filter(|_| with_prefixes)
            .filter_map(|&prefix| self.patterns.get(prefix));
        for pattern in std::iter::once(pattern).chain(prefixes) {
            for &owner in &pattern.owners {
                hits.push((owner, start..start + pattern.len));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Keywords;

    const KEYWORDS: &[(&str, bool)] = &[
        ("AC", true),
        ("ACCA", true),
        ("AKIA", true),
        ("CA", true),
        ("pass", false),
        ("password=", false),
        ("pwd", false),
        ("word", false),
        ("sk-", true),
        ("sk-ant-", true),
    ];

    /// Every occurrence of every keyword, by brute force.
    fn naive(text: &str) -> Vec<(usize, std::ops::Range<usize>)> {
        let mut hits = Vec::new();
        for (owner, (keyword, exact)) in KEYWORDS.iter().enumerate() {
            for start in 0..text.len() {
                let Some(candidate) = text.as_bytes().get(start..start + keyword.len()) else {
                    break;
                };
                let same = if *exact {
                    candidate == keyword.as_bytes()
                } else {
                    candidate.eq_ignore_ascii_case(keyword.as_bytes())
                };
                if same {
                    hits.push((owner, start..start + keyword.len()));
                }
            }
        }
        hits.sort_unstable_by_key(|(owner, range)| (*owner, range.start));
        hits
    }

    proptest! {
        #[test]
        fn every_occurrence_of_every_keyword_is_found(
            text in "(AC|CA|KIA|pass|PaSs|word|WORD=|pwd|sk-|ant-|[a-zA-Z -]){0,40}",
        ) {
            let keywords = Keywords::new(KEYWORDS.iter().enumerate().map(|(owner, (k, exact))| (*k, owner, *exact)));
            // Short texts are searched with the automaton, long ones with Teddy.
            for text in [text.clone(), format!("{}{text}", "x".repeat(super::SHORT_TEXT))] {
                let mut hits = Vec::new();
                keywords.find(&text, &mut Vec::new(), &mut hits);
                prop_assert_eq!(hits, naive(&text));
            }
        }
    }

    #[test]
    fn keywords_across_lowercased_blocks_are_found() {
        let keywords = Keywords::new([("password=", 0, false)]);
        let mut text = "x".repeat(super::BLOCK - 4);
        text.push_str("PassWord=1 and password=2");
        let mut hits = Vec::new();
        keywords.find(&text, &mut Vec::new(), &mut hits);
        let starts: Vec<usize> = hits.iter().map(|hit| hit.1.start).collect();
        assert_eq!(starts, [super::BLOCK - 4, super::BLOCK + 11]);
    }
}
