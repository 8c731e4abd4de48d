//! Records as the API shows them, and the read-side questions the store answers.

use super::types::Source;

/// A JSON column as stored (`jsonb` on Postgres, JSON text on SQLite), passed to the API's JSON as it is.
#[derive(Clone, Debug, Default)]
pub struct JsonText(Option<Box<serde_json::value::RawValue>>);

// `From` gives sqlx's `try_from` attribute the infallible `TryFrom` it asks for.
impl From<Option<String>> for JsonText {
    fn from(text: Option<String>) -> Self {
        JsonText(text.map(|text| {
            // An adopted SQLite column may hold text that is not JSON: it is shown as a string rather than
            // failing every read of the row.
            serde_json::value::RawValue::from_string(text.clone()).unwrap_or_else(|_| {
                serde_json::value::to_raw_value(&text).unwrap_or_else(|_| Box::<serde_json::value::RawValue>::default())
            })
        }))
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_ref().map(|r| r.get()) == other.0.as_ref().map(|r| r.get())
    }
}

impl Eq for JsonText {}

impl serde::Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A user as the API returns it: every daemon-owned column but `data` (which holds `private_metadata`, and
/// `/v1/me` answers end users). Timestamps are RFC 3339 strings in UTC.
///
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = User)]
pub struct UserRow {
    pub id: String,
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub phone_number: Option<String>,
    pub external_id: Option<String>,
    #[sqlx(try_from = "Option<String>")]
    #[schema(value_type = Option<Value>)]
    pub public_metadata: JsonText,
    pub banned: Option<bool>,
    pub last_sign_in_at: Option<String>,
    pub clerk_created_at: Option<String>,
    #[schema(schema_with = created_via)]
    pub created_via: String,
    #[schema(schema_with = updated_via)]
    pub updated_via: Option<String>,
    pub clerk_updated_at: Option<i64>,
    pub deleted_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// An organization as the API returns it (without `data`, like a user).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Organization)]
pub struct OrganizationRow {
    pub id: String,
    pub clerk_id: String,
    pub name: Option<String>,
    pub slug: Option<String>,
    pub image_url: Option<String>,
    #[sqlx(try_from = "Option<String>")]
    #[schema(value_type = Option<Value>)]
    pub public_metadata: JsonText,
    pub members_count: Option<i64>,
    pub clerk_created_at: Option<String>,
    #[schema(schema_with = created_via)]
    pub created_via: String,
    #[schema(schema_with = updated_via)]
    pub updated_via: Option<String>,
    pub clerk_updated_at: Option<i64>,
    pub deleted_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// A membership as the API returns it (without `data`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = Membership)]
pub struct MembershipRow {
    pub id: String,
    pub clerk_id: String,
    pub organization_clerk_id: String,
    pub user_clerk_id: String,
    pub role: Option<String>,
    pub clerk_created_at: Option<String>,
    #[schema(schema_with = created_via)]
    pub created_via: String,
    #[schema(schema_with = updated_via)]
    pub updated_via: Option<String>,
    pub clerk_updated_at: Option<i64>,
    pub deleted_at: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// A stored record of any kind, serialized as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Row {
    User(UserRow),
    Organization(OrganizationRow),
    Membership(MembershipRow),
}

impl Row {
    pub fn deleted_at(&self) -> Option<&str> {
        match self {
            Row::User(r) => r.deleted_at.as_deref(),
            Row::Organization(r) => r.deleted_at.as_deref(),
            Row::Membership(r) => r.deleted_at.as_deref(),
        }
    }
}

/// What the database knows about one clerk id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(std::sync::Arc<Row>),
    /// Deleted in Clerk (soft-deleted row, or a tombstone without a row): never re-created.
    Tombstoned,
    /// Tombstoned by a prune: the deletion was inferred from Clerk's list, so Clerk is asked again before the
    /// record is called gone (and a record Clerk has is brought back).
    Pruned,
    Missing,
}

/// Which memberships to list: those of an organization or those of a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembersOf<'a> {
    Organization(&'a str),
    User(&'a str),
}

/// Where a page of memberships starts: after this (Clerk `created_at` as stored, clerk id), newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipCursor {
    pub created_at: String,
    pub clerk_id: String,
}

/// A string that takes one of `values` (and `null` with `nullable`), for the OpenAPI document: the columns below
/// hold only what the daemon writes (the migrations' CHECK constraints), so clients can switch on them.
pub fn string_enum(values: &[&str], nullable: bool) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    let mut values: Vec<serde_json::Value> = values.iter().map(|v| (*v).into()).collect();
    let schema_type = if nullable {
        values.push(serde_json::Value::Null);
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(values))
        .build()
}

/// The paths that write rows ([`Source`]): `webhook`, `fallback`, `backfill`.
fn sources() -> Vec<&'static str> {
    [Source::Webhook, Source::Fallback, Source::Backfill]
        .map(Source::as_str)
        .to_vec()
}

/// `created_via`: a source, or `adopted` for a row that was in the application's table before the daemon.
fn created_via() -> utoipa::openapi::Object {
    let mut values = sources();
    values.push("adopted");
    string_enum(&values, false)
}

/// `updated_via`: the source of the last change, `null` before any.
fn updated_via() -> utoipa::openapi::Object {
    string_enum(&sources(), true)
}

/// `via` of a change: the source that committed it.
pub(super) fn change_via() -> utoipa::openapi::Object {
    string_enum(&sources(), false)
}
