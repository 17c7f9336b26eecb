-- Models, training runs (warmup and train), their checkpoints with the mean learning rate per epoch,
-- and per-tokenizer token counts of candidates (so SQL filters can use them).

CREATE TABLE models (
    model_sha256  VARCHAR PRIMARY KEY,   -- sha256 of the safetensors weights lessdb loads
    name          VARCHAR NOT NULL,      -- e.g. smollm2-135m, or a directory path
    source        VARCHAR NOT NULL,      -- e.g. gguf:<sha256 of the GGUF file>, dir:<path>, config:tiny
    path          VARCHAR NOT NULL,      -- where the safetensors copy lives
    n_params      BIGINT,
    config        JSON,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE runs (
    run_id          VARCHAR PRIMARY KEY,
    kind            VARCHAR NOT NULL,     -- warmup | train
    pool            VARCHAR,
    selection_id    VARCHAR,              -- train runs: the selection trained on (NULL: full/random)
    model_name      VARCHAR NOT NULL,
    model_sha256    VARCHAR NOT NULL,
    is_transfer     BOOLEAN NOT NULL DEFAULT false,  -- LESS-T: trained model differs from the selection model
    seed            BIGINT NOT NULL,
    percentage      DOUBLE,
    n_examples      BIGINT,               -- examples trained on (after exclusions)
    n_excluded      BIGINT,               -- no completion token left after truncation
    config          JSON NOT NULL,        -- LoRA config, optimizer and schedule hyperparameters, preset
    device          VARCHAR,
    status          VARCHAR NOT NULL,     -- running | complete | failed
    lessdb_version  VARCHAR NOT NULL,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at     TIMESTAMP
);

CREATE TABLE run_examples (
    run_id        VARCHAR NOT NULL,
    candidate_id  VARCHAR NOT NULL,
    excluded      BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, candidate_id)
);

CREATE TABLE checkpoints (
    run_id             VARCHAR NOT NULL,
    epoch              INTEGER NOT NULL,   -- 1-based
    path               VARCHAR NOT NULL,
    adapter_sha256     VARCHAR NOT NULL,
    optimizer_sha256   VARCHAR NOT NULL,
    optimizer_step     BIGINT NOT NULL,    -- Adam's t at the end of the epoch
    mean_lr            DOUBLE NOT NULL,    -- eta-bar: mean scheduled lr over this epoch's optimizer steps
    train_loss         DOUBLE,
    created_at         TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, epoch)
);

CREATE TABLE token_counts (
    tokenizer_id       VARCHAR NOT NULL,   -- hash of the tokenizer + chat template
    max_seq_length     INTEGER NOT NULL,
    candidate_id       VARCHAR NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,   -- after truncation; 0 means excluded
    total_tokens       INTEGER NOT NULL,
    truncated          BOOLEAN NOT NULL,
    PRIMARY KEY (tokenizer_id, max_seq_length, candidate_id)
);
