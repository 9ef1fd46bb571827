//! Redis replies decoded by hand, RESP2 arrays and RESP3 maps alike, so a missing or
//! unexpected value never panics: it is skipped.

use redis::{FromRedisValue, Value};

/// A value as text: strings (bulk ones lossily when not UTF-8) and numbers; `None` for nil
/// and aggregates.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => String::from_redis_value_ref(other).ok(),
    }
}

/// The elements of an array or set; a map's keys and values interleaved; nothing otherwise.
pub(crate) fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// A flat `[k, v, k, v, ...]` list (or a RESP3 map) as text pairs, in order; a pair whose key
/// or value is not text (e.g. a nil) is left out without shifting the ones after it.
pub(crate) fn pairs(v: Value) -> Vec<(String, String)> {
    let flat = items(v);
    flat.chunks_exact(2)
        .filter_map(|c| Some((text(&c[0])?, text(&c[1])?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_nil_value_drops_its_pair_only() {
        // XINFO GROUPS answers `lag` nil when Redis cannot compute it cheaply.
        let reply = Value::Array(vec![
            bulk("name"),
            bulk("orders"),
            bulk("lag"),
            Value::Nil,
            bulk("pending"),
            Value::Int(3),
        ]);
        assert_eq!(
            pairs(reply),
            vec![("name".into(), "orders".into()), ("pending".into(), "3".into())]
        );
    }

    #[test]
    fn resp3_maps_read_like_resp2_arrays() {
        let map = Value::Map(vec![(bulk("pending"), Value::Int(2)), (bulk("name"), bulk("g"))]);
        assert_eq!(
            pairs(map),
            vec![("pending".into(), "2".into()), ("name".into(), "g".into())]
        );
    }
}
