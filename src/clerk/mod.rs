//! Clerk: its data model, its Backend API, and verification of its session tokens.

mod client;
mod jwt;
mod list;
mod user;

pub use client::{ClerkClient, ClerkError};
pub use jwt::{AuthError, JwtVerifier, SessionClaims};
pub use list::{Cursor, PAGE_SIZE};
pub use user::{is_user_id, strip_nul, ClerkUser, EmailAddress};

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod jwt_tests;
