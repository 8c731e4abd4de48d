-- Requests the daemon refused without writing anything for them: a webhook whose signature did not verify comes
-- from someone who does not hold the secret, so it must not cost a database write. The daemon counts them in
-- memory and adds the count here at most once a minute per process, under the minute of that write (replicas
-- add to the same row). Rows older than three days are deleted whenever counts are added. `clerk-sync doctor`
-- reads the last hour; a refused `reconcile.prune` is recorded here too.
CREATE TABLE clerk_sync_refusals (
    minute timestamptz NOT NULL,
    reason text NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (minute, reason)
);
