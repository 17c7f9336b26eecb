-- Selections with full provenance, their members, exports, and the audit views analysts query.

CREATE TABLE selections (
    selection_id     VARCHAR PRIMARY KEY,
    name             VARCHAR,
    task             VARCHAR NOT NULL,
    task_hash        VARCHAR NOT NULL,
    method           VARCHAR NOT NULL,     -- less | random | bm25 | dsir | rds | rds+ | sgd | sign | unnormalized
    params           JSON NOT NULL,        -- method parameters (val aggregation, bias correction, ...)
    run_id           VARCHAR,
    feature_set_id   VARCHAR,
    checkpoints      JSON,                 -- [epoch, ...]
    weights          JSON,                 -- [eta-bar per checkpoint, ...]
    sketch           JSON,                 -- {kind, seed, dim, dtype, n_params}
    table_versions   JSON NOT NULL,        -- {lance table: version read}
    sql_filter       VARCHAR,
    k                BIGINT NOT NULL,
    percentage       DOUBLE,
    seed             BIGINT NOT NULL,
    n_scored         BIGINT NOT NULL,      -- candidates that passed the filter and got a score
    n_unscorable     BIGINT NOT NULL DEFAULT 0,
    replay_of        VARCHAR,
    lessdb_version   VARCHAR NOT NULL,
    created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE selection_members (
    selection_id   VARCHAR NOT NULL,
    rank           BIGINT NOT NULL,      -- 1-based
    candidate_id   VARCHAR NOT NULL,
    pool           VARCHAR NOT NULL,
    score          DOUBLE NOT NULL,
    best_subtask   VARCHAR,
    PRIMARY KEY (selection_id, rank)
);

CREATE TABLE exports (
    selection_id  VARCHAR NOT NULL,
    path          VARCHAR NOT NULL,
    format        VARCHAR NOT NULL,
    n_rows        BIGINT NOT NULL,
    sha256        VARCHAR NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One row per selected example with its score and the candidate's metadata and text.
CREATE VIEW selection_audit AS
SELECT s.selection_id, s.name AS selection_name, s.task, s.method, m.rank, m.score, m.best_subtask,
       c.id AS candidate_id, c.pool, c.source_dataset, c.source_id, c.n_turns,
       c.prompt_chars, c.completion_chars, c.total_chars, c.messages
FROM selection_members m
JOIN selections s USING (selection_id)
JOIN candidates c ON c.id = m.candidate_id AND c.pool = m.pool;

-- Source-dataset mix of each selection.
CREATE VIEW selection_sources AS
SELECT selection_id, selection_name, task, method, source_dataset,
       count(*) AS n, avg(completion_chars) AS mean_completion_chars
FROM selection_audit
GROUP BY ALL;
