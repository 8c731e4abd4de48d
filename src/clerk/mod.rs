//! Clerk: its data model, its Backend API, and verification of its session tokens.

mod client;
mod jwt;
mod list;
mod organization;
pub mod pin;
mod timestamp;
mod user;

pub use client::{ClerkClient, ClerkError, ClerkInstance};
pub use jwt::{AuthError, JwtVerifier, SessionClaims};
pub use list::{Cursor, BY_ID, PAGE_SIZE};
pub use organization::{ClerkMembership, ClerkOrganization, PublicUserData};
pub use timestamp::clerk_ms;
pub use user::{is_membership_id, is_organization_id, is_user_id, storable_ms, strip_nul, ClerkUser, EmailAddress};

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod jwt_tests;
