-- Postgres gets a function that applies the common batch in one round trip; SQLite, in process, has no round
-- trips to save. This migration only keeps the versions of the two backends in step.
SELECT 1;
