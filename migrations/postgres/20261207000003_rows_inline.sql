-- A synced row carries Clerk's whole object in `data` (about 2 KB for a typical user). Past 2 KB Postgres tries to
-- shrink the row by compressing its largest values with pglz, which was the largest single cost of a write (8 % of
-- the server's CPU under webhook load). Rows up to a page (8,160 bytes) now stay in the table as they are; larger
-- ones are still compressed and moved out of line as before. This sets a storage parameter only: existing rows,
-- columns and an adopted table's own columns are untouched.
ALTER TABLE users SET (toast_tuple_target = 8160);
ALTER TABLE organizations SET (toast_tuple_target = 8160);
ALTER TABLE organization_memberships SET (toast_tuple_target = 8160);
