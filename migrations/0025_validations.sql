-- Validations (issue 22): does training on a selection beat training on its comparisons, on held-out items?
-- `validations`: one row per `lessdb validate` (its settings, the held-out items, cost); `validation_results`:
-- one row per comparison and metric (the paired-bootstrap interval and its verdict); `validation_evals`: the
-- per-item scores of each trained run (or base model) on a set of held-out items, cached so an interrupted
-- validate resumes without re-scoring. `validation_verdicts` reads them with the selection's name, task and method.

CREATE TABLE validations (
    validation_id   VARCHAR PRIMARY KEY,  -- 16 hex of sha256 over (selection, settings, items): reruns resume it
    selection_id    VARCHAR NOT NULL,
    task            VARCHAR NOT NULL,
    config          JSON NOT NULL,        -- comparisons, seeds, budget, preset, training settings, model
    items_hash      VARCHAR NOT NULL,     -- prompt format + every held-out item
    items           JSON NOT NULL,        -- source, n_items, n_choice_items, dropped overlaps
    training_sets   JSON,                 -- comparison -> [{selection_id, run_id, seed, steps}], incl. the selection
    cost            JSON,                 -- train/eval seconds per training set, selection compute, ratio
    status          VARCHAR NOT NULL,     -- running | complete
    lessdb_version  VARCHAR NOT NULL,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at     TIMESTAMP
);

CREATE TABLE validation_results (
    validation_id   VARCHAR NOT NULL,
    comparison      VARCHAR NOT NULL,     -- random | bm25 | rds+ | hybrid | full | base
    metric          VARCHAR NOT NULL,     -- answer_loss (nats, lower better) | choice_accuracy (higher better)
    n_items         INTEGER NOT NULL,
    n_runs          INTEGER NOT NULL,     -- runs of the selection
    n_comparison_runs INTEGER NOT NULL,
    selection_mean  DOUBLE NOT NULL,
    comparison_mean DOUBLE NOT NULL,
    improvement     DOUBLE NOT NULL,      -- positive: the selection is better
    low             DOUBLE NOT NULL,      -- paired bootstrap interval of the improvement
    high            DOUBLE NOT NULL,
    level           DOUBLE NOT NULL,
    n_boot          INTEGER NOT NULL,
    verdict         VARCHAR NOT NULL,     -- better | worse | indistinguishable
    line            VARCHAR NOT NULL,     -- the verdict in plain words
    PRIMARY KEY (validation_id, comparison, metric)
);

CREATE TABLE validation_evals (
    run_id          VARCHAR NOT NULL,     -- a train run, or 'base:<model sha256>'
    epoch           INTEGER NOT NULL,     -- the checkpoint scored (0 for a base model)
    items_hash      VARCHAR NOT NULL,
    n_items         INTEGER NOT NULL,
    answer_loss     DOUBLE,
    choice_accuracy DOUBLE,
    scores          JSON NOT NULL,        -- [[item id, answer loss, 1/0/null correct], ...] in item order
    device          VARCHAR,
    seconds         DOUBLE,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, epoch, items_hash)
);

CREATE VIEW validation_verdicts AS
SELECT v.validation_id, v.selection_id, s.name AS selection_name, v.task, s.method, r.comparison, r.metric,
       r.improvement, r.low, r.high, r.verdict, r.line, r.n_items, r.n_runs, r.n_comparison_runs,
       r.selection_mean, r.comparison_mean, v.items_hash,
       CAST(json_extract(v.config, '$.seeds') AS INTEGER) AS seeds,
       json_extract_string(v.config, '$.budget') AS budget, v.status, v.created_at
FROM validations v JOIN validation_results r USING (validation_id)
LEFT JOIN selections s USING (selection_id);
