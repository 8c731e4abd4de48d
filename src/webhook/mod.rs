//! Clerk webhooks: Svix signature verification and event parsing.
//!
//! The types form a typestate: raw bytes become a [`VerifiedBody`] only through [`Verifier::verify`], and only
//! a `VerifiedBody` can be parsed into a [`VerifiedEvent`] — the one type the actors accept from this path.

mod event;
pub mod sample;
mod verify;

pub use event::{EventKind, InvalidEvent, VerifiedEvent};
pub use verify::{VerifiedBody, Verifier, VerifyError};
