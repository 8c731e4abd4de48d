//! Clerk's timestamps. Its docs and API answers use milliseconds since the epoch; its SDK's fixtures (and
//! some of its webhook examples) use seconds. One rule reads both, for every timestamp field alike.

use serde::{Deserialize, Deserializer};

/// Values under 10^12 are seconds: 10^12 ms is 2001-09-09, before Clerk existed, and 10^12 s is far beyond
/// any date the store accepts. Saturates, so an absurd value stays absurd (and is refused or stored as NULL by
/// whoever checks the range) instead of wrapping into a plausible one.
pub fn clerk_ms(ts: i64) -> i64 {
    if ts < 1_000_000_000_000 {
        ts.saturating_mul(1000)
    } else {
        ts
    }
}

/// `#[serde(deserialize_with)]` for a required timestamp: milliseconds whatever unit Clerk sent.
pub(super) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    i64::deserialize(d).map(clerk_ms)
}

/// `#[serde(default, deserialize_with)]` for an optional (or null) timestamp.
pub(super) fn millis_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<i64>::deserialize(d).map(|ts| ts.map(clerk_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_or_millis() {
        assert_eq!(clerk_ms(1_611_948_436), 1_611_948_436_000);
        assert_eq!(clerk_ms(1_700_000_000_123), 1_700_000_000_123);
        assert_eq!(clerk_ms(999_999_999_999), 999_999_999_999_000);
        assert_eq!(clerk_ms(1_000_000_000_000), 1_000_000_000_000);
        assert_eq!(clerk_ms(0), 0);
        assert_eq!(clerk_ms(-1), -1000);
        assert_eq!(clerk_ms(i64::MIN), i64::MIN);
        assert_eq!(clerk_ms(i64::MAX), i64::MAX);
    }

    #[test]
    fn fields_read_either_unit() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "millis")]
            at: i64,
            #[serde(default, deserialize_with = "millis_opt")]
            maybe: Option<i64>,
        }
        let t: T = serde_json::from_str(r#"{"at": 1611948436, "maybe": 1611948436000}"#).expect("valid");
        assert_eq!((t.at, t.maybe), (1_611_948_436_000, Some(1_611_948_436_000)));
        let t: T = serde_json::from_str(r#"{"at": 1611948436000, "maybe": null}"#).expect("valid");
        assert_eq!((t.at, t.maybe), (1_611_948_436_000, None));
        let t: T = serde_json::from_str(r#"{"at": 1611948436}"#).expect("an absent optional is None");
        assert_eq!(t.maybe, None);
        assert!(serde_json::from_str::<T>(r#"{"at": "1611948436"}"#).is_err());
    }
}
