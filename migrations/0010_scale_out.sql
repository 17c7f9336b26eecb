-- Scale-out featurization (lessdb.scale): which engine ran a job, the driver's lease on the job row, and one
-- row per Lance commit a distributed driver made (its transaction uuid is the commit's idempotency key).

-- The lease: one driver per (feature set, role, checkpoint) unless both are disjoint --shard jobs of the same n.
-- `lease_owner` is "<host>:<pid>:<process start ticks>" of the driver; null once the job finished or was released.
-- A lease is live while its owner process exists (same host) or until lease_expires_at (other hosts).
ALTER TABLE feature_jobs ADD COLUMN engine VARCHAR;               -- local | ray (the latest run of the job)
ALTER TABLE feature_jobs ADD COLUMN lease_owner VARCHAR;
ALTER TABLE feature_jobs ADD COLUMN lease_expires_at TIMESTAMP;

CREATE TABLE feature_commits (
    txn_uuid       VARCHAR PRIMARY KEY,   -- lance.Transaction uuid (also in the Lance transaction file)
    job_id         VARCHAR NOT NULL,
    feature_set_id VARCHAR NOT NULL,
    role           VARCHAR NOT NULL,
    epoch          INTEGER NOT NULL,
    engine         VARCHAR NOT NULL,      -- ray
    read_version   BIGINT NOT NULL,       -- table version the commit was built on
    lance_version  BIGINT NOT NULL,       -- version it produced
    units          VARCHAR NOT NULL,      -- comma-separated work unit ids
    n_rows         BIGINT NOT NULL,
    n_excluded     BIGINT NOT NULL,
    n_fragments    INTEGER NOT NULL,
    recovered      BOOLEAN NOT NULL DEFAULT false,  -- recorded from the Lance transaction after a driver crash
    committed_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);
