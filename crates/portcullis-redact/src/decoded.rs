//! Searching text as a reader would decode it.
//!
//! The fixed pattern list covers the usual spellings of a secret, but a reader can decode far
//! more: `\u0067hp_…` in text that was JSON once (a truncated JSON body that fell back to text,
//! a JSON document inside a JSON string), `%67hp_…` with any choice of encoded characters and
//! any hex case. So the text is also decoded, up to [`MAX_DEPTH`] layers deep, into *views*
//! that remember where each byte came from; a match in a view is scrubbed over the whole
//! stretch of original text it decodes from.

use std::ops::Range;

use aho_corasick::AhoCorasick;

/// How many decodings deep the text is searched (`\\u0067` needs two).
const MAX_DEPTH: usize = 2;

/// One way of decoding text.
#[derive(Clone, Copy, Debug)]
enum Decoder {
    /// JSON string escapes: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX`.
    Json,
    /// `%XX`, any hex case.
    Percent,
    /// `%XX` and `+` for a space.
    Form,
}

impl Decoder {
    const ALL: [Self; 3] = [Self::Json, Self::Percent, Self::Form];

    /// Whether decoding `text` this way can change it (a cheap test before building a view).
    fn applies(self, text: &[u8]) -> bool {
        match self {
            Self::Json => text.contains(&b'\\'),
            Self::Percent => text.contains(&b'%'),
            Self::Form => text.contains(&b'%') && text.contains(&b'+'),
        }
    }

    /// The escape at the start of `text`: how many bytes it spans and what it decodes to.
    fn escape(self, text: &[u8]) -> Option<(usize, Decoded)> {
        match (self, text) {
            (Self::Json, [b'\\', rest @ ..]) => json_escape(rest).map(|(len, c)| (len + 1, Decoded::Char(c))),
            (Self::Percent | Self::Form, [b'%', hi, lo, ..]) => {
                let byte = hex_value(*hi)? << 4 | hex_value(*lo)?;
                Some((3, Decoded::Byte(byte)))
            }
            (Self::Form, [b'+', ..]) => Some((1, Decoded::Byte(b' '))),
            _ => None,
        }
    }
}

/// What one escape decodes to: a percent escape is one byte, perhaps part of a UTF-8
/// sequence spelled by the next escapes; a JSON escape is a whole character.
#[derive(Clone, Copy, Debug)]
enum Decoded {
    Byte(u8),
    Char(char),
}

/// A decoded JSON escape after its backslash.
fn json_escape(text: &[u8]) -> Option<(usize, char)> {
    let simple = |c: char| Some((1, c));
    match text {
        [b'"', ..] => simple('"'),
        [b'\\', ..] => simple('\\'),
        [b'/', ..] => simple('/'),
        [b'b', ..] => simple('\u{8}'),
        [b'f', ..] => simple('\u{c}'),
        [b'n', ..] => simple('\n'),
        [b'r', ..] => simple('\r'),
        [b't', ..] => simple('\t'),
        [b'u', rest @ ..] => unicode_escape(rest),
        _ => None,
    }
}

/// `XXXX` after `\u`, or a surrogate pair `XXXX\uYYYY`; a lone surrogate is left as text.
fn unicode_escape(text: &[u8]) -> Option<(usize, char)> {
    let high = hex4(text)?;
    if let Some(c) = char::from_u32(high) {
        return Some((5, c));
    }
    let low = match text.get(4..)? {
        [b'\\', b'u', rest @ ..] => hex4(rest)?,
        _ => return None,
    };
    if !(0xD800..0xDC00).contains(&high) || !(0xDC00..0xE000).contains(&low) {
        return None;
    }
    let c = char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?;
    Some((11, c))
}

