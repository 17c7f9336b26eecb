-- Gradient feature sets (one LanceDB table each: features_<feature_set_id>) and the jobs that fill them.

CREATE TABLE feature_sets (
    feature_set_id   VARCHAR PRIMARY KEY,
    run_id           VARCHAR NOT NULL,
    lance_table      VARCHAR NOT NULL,
    grad_kind        VARCHAR NOT NULL,    -- adam | sgd | sign (candidates); validation always sgd
    bias_correction  BOOLEAN NOT NULL,    -- paper (true) or reference implementation (false)
    sketch_kind      VARCHAR NOT NULL,    -- e.g. countsketch | dense-rademacher
    sketch_seed      BIGINT NOT NULL,
    n_params         BIGINT NOT NULL,     -- P: length of the flattened LoRA gradient
    dim              INTEGER NOT NULL,    -- d
    dtype            VARCHAR NOT NULL,    -- stored vector dtype
    max_seq_length   INTEGER NOT NULL,
    module_order     JSON NOT NULL,       -- parameter names in flattening order
    model_sha256     VARCHAR NOT NULL,
    params           JSON,                -- anything else that defines the features
    lessdb_version   VARCHAR NOT NULL,
    created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE feature_jobs (
    job_id           VARCHAR PRIMARY KEY, -- <feature_set_id>/<epoch>/<shard>of<n>
    feature_set_id   VARCHAR NOT NULL,
    epoch            INTEGER NOT NULL,
    shard_index      INTEGER NOT NULL,
    shard_count      INTEGER NOT NULL,
    status           VARCHAR NOT NULL,    -- running | complete
    n_total          BIGINT,
    n_done           BIGINT NOT NULL DEFAULT 0,
    n_excluded       BIGINT NOT NULL DEFAULT 0,
    seconds          DOUBLE NOT NULL DEFAULT 0,
    bytes_written    BIGINT NOT NULL DEFAULT 0,
    lance_version    BIGINT,
    started_at       TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE feature_exclusions (
    feature_set_id   VARCHAR NOT NULL,
    example_id       VARCHAR NOT NULL,
    reason           VARCHAR NOT NULL,
    PRIMARY KEY (feature_set_id, example_id)
);
