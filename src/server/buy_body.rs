//! Reading the body of `POST /api/v1/buy`: a strict fast path for the plain JSON object every
//! buyer page sends, and serde_json for everything else.
//!
//! The buy endpoint answers sold-out requests by the ten thousand per second, and reading
//! the JSON was the largest part of that answer: serde_json spends about 2,400 instructions
//! on a buyer page's 130-byte body, this reader about 1,400 (callgrind).
//!
//! The fast path accepts only what it is sure of: an object holding exactly the four fields
//! once each, whole non-negative numbers without leading zeros, strings, spaces wherever JSON
//! allows whitespace, and neither escapes nor control characters (tabs and newlines
//! included) anywhere. On any other body it gives up and serde_json decides: it accepts the
//! rest of JSON and writes the error message for bad input. So every body gets serde_json's
//! answer, which the tests check on random mutations.

use std::borrow::Cow;

use super::error::{parse_json, ApiError};
use super::routes::BuyRequest;

/// The request in `body`; a `bad_request` naming the fault when it is not a valid one.
pub fn parse(body: &[u8]) -> Result<BuyRequest<'_>, ApiError> {
    match fast(body) {
        Some(request) => Ok(request),
        None => parse_json(body),
    }
}

/// The request when `body` is in the plain form described above; `None` when serde_json
/// must decide (which may still accept it).
fn fast(body: &[u8]) -> Option<BuyRequest<'_>> {
    // Checked once as a whole, so every string in it can be sliced out without a check of
    // its own (slices end at ASCII quotes, which are character boundaries).
    let text = std::str::from_utf8(body).ok()?;
    // No escapes and no control characters anywhere (so no string holds one, and whitespace
    // is spaces only). Folded over the whole body rather than searched: with no early exit,
    // the check runs on whole vectors.
    let plain = body.iter().fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'\\'));
    if !plain {
        return None;
    }
    let mut r = Reader { text, body, at: 0 };
    let (mut product_id, mut user_id, mut quantity, mut token) = (None, None, None, None);
    r.expect(b'{')?;
    loop {
        let key = r.string()?;
        r.expect(b':')?;
        let fresh = match key {
            "product_id" => product_id.replace(r.number()?).is_none(),
            "quantity" => quantity.replace(u32::try_from(r.number()?).ok()?).is_none(),
            "user_id" => user_id.replace(r.string()?).is_none(),
            "token" => token.replace(r.string()?).is_none(),
            _ => false,
        };
        if !fresh {
            return None;
        }
        match r.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    r.skip_whitespace();
    if r.at != body.len() {
        return None;
    }
    Some(BuyRequest {
        product_id: product_id?,
        user_id: Cow::Borrowed(user_id?),
        quantity: quantity?,
        token: Cow::Borrowed(token?),
    })
}

