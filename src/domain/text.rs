//! Free text that people typed: names (a season's, a batch's, a merchant's, a bank's, an
//! account holder's), labels, order references, reasons. One rule for all, parsed once at the
//! edge into [`PlainText`].
//!
//! The text is trimmed of white space at both ends. It is refused when it is longer than its
//! field allows, or holds a control character (PostgreSQL refuses NUL; no till, report or CSV
//! wants the others; U+0085 is one), a line or paragraph separator (U+2028, U+2029), or an
//! invisible formatting character that makes text read otherwise than it is stored: the
//! direction embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069) and marks
//! (U+200E, U+200F, U+061C), the zero-width characters (U+200B to U+200D, U+2060) and the
//! byte-order mark (U+FEFF). Text that was not empty but is only white space once trimmed is
//! refused too: it would be stored as nothing. Empty text passes; the field decides whether it
//! may be empty.

use std::fmt;

/// Text that passed [`PlainText::parse`].
#[derive(Clone, PartialEq, Eq)]
pub struct PlainText(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("is longer than {0} characters")]
    TooLong(usize),
    #[error("holds a control character or a line separator")]
    Control,
    #[error(
        "holds an invisible formatting character (a direction override, a zero-width character or a byte-order mark)"
    )]
    Invisible,
    #[error("is only white space")]
    Blank,
}

/// Characters that change how text is shown without being seen themselves.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// How the refusal of a text field ends: "none of them ...".
pub const PLAIN_TEXT_RULE: &str =
    "none of them control or invisible formatting characters, and not only white space";

/// [`PlainText::parse`], for callers that only need to know whether the text passed.
pub fn plain_text(value: &str, max_chars: usize) -> Option<PlainText> {
    PlainText::parse(value, max_chars).ok()
}

impl PlainText {
    /// `value`, trimmed, if it keeps the rule of the module, with at most `max_chars` characters.
    pub fn parse(value: &str, max_chars: usize) -> Result<PlainText, TextError> {
        let trimmed = value.trim();
        if trimmed.is_empty() && !value.is_empty() {
            return Err(TextError::Blank);
        }
        if trimmed.chars().count() > max_chars {
            return Err(TextError::TooLong(max_chars));
        }
        if trimmed.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
            return Err(TextError::Control);
        }
        if trimmed.chars().any(is_invisible_format) {
            return Err(TextError::Invisible);
        }
        Ok(PlainText(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for PlainText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for PlainText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_kept() {
        assert_eq!(PlainText::parse("  青岛书店 ", 10).map(PlainText::into_string), Ok("青岛书店".into()));
        assert_eq!(PlainText::parse("", 10).map(|t| t.is_empty()), Ok(true));
        assert_eq!(PlainText::parse("abc", 2), Err(TextError::TooLong(2)));
    }

    #[test]
    fn hidden_and_blank_text_is_refused() {
        for hidden in ["a\u{202E}b", "a\u{2066}b", "a\u{200B}b", "a\u{200D}b", "a\u{2060}b", "\u{FEFF}ab"] {
            assert_eq!(PlainText::parse(hidden, 10), Err(TextError::Invisible), "{hidden:?}");
        }
        for control in ["a\u{0}b", "a\nb", "a\u{85}b", "a\u{2028}b", "a\u{2029}b"] {
            assert_eq!(PlainText::parse(control, 10), Err(TextError::Control), "{control:?}");
        }
        for blank in ["\u{85}", "\u{2028}", " \u{2028}\u{85} ", "   "] {
            assert_eq!(PlainText::parse(blank, 10), Err(TextError::Blank), "{blank:?}");
        }
    }
}
