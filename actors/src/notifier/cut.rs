//! Cutting a message to a platform's limit, keeping its end (where a failure shows), as
//! valid UTF-8, with a marker that says how much was dropped.
//!
//! Lengths are counted in UTF-16 code units ([`units`]): an emoji counts 2, every other
//! character of the Basic Multilingual Plane 1. That is never less than what Slack,
//! Mattermost (runes) or Discord count, so a cut text is within every platform's limit.

use std::borrow::Cow;

/// The length of `text` as the limits count it: UTF-16 code units.
pub fn units(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// The marker put in place of the `bytes` bytes (of UTF-8) that a cut dropped.
pub fn marker(bytes: usize) -> String {
    format!("…[{bytes} bytes cut]…")
}

/// `text` when it fits in `max` units; otherwise a [`marker`] followed by the longest end
/// of `text` that fits after it, cut between two characters (never inside one).
///
/// The marker reserves room for the largest count it could show (`text.len()` bytes), so
/// the result never passes `max`. A `max` too small for the marker gives the end of `text`
/// that fits, without a marker.
pub fn cut_keeping_end(text: &str, max: usize) -> Cow<'_, str> {
    if units(text) <= max {
        return Cow::Borrowed(text);
    }
    let reserved = units(&marker(text.len()));
    let (budget, with_marker) = match max.checked_sub(reserved) {
        Some(budget) => (budget, true),
        None => (max, false),
    };
    let start = end_start(text, budget);
    let kept = &text[start..];
    if with_marker {
        Cow::Owned(format!("{}{kept}", marker(start)))
    } else {
        Cow::Borrowed(kept)
    }
}

/// The byte offset where the longest end of `text` of at most `budget` units starts.
fn end_start(text: &str, budget: usize) -> usize {
    let mut used = 0;
    let mut start = text.len();
    for (at, c) in text.char_indices().rev() {
        used += c.len_utf16();
        if used > budget {
            break;
        }
        start = at;
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_that_fits_is_kept_as_it_is() {
        assert_eq!(cut_keeping_end("hello", 5), "hello");
        assert!(matches!(cut_keeping_end("hello", 5), Cow::Borrowed(_)));
        assert_eq!(cut_keeping_end("", 0), "");
    }

    #[test]
    fn a_long_text_keeps_its_end_after_a_marker_naming_the_bytes_cut() {
        let text = format!("{}error: the end", "x".repeat(1000));
        let cut = cut_keeping_end(&text, 40);
        assert!(cut.ends_with("error: the end"), "{cut}");
        assert!(units(&cut) <= 40, "{cut}");
        let kept = cut.split('…').next_back().unwrap();
        assert_eq!(cut, format!("{}{kept}", marker(text.len() - kept.len())));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // 'é' is 2 bytes, '€' 3, '😀' 4 bytes and 2 units.
        let text = "é€😀".repeat(100);
        for max in 0..120 {
            let cut = cut_keeping_end(&text, max);
            assert!(units(&cut) <= max, "max {max}: {cut}");
            let kept = cut.rsplit('…').next().unwrap();
            assert!(text.ends_with(kept), "max {max}: {cut}");
        }
    }

    /// A small xorshift generator: the same sequence on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// A character of 1, 2, 3 or 4 bytes of UTF-8.
        fn char(&mut self) -> char {
            let ranges: [(u32, u32); 4] = [
                (0x20, 0x7e),
                (0x80, 0x7ff),
                (0x800, 0xd7ff),
                (0x1_0000, 0x10_ffff),
            ];
            let (low, high) = ranges[self.below(4) as usize];
            let code = low + self.below(u64::from(high - low + 1)) as u32;
            char::from_u32(code).unwrap_or('?')
        }
    }

    #[test]
    fn property_any_utf8_is_cut_to_the_limit_keeping_the_longest_end_that_fits() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.below(300) as usize;
            let text: String = (0..len).map(|_| rng.char()).collect();
            let max = rng.below(400) as usize;
            let cut = cut_keeping_end(&text, max);
            assert!(units(&cut) <= max, "over the limit: max {max}");
            if units(&text) <= max {
                assert_eq!(cut, text);
                continue;
            }
            let reserved = units(&marker(text.len()));
            if max < reserved {
                assert!(text.ends_with(&*cut));
                continue;
            }
            // marker(n) + the end of the text, n = the bytes not kept.
            let prefix_end = cut.find("]…").expect("marker") + "]…".len();
            let kept = &cut[prefix_end..];
            assert!(text.ends_with(kept));
            assert_eq!(&cut[..prefix_end], marker(text.len() - kept.len()));
            // The longest such end: one more character would not fit.
            let dropped = &text[..text.len() - kept.len()];
            let next = dropped.chars().next_back().expect("something was cut");
            assert!(units(kept) + next.len_utf16() > max - reserved);
        }
    }
}