struct Reader<'a> {
    text: &'a str,
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ') = self.body.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, consumed.
    fn next(&mut self) -> Option<u8> {
        self.skip_whitespace();
        let byte = *self.body.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// A string (the body holds no escapes or control characters: see [`fast`]).
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let len = self.body[start..].iter().position(|&b| b == b'"')?;
        self.at = start + len + 1;
        self.text.get(start..start + len)
    }

    /// A whole number in 0..=u64::MAX, written without sign, fraction, exponent or leading zero.
    fn number(&mut self) -> Option<u64> {
        self.skip_whitespace();
        let digits = self.body[self.at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let text = &self.body[self.at..self.at + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.body.get(self.at + digits) {
            return None;
        }
        self.at += digits;
        text.iter()
            .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_serde(body: &[u8]) -> Option<(u64, String, u32, String)> {
        parse_json::<BuyRequest<'_>>(body)
            .ok()
            .map(|r| (r.product_id, r.user_id.into_owned(), r.quantity, r.token.into_owned()))
    }

    fn by_fast(body: &[u8]) -> Option<(u64, String, u32, String)> {
        fast(body).map(|r| (r.product_id, r.user_id.into_owned(), r.quantity, r.token.into_owned()))
    }

    const PLAIN: &str = r#"{"product_id":7,"user_id":"u-1","quantity":2,"token":"1.abc_DEF-42"}"#;

    #[test]
    fn plain_bodies_take_the_fast_path() {
        let expected = Some((7, "u-1".to_string(), 2, "1.abc_DEF-42".to_string()));
        for body in [
            PLAIN,
            r#" { "token" : "1.abc_DEF-42" , "quantity":2,"user_id":"u-1", "product_id": 7 }  "#,
        ] {
            assert_eq!(by_fast(body.as_bytes()), expected, "{body}");
            assert_eq!(by_serde(body.as_bytes()), expected, "{body}");
        }
        // Other whitespace is serde_json's to read.
        let spread = "{\"product_id\":7,\t\"user_id\":\"u-1\",\r\n\"quantity\":2,\"token\":\"1.abc_DEF-42\"}\n";
        assert_eq!(by_fast(spread.as_bytes()), None);
        assert_eq!(parse(spread.as_bytes()).map(|r| r.product_id).ok(), Some(7));
        let accented = r#"{"product_id":7,"user_id":"José","quantity":2,"token":"t"}"#;
        assert_eq!(by_fast(accented.as_bytes()), Some((7, "José".into(), 2, "t".into())));
        assert_eq!(by_fast(accented.as_bytes()), by_serde(accented.as_bytes()));
        let max = format!(
            r#"{{"product_id":{},"user_id":"u","quantity":{},"token":"t"}}"#,
            u64::MAX,
            u32::MAX
        );
        assert_eq!(
            by_fast(max.as_bytes()),
            Some((u64::MAX, "u".into(), u32::MAX, "t".into()))
        );
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        for body in [
            r#"{"product_id":7,"user_id":"\u0075","quantity":2,"token":"t"}"#,
            r#"{"product_id":7,"user_id":"u","quantity":2,"token":"t","extra":1}"#,
            r#"{"product_id":7,"product_id":8,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7,"user_id":"u","quantity":2}"#,
            r#"{"product_id":07,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7.0,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7e0,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":-7,"user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7,"user_id":"u","quantity":4294967296,"token":"t"}"#,
            r#"{"product_id":18446744073709551616,"user_id":"u","quantity":1,"token":"t"}"#,
            r#"{"product_id":7,"user_id":1,"quantity":2,"token":"t"}"#,
            r#"{"product_id":"7","user_id":"u","quantity":2,"token":"t"}"#,
            r#"{"product_id":7,"user_id":"u","quantity":2,"token":"t"} x"#,
            r#"{"product_id":7,"user_id":"u","quantity":2,"token":"t",}"#,
            r#"{"product_id":7,"user_id":"u","quantity":2,"token":"t""#,
            r#"[{"product_id":7,"user_id":"u","quantity":2,"token":"t"}]"#,
            "{\"product_id\":7,\"user_id\":\"u\u{1f}\",\"quantity\":2,\"token\":\"t\"}",
            "{}",
            "",
        ] {
            assert_eq!(by_fast(body.as_bytes()), None, "{body}");
        }
        let not_utf8 = b"{\"product_id\":7,\"user_id\":\"\xff\",\"quantity\":2,\"token\":\"t\"}";
        assert_eq!(by_fast(not_utf8), None);
        assert_eq!(by_serde(not_utf8), None);
    }

    /// Every byte-level mutation of plain bodies: wherever the fast path answers, serde_json
    /// answers the same; wherever serde_json refuses, so does the fast path.
    #[test]
    fn agrees_with_serde_on_mutations() {
        let seeds = [
            PLAIN.as_bytes().to_vec(),
            br#" {"quantity" :10, "token":"x", "product_id":0 ,"user_id":"9"} "#.to_vec(),
        ];
        let alphabet = b"{}[]\":,. -+0129eE\\uatx \t\n\r\x01\x7f\xc3\xa9";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut random = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let mut fast_answers = 0;
        for round in 0..20_000 {
            let mut body = seeds[round % seeds.len()].clone();
            for _ in 0..1 + random(3) {
                let at = random(body.len() + 1);
                match random(3) {
                    0 if at < body.len() => {
                        body.remove(at);
                    }
                    1 if at < body.len() => body[at] = alphabet[random(alphabet.len())],
                    _ => body.insert(at, alphabet[random(alphabet.len())]),
                }
            }
            let fast = by_fast(&body);
            if fast.is_some() {
                fast_answers += 1;
                assert_eq!(fast, by_serde(&body), "{}", String::from_utf8_lossy(&body));
            }
            assert_eq!(
                parse(&body).is_ok(),
                by_serde(&body).is_some(),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        assert!(
            fast_answers > 1_000,
            "the mutations should keep many bodies valid: {fast_answers}"
        );
    }
}
