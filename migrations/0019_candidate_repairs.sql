-- Repairs of the `candidates` table (issue 23): `lessdb verify --repair` removes duplicate rows that older
-- versions wrote (one row per (pool, id) is kept: the earliest). A repair is one Lance delete, recorded here so
-- that readers move to the repaired version (storage/candidates.py reads the newest version an ingest or a
-- complete repair produced) and verify can account for the rows each ingest lost. It is crash-safe: the row is
-- inserted `started` before Lance is touched, and whoever finds a `started` repair (the next write command,
-- verify --repair) finishes it; the delete is idempotent.
CREATE TABLE candidate_repairs (
    repair_id       BIGINT PRIMARY KEY,
    kind            VARCHAR NOT NULL,     -- duplicates
    status          VARCHAR NOT NULL,     -- started | complete
    read_version    BIGINT NOT NULL,      -- the recorded candidates version it repaired
    lance_version   BIGINT,               -- the version after the repair (readers read it once complete)
    n_removed       BIGINT,
    started_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at     TIMESTAMP
);

CREATE TABLE candidate_repair_rows (
    repair_id   BIGINT NOT NULL,
    ingest_id   BIGINT NOT NULL,
    n_removed   BIGINT NOT NULL,          -- rows of this ingest the repair removed (its n_added stays as written)
    PRIMARY KEY (repair_id, ingest_id)
);