fn hex4(text: &[u8]) -> Option<u32> {
    text.get(..4)?
        .iter()
        .try_fold(0, |acc, &b| Some(acc << 4 | u32::from(hex_value(b)?)))
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// A run of view bytes and the bytes of the parent text it came from.
#[derive(Debug)]
struct Piece {
    /// Where the run starts in the view.
    at: usize,
    /// Where it starts in the parent.
    from: usize,
    /// `None` for text copied byte for byte; the escape's length in the parent otherwise.
    escape_len: Option<usize>,
}

/// Text decoded one layer from its parent (the original text or another view).
#[derive(Debug)]
struct View {
    bytes: Vec<u8>,
    pieces: Vec<Piece>,
    parent: Option<usize>,
}

impl View {
    /// Decodes `text`, or `None` when there was nothing to decode.
    fn decode(text: &[u8], decoder: Decoder, parent: Option<usize>) -> Option<Self> {
        let mut view = Self {
            bytes: Vec::with_capacity(text.len()),
            pieces: Vec::new(),
            parent,
        };
        let mut i = 0;
        while let Some(rest) = text.get(i..).filter(|rest| !rest.is_empty()) {
            if let Some((len, decoded)) = decoder.escape(rest) {
                view.push_escape(i, len, decoded);
                i += len;
            } else {
                view.push_literal(i, rest);
                i += 1;
            }
        }
        view.pieces.iter().any(|p| p.escape_len.is_some()).then_some(view)
    }

    fn push_escape(&mut self, from: usize, len: usize, decoded: Decoded) {
        let at = self.bytes.len();
        self.pieces.push(Piece {
            at,
            from,
            escape_len: Some(len),
        });
        match decoded {
            Decoded::Byte(byte) => self.bytes.push(byte),
            Decoded::Char(c) => self.bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }

    fn push_literal(&mut self, from: usize, rest: &[u8]) {
        if self.pieces.last().is_none_or(|p| p.escape_len.is_some()) {
            let at = self.bytes.len();
            self.pieces.push(Piece {
                at,
                from,
                escape_len: None,
            });
        }
        self.bytes.extend(rest.first());
    }

    /// The parent range that view bytes `range` decode from.
    fn in_parent(&self, range: &Range<usize>) -> Option<Range<usize>> {
        let start = self.piece_of(range.start)?;
        let last = range.end.checked_sub(1)?;
        let end = self.piece_of(last)?;
        let start = match start.escape_len {
            None => start.from + (range.start - start.at),
            Some(_) => start.from,
        };
        let end = match end.escape_len {
            None => end.from + (last - end.at) + 1,
            Some(len) => end.from + len,
        };
        Some(start..end)
    }

    fn piece_of(&self, offset: usize) -> Option<&Piece> {
        let index = self.pieces.partition_point(|p| p.at <= offset).checked_sub(1)?;
        self.pieces.get(index)
    }
}

/// Adds to `out` the ranges of `text` whose decoding, through up to [`MAX_DEPTH`] layers of
/// JSON escapes and percent-encoding, matches one of `patterns`.
pub(crate) fn find_decoded(patterns: &AhoCorasick, text: &[u8], out: &mut Vec<Range<usize>>) {
    let views = decode_layers(text);
    for (index, view) in views.iter().enumerate() {
        for found in patterns.find_iter(&view.bytes) {
            // Every view range maps back; if one ever didn't, hide the whole text.
            let range = to_original(&views, index, found.range()).unwrap_or(0..text.len());
            out.push(range);
        }
    }
}

/// Every view of `text`, breadth first; a view's parent comes before it.
fn decode_layers(text: &[u8]) -> Vec<View> {
    let mut views: Vec<View> = Vec::new();
    let mut layer: Vec<Option<usize>> = vec![None];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for parent in layer {
            let parent_text = match parent {
                None => text,
                Some(index) => views.get(index).map_or(&[][..], |v| &v.bytes),
            };
            let decoded: Vec<View> = Decoder::ALL
                .into_iter()
                .filter(|d| d.applies(parent_text))
                .filter_map(|d| View::decode(parent_text, d, parent))
                .collect();
            for view in decoded {
                next.push(Some(views.len()));
                views.push(view);
            }
        }
        layer = next;
    }
    views
}

/// Maps a range of view `index` back through its ancestors to the original text.
fn to_original(views: &[View], index: usize, range: Range<usize>) -> Option<Range<usize>> {
    let mut view = views.get(index)?;
    let mut range = view.in_parent(&range)?;
    while let Some(parent) = view.parent {
        view = views.get(parent)?;
        range = view.in_parent(&range)?;
    }
    Some(range)
}

#[cfg(test)]
mod tests {
    use aho_corasick::MatchKind;

    use super::*;

    fn find<'t>(secret: &str, text: &'t str) -> Vec<&'t str> {
        let patterns = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build([secret])
            .unwrap();
        let mut ranges = Vec::new();
        find_decoded(&patterns, text.as_bytes(), &mut ranges);
        ranges.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn json_escapes_map_back_to_the_escaped_text() {
        assert_eq!(find("ghp_abc", r#"x \u0067hp_abc y"#), [r"\u0067hp_abc"]);
        assert_eq!(
            find("ghp_abc", r#"\u0067\u0068\u0070\u005f\u0061\u0062\u0063"#).len(),
            1
        );
        assert_eq!(find("a\"b/c", r#"{"k":"a\"b\/c"}"#), [r#"a\"b\/c"#]);
    }

    #[test]
    fn surrogate_pairs_decode_to_one_character() {
        assert_eq!(find("k\u{1F600}y", r"k\ud83d\ude00y"), [r"k\ud83d\ude00y"]);
        assert!(find("k\u{FFFD}y", r"k\ud83dy").is_empty());
    }

    #[test]
    fn nested_json_is_decoded_two_layers_deep() {
        assert_eq!(
            find("ghp_abc", r#"{"inner":"{\"t\":\"\\u0067hp_abc\"}"}"#),
            [r"\\u0067hp_abc"]
        );
    }

    #[test]
    fn any_percent_spelling_is_decoded() {
        assert_eq!(find("p@ss w0rd", "q=p%40ss%20w%30rd&x=1"), ["p%40ss%20w%30rd"]);
        assert_eq!(find("p@ss w0rd", "q=p%40ss+w0rd"), ["p%40ss+w0rd"]);
        assert_eq!(find("p/é", "p%2f%C3%a9!"), ["p%2f%C3%a9"]);
        assert!(find("50%", "50%2525").contains(&"50%2525"));
    }

    #[test]
    fn text_without_escapes_builds_no_view() {
        assert!(decode_layers(b"plain text, no escapes").is_empty());
        assert!(decode_layers(b"100% sure, \\q").is_empty());
    }
}
