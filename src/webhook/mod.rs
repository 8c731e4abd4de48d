//! Clerk webhooks: Svix signature verification and event parsing.
//!
//! The types form a typestate: raw bytes become a [`VerifiedBody`] only through [`Verifier::verify`], and only
//! a `VerifiedBody` can be parsed into a [`VerifiedEvent`] — the one type the actors accept from this path.

mod event;
pub mod sample;
mod verify;

pub use event::{
    is_sane_event_ms, Envelope, EventKind, InvalidEvent, VerifiedEvent, EARLIEST_EVENT_MS, LATEST_EVENT_MS,
};
pub use verify::{VerifiedBody, Verifier, VerifyError, MAX_SVIX_ID_LEN};
