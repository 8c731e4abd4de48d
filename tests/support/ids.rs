//! Ids, secrets and signatures shaped like Clerk's and Svix's, shared by the test binaries
//! (`#[path = "../support/ids.rs"] mod ids;`). Each binary uses a different subset.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as i64
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}

pub fn random_tail(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// `user_` + 27 alphanumerics, like `user_29w83sxmDNGwOuEthce5gg56FcC`.
pub fn user_id() -> String {
    format!("user_{}", random_tail(27))
}

/// A fresh Svix message id, like `msg_2Lh9KRb6pzqBjHMFl5wd3Ehq1Ab`.
pub fn svix_id() -> String {
    format!("msg_{}", random_tail(27))
}

/// `whsec_` + base64 of 24 random bytes, as Clerk shows it.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Signs `body` as Svix would: `v1,<base64>`.
pub fn sign(secret: &str, svix_id: &str, timestamp: i64, body: &[u8]) -> String {
    svix::webhooks::Webhook::new(secret)
        .expect("test secret does not decode")
        .sign(svix_id, timestamp, body)
        .expect("signing failed")
}
