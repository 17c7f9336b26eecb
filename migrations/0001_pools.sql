-- Pools of candidate instructions and the ingests that filled them.
-- Candidate rows themselves live in the LanceDB table `candidates`; DuckDB sees it as the relation
-- `candidates` (registered per connection by lessdb). No FOREIGN KEY constraints: DuckDB's block
-- ALTER on referenced tables and have no cascade; lessdb checks references in code.

CREATE SEQUENCE ingest_id_seq START 1;

CREATE TABLE pools (
    name        VARCHAR PRIMARY KEY,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE ingests (
    ingest_id          BIGINT PRIMARY KEY DEFAULT nextval('ingest_id_seq'),
    pool               VARCHAR NOT NULL,
    source             VARCHAR NOT NULL,   -- file path as given, or 'builtin:<name>'
    file_name          VARCHAR,
    file_size          BIGINT,
    file_sha256        VARCHAR,
    format             VARCHAR NOT NULL,   -- messages | sharegpt | alpaca | prompt-completion
    n_records          BIGINT NOT NULL,    -- records read (valid + invalid)
    n_added            BIGINT NOT NULL,    -- new rows appended to `candidates`
    n_invalid          BIGINT NOT NULL,    -- skipped with --skip-invalid
    n_dup_within       BIGINT NOT NULL,    -- same content seen earlier in this ingest
    n_dup_in_pool      BIGINT NOT NULL,    -- already in this pool from an earlier ingest
    n_dup_other_pools  BIGINT NOT NULL,    -- added here, but also present in another pool
    n_truncated_tail   BIGINT NOT NULL DEFAULT 0,  -- bytes of an unterminated final record (builtin sharegpt)
    lance_table        VARCHAR NOT NULL,
    lance_version      BIGINT,             -- the version of `candidates` this ingest produced (NULL: nothing new)
    lessdb_version     VARCHAR NOT NULL,
    created_at         TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE ingest_skipped (
    ingest_id  BIGINT NOT NULL,
    file       VARCHAR NOT NULL,
    line       BIGINT,
    field      VARCHAR,
    reason     VARCHAR NOT NULL
);

CREATE VIEW pool_summary AS
SELECT c.pool,
       count(*)                         AS n_candidates,
       count(DISTINCT c.source_dataset) AS n_sources,
       avg(c.total_chars)               AS mean_chars,
       avg(c.n_turns)                   AS mean_turns
FROM candidates c
GROUP BY c.pool;
