//! Clerk's data model, as its webhooks and Backend API send it.

mod user;

pub use user::{is_user_id, ClerkUser, EmailAddress};
