//! User ids: the one rule every entry point applies (HTTP buy and token bodies, the `token`,
//! `blacklist` and `order list` commands), so an id that was answered `queued` can always
//! be persisted; the consumer and the MySQL columns enforce its length limit.
//!
//! A user id is 1 to [`MAX_BYTES`] bytes of UTF-8, with no whitespace, control, zero-width,
//! bidirectional-override or other invisible characters. Bytes, not characters, because
//! the consumer's and MySQL's limits are what an accepted id must fit: the `user_id`
//! columns (VARCHAR(64), `utf8mb4_bin`) also check `OCTET_LENGTH(user_id) <= 64`. Ids are
//! compared byte for byte everywhere: Redis sets and keys, and MySQL through the binary
//! collation, so `Mallory` and `mallory` are two users in both.
//!
//! Reading the column: sqlx 0.8 refuses to decode a column with a binary collation into a
//! `String` (launchbadge/sqlx#3387), so queries select `CAST(user_id AS CHAR)`; the cast
//! only changes the result's collation, and `WHERE`/`GROUP BY` on the column still compare
//! bytes.

use std::fmt;

use crate::error::Error;

/// Longest user id, in bytes of UTF-8 (64 ASCII characters, 32 "é", 16 "😀").
pub const MAX_BYTES: usize = 64;

/// Why a user id was refused; the message names the rule and shows the id escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUserId(String);

impl fmt::Display for InvalidUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidUserId {}

impl From<InvalidUserId> for Error {
    fn from(e: InvalidUserId) -> Self {
        Error::Invalid(e.0)
    }
}

/// Checks `user` against the rule in the module docs.
pub fn validate(user: &str) -> Result<(), InvalidUserId> {
    check_storable(user)?;
    let refuse = |why: String| Err(InvalidUserId(format!("user id {}: {why}", shown(user))));
    if let Some(c) = user.chars().find(|&c| c.is_whitespace()) {
        return refuse(format!("must not contain whitespace (U+{:04X})", c as u32));
    }
    if let Some(c) = user.chars().find(|&c| c.is_control()) {
        return refuse(format!("must not contain control characters (U+{:04X})", c as u32));
    }
    if let Some(c) = user.chars().find(|&c| is_invisible(c)) {
        return refuse(format!(
            "must not contain invisible, zero-width or bidirectional formatting characters (U+{:04X})",
            c as u32
        ));
    }
    Ok(())
}

/// Checks only what MySQL's columns enforce: 1 to [`MAX_BYTES`] bytes. The consumer uses
/// this rather than [`validate`]: a reservation Redis already confirmed must be persisted
/// if MySQL can hold it, even if it was accepted before the character rules tightened.
pub fn check_storable(user: &str) -> Result<(), InvalidUserId> {
    if user.is_empty() {
        return Err(InvalidUserId("user id must not be empty".into()));
    }
    if user.len() > MAX_BYTES {
        return Err(InvalidUserId(format!(
            "user id {}: is {} bytes of UTF-8; at most {MAX_BYTES} bytes are allowed",
            shown(user),
            user.len()
        )));
    }
    Ok(())
}

/// The id for an error message: escaped (so bidi overrides cannot reorder the terminal
/// line) and cut short (so a megabyte of id does not flood the log).
fn shown(user: &str) -> String {
    const SHOWN_CHARS: usize = 80;
    let mut text: String = user.chars().take(SHOWN_CHARS).collect();
    if text.len() < user.len() {
        text.push('…');
    }
    format!("{text:?}")
}

/// Characters that render as nothing (or reorder what follows), so two ids that look the
/// same could differ: Unicode's format characters (general category Cf, which `char` has
/// no predicate for) plus the fillers that display as blanks.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                      // soft hyphen
        | '\u{034F}'                    // combining grapheme joiner
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'                    // Arabic letter mark
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{115F}'..='\u{1160}'       // Hangul fillers
        | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}'       // Mongolian variation selectors and vowel separator
        | '\u{200B}'..='\u{200F}'       // zero-width space, joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}'       // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'       // word joiner, invisible operators
        | '\u{2066}'..='\u{206F}'       // bidi isolates, deprecated format characters
        | '\u{3164}'                    // Hangul filler
        | '\u{FE00}'..='\u{FE0F}'       // variation selectors
        | '\u{FEFF}'                    // zero-width no-break space (BOM)
        | '\u{FFA0}'                    // halfwidth Hangul filler
        | '\u{FFF9}'..='\u{FFFB}'       // interlinear annotation
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}'     // tags and variation selectors supplement
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in ["u-1", "用户", "Mallory", "a.b@c", "😀"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        assert!(validate(&"x".repeat(64)).is_ok());
        assert!(validate(&"é".repeat(32)).is_ok(), "64 bytes");
        let err = validate(&"é".repeat(33)).unwrap_err().to_string();
        assert!(err.contains("66 bytes") && err.contains("at most 64 bytes"), "{err}");
        assert!(validate(&"x".repeat(65)).is_err());
        assert!(
            check_storable("a\u{200B}b").is_ok(),
            "storable, though no longer accepted"
        );
        assert!(check_storable(&"é".repeat(33)).is_err());
        for bad in [
            "",
            " a",
            "a ",
            "a b",
            "a\u{0}",
            "a\u{7f}",
            "a\u{200B}b",
            "a\u{200D}b",
            "a\u{202E}b",
            "a\u{2066}b",
            "\u{FEFF}a",
            "a\u{3000}",
            "a\u{E0041}",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        let err = validate("evil\u{202E}txt").unwrap_err().to_string();
        assert!(err.contains("\\u{202e}") && err.contains("U+202E"), "{err}");
    }
}
