-- Gradient feature sets (one LanceDB table each: features_<feature_set_id>) and the jobs that fill them.
-- A feature set is everything that defines its vectors except the checkpoint (epoch is a column of the
-- Lance table), so vectors of different sketches, dims, dtypes or gradient kinds can never mix.

CREATE TABLE feature_sets (
    feature_set_id   VARCHAR PRIMARY KEY, -- 16 hex of sha256 over `params`
    run_id           VARCHAR NOT NULL,
    lance_table      VARCHAR NOT NULL,
    grad_kind        VARCHAR NOT NULL,    -- adam | sgd | sign (candidates); validation rows always sgd
    bias_correction  BOOLEAN NOT NULL,    -- paper (true) or reference implementation (false); adam only
    sketch_kind      VARCHAR NOT NULL,    -- countsketch | sparse-sign | dense-rademacher
    sketch_seed      BIGINT NOT NULL,
    sketch_nnz       INTEGER,             -- nonzeros per coordinate (countsketch 1, sparse-sign s)
    n_params         BIGINT NOT NULL,     -- P: length of the flattened LoRA gradient
    dim              INTEGER NOT NULL,    -- d
    dtype            VARCHAR NOT NULL,    -- stored vector dtype: float32 | float16
    compute_dtype    VARCHAR NOT NULL,    -- forward/backward precision: float32 | bfloat16
    max_seq_length   INTEGER NOT NULL,
    tokenizer_id     VARCHAR NOT NULL,
    module_order     JSON NOT NULL,       -- [[parameter name, shape], ...] in flattening order
    model_sha256     VARCHAR NOT NULL,
    params           JSON NOT NULL,       -- the full definition hashed into feature_set_id (sketch identity, ...)
    lessdb_version   VARCHAR NOT NULL,
    created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE feature_jobs (
    job_id           VARCHAR PRIMARY KEY, -- <feature_set_id>/<role>/<epoch>/<shard>of<n>
    feature_set_id   VARCHAR NOT NULL,
    role             VARCHAR NOT NULL,    -- candidate | validation
    epoch            INTEGER NOT NULL,
    shard_index      INTEGER NOT NULL,
    shard_count      INTEGER NOT NULL,
    where_sql        VARCHAR,             -- the --where filter of the latest run of this job
    candidates_version BIGINT,            -- candidates table version the job's example list came from
    adapter_sha256   VARCHAR,             -- the checkpoint the vectors came from
    optimizer_sha256 VARCHAR,
    optimizer_step   BIGINT,
    status           VARCHAR NOT NULL,    -- running | complete
    n_total          BIGINT,              -- examples in the shard (after the filter)
    n_done           BIGINT NOT NULL DEFAULT 0,   -- computed by this job (over all its runs)
    n_excluded       BIGINT NOT NULL DEFAULT 0,
    seconds          DOUBLE NOT NULL DEFAULT 0,
    bytes_written    BIGINT NOT NULL DEFAULT 0,
    lance_version    BIGINT,              -- feature table version after the job's latest write
    pid              INTEGER,
    started_at       TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE feature_exclusions (
    feature_set_id   VARCHAR NOT NULL,
    role             VARCHAR NOT NULL,
    epoch            INTEGER NOT NULL,
    example_id       VARCHAR NOT NULL,
    reason           VARCHAR NOT NULL,    -- e.g. no completion token after truncation; zero gradient
    PRIMARY KEY (feature_set_id, role, epoch, example_id)
);
