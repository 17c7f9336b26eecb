-- Evaluations of trained (or base) models on a target task: one row per evaluation with the exact test
-- items used (hash), its metric values (overall and per subtask), and the per-item predictions for audit.

CREATE TABLE evals (
    eval_id         VARCHAR PRIMARY KEY,
    run_id          VARCHAR,              -- NULL: a base model evaluated without LoRA (--model)
    epoch           INTEGER,              -- checkpoint evaluated
    selection_id    VARCHAR,              -- the run's selection, if it has one
    method          VARCHAR NOT NULL,     -- less | random | bm25 | ... | full | base (resolved at eval time)
    model_name      VARCHAR NOT NULL,
    model_sha256    VARCHAR,
    is_transfer     BOOLEAN NOT NULL DEFAULT false,
    seed            BIGINT,               -- the run's training seed (NULL for a base model)
    task            VARCHAR NOT NULL,
    task_hash       VARCHAR,              -- validation examples scored by target_loss
    split           VARCHAR NOT NULL,
    items_source    VARCHAR,              -- where the test items were read
    items_sha256    VARCHAR,              -- hash of the test items used and their demonstrations
    n_items         BIGINT,
    item_limit      BIGINT,               -- --limit (per subtask), NULL: all
    sample_seed     BIGINT,               -- seed of the --limit sample
    params          JSON NOT NULL,        -- prompt format, shots, max_new_tokens, batch size, ...
    device          VARCHAR,
    seconds         DOUBLE,
    lessdb_version  VARCHAR NOT NULL,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE eval_results (
    eval_id   VARCHAR NOT NULL,
    metric    VARCHAR NOT NULL,           -- exact_match | accuracy | f1 | target_loss (percent; loss in nats)
    subtask   VARCHAR NOT NULL,           -- '' for the task-level aggregate
    value     DOUBLE NOT NULL,
    n_items   BIGINT NOT NULL,
    PRIMARY KEY (eval_id, metric, subtask)
);

CREATE TABLE eval_items (
    eval_id     VARCHAR NOT NULL,
    position    BIGINT NOT NULL,
    subtask     VARCHAR NOT NULL,
    item_id     VARCHAR NOT NULL,
    prediction  VARCHAR,
    output      VARCHAR,                  -- raw generation (BBH, TyDiQA)
    answers     JSON NOT NULL,
    score       DOUBLE NOT NULL,          -- 1/0 (exact match, accuracy) or F1 in [0, 1]
    PRIMARY KEY (eval_id, position)
);

-- Task-level results with what was evaluated, for plain-SQL comparisons.
CREATE VIEW eval_summary AS
SELECT e.eval_id, e.task, e.method, e.model_name, e.is_transfer, e.run_id, e.epoch, e.selection_id, e.seed,
       e.items_sha256, e.n_items, e.item_limit, r.metric, r.value, e.created_at
FROM evals e
JOIN eval_results r USING (eval_id)
WHERE r.subtask = '';
