//! JSON written as the text it arrived in. A webhook's object goes to `data` (and its `public_metadata` to its own
//! column) as Clerk sent it: parsing it into a tree of `serde_json::Value`s only to serialize the tree back to text
//! for the row was a third of the daemon's work per webhook.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value kept as its text (valid JSON: it was parsed once to be captured).
#[derive(Clone, Debug)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// The text of `raw`, copied.
    pub fn from_raw(raw: &RawValue) -> Self {
        RawJson(raw.to_owned())
    }

    /// `value` as text.
    pub fn from_value(value: &Value) -> Self {
        // Serializing a `Value` cannot fail (its map keys are strings).
        RawJson(serde_json::value::to_raw_value(value).unwrap_or_else(|_| null()))
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The value the text holds.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// Drops U+0000 from every string and key, as `jsonb` requires (see `store::sanitize`). Valid JSON text can
    /// hold it only escaped, as `\u0000`: the tree is built only when the text has that escape.
    pub(super) fn strip_nul(&mut self, strip: impl FnOnce(&mut Value)) {
        if self.0.get().contains("\\u0000") {
            let mut value = self.to_value();
            strip(&mut value);
            *self = RawJson::from_value(&value);
        }
    }
}

/// The deepest nesting of arrays and objects accepted, as when the text was parsed into `Value`s (serde_json's
/// recursion limit): capturing raw text does not count depth, and a database refuses JSON nested past its own
/// limits on every retry (Postgres's jsonb, SQLite's JSON functions at 1,000).
pub const MAX_DEPTH: usize = 128;

/// Whether `text` (valid JSON) nests arrays and objects at most [`MAX_DEPTH`] deep: one pass over its bytes,
/// brackets inside strings not counted.
pub fn nesting_within_limit(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        RawJson::from_value(&value)
    }
}

/// Equal texts: what is written is the text.
impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RawJson {}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(RawJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_kept_and_written_as_it_is() {
        let raw: Box<RawValue> = serde_json::from_str(r#"{"b": 1, "a": [true, null]}"#).expect("JSON");
        let json = RawJson::from_raw(&raw);
        assert_eq!(
            json.as_str(),
            r#"{"b": 1, "a": [true, null]}"#,
            "not reordered, not reformatted"
        );
        assert_eq!(
            serde_json::to_string(&(1, &json)).expect("serializes"),
            r#"[1,{"b": 1, "a": [true, null]}]"#,
            "embedded as it is"
        );
        assert_eq!(json.to_value(), serde_json::json!({"a": [true, null], "b": 1}));
    }

    #[test]
    fn nesting_is_counted_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(nesting_within_limit(&deep(MAX_DEPTH)));
        assert!(!nesting_within_limit(&deep(MAX_DEPTH + 1)));
        let quoted = format!(r#"{{"k": "{}\" [[[", "v": [1]}}"#, "[".repeat(500));
        assert!(
            nesting_within_limit(&quoted),
            "brackets in strings (and an escaped quote) do not nest"
        );
    }

    #[test]
    fn nul_is_stripped_only_where_there_is_one() {
        let mut plain = RawJson::from(serde_json::json!({"k": "v"}));
        plain.strip_nul(|_| panic!("no tree is built for text without \\u0000"));
        let mut with: RawJson = serde_json::from_str(r#"{"r\u0000ole": "ad\u0000min"}"#).expect("JSON");
        with.strip_nul(|v| *v = serde_json::json!({"role": "admin"}));
        assert_eq!(with.to_value(), serde_json::json!({"role": "admin"}));
    }
}
