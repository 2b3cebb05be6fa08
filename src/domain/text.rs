//! Free text a request carries (names, labels, reasons, references).

/// The text trimmed, if it fits in `max_chars` characters and holds no control character:
/// PostgreSQL refuses NUL in text (a 500 otherwise, and, in a coalesced read, for every request
/// sharing the statement), and no till, report or CSV wants the others. Empty text passes: the
/// caller decides whether it may be.
pub fn plain_text(value: &str, max_chars: usize) -> Option<&str> {
    let value = value.trim();
    let fits = value.chars().count() <= max_chars && !value.chars().any(char::is_control);
    fits.then_some(value)
}
