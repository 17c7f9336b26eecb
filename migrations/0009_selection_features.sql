-- Selection features (issue 15): several targets in one selection, token budgets, near-duplicate skips.

-- One row per member of every selection recorded from now on: the target task that claimed it (a single-task
-- selection: that task), its score for that target, and the tokens it spent of a --max-tokens budget.
CREATE TABLE selection_member_targets (
    selection_id   VARCHAR NOT NULL,
    rank           BIGINT NOT NULL,
    candidate_id   VARCHAR NOT NULL,
    target         VARCHAR NOT NULL,
    target_score   DOUBLE NOT NULL,
    budget_tokens  BIGINT,              -- completion or total tokens (params.budget.budget_on); NULL: no budget
    PRIMARY KEY (selection_id, rank)
);

-- Candidates a selection passed over although their score would have taken them, and why.
CREATE TABLE selection_skips (
    selection_id   VARCHAR NOT NULL,
    seq            BIGINT NOT NULL,     -- order in which they were skipped
    candidate_id   VARCHAR NOT NULL,
    target         VARCHAR,             -- whose turn it was
    score          DOUBLE,
    reason         VARCHAR NOT NULL,    -- near_duplicate_features | near_duplicate_text
    similar_to     VARCHAR,             -- the already selected member it resembles
    similarity     DOUBLE,              -- feature cosine or estimated Jaccard
    PRIMARY KEY (selection_id, seq)
);

-- Per selection and claiming target: members, scores, budget tokens. Selections recorded before this
-- migration have no target rows: their members count for the selection's task.
CREATE VIEW selection_targets AS
SELECT s.selection_id, s.name AS selection_name, s.method, s.task,
       coalesce(t.target, s.task) AS target,
       count(*) AS n,
       avg(coalesce(t.target_score, m.score)) AS mean_score,
       min(coalesce(t.target_score, m.score)) AS min_score,
       sum(t.budget_tokens) AS budget_tokens,
       min(m.rank) AS target_order,
       s.replay_of
FROM selection_members m
JOIN selections s USING (selection_id)
LEFT JOIN selection_member_targets t ON t.selection_id = m.selection_id AND t.rank = m.rank
GROUP BY ALL;

-- Explanations (`lessdb explain`, `lessdb report`): each explained member's score split into per-checkpoint
-- parts eta-bar_i x cosine for every subtask (their sum over checkpoints is the subtask's influence; the
-- member's score is its best subtask's), and the validation examples that contributed most to each subtask.
CREATE TABLE selection_explanations (
    selection_id   VARCHAR NOT NULL,
    rank           BIGINT NOT NULL,
    candidate_id   VARCHAR NOT NULL,
    subtask        VARCHAR NOT NULL,
    epoch          INTEGER NOT NULL,
    weight         DOUBLE NOT NULL,     -- eta-bar of the checkpoint
    cosine         DOUBLE NOT NULL,
    part           DOUBLE NOT NULL,     -- weight x cosine
    PRIMARY KEY (selection_id, rank, subtask, epoch)
);

CREATE TABLE selection_explanation_examples (
    selection_id   VARCHAR NOT NULL,
    rank           BIGINT NOT NULL,
    subtask        VARCHAR NOT NULL,
    position       INTEGER NOT NULL,    -- 1 = largest contribution
    example_key    VARCHAR NOT NULL,    -- the validation feature's key (content hash [+ window])
    example        VARCHAR,             -- the task's example id
    contribution   DOUBLE NOT NULL,     -- its share of the subtask's influence (they sum to it)
    PRIMARY KEY (selection_id, rank, subtask, position)
);

-- One row per explained member and subtask: influence and its per-checkpoint parts, best subtask first.
CREATE VIEW selection_explain AS
SELECT e.selection_id, s.name AS selection_name, s.method, e.rank, e.candidate_id, m.score, e.subtask,
       sum(e.part) AS influence,
       list(struct_pack(epoch := e.epoch, weight := e.weight, cosine := e.cosine, part := e.part)
            ORDER BY e.epoch) AS checkpoints,
       e.subtask = m.best_subtask AS is_best_subtask
FROM selection_explanations e
JOIN selections s USING (selection_id)
JOIN selection_members m ON m.selection_id = e.selection_id AND m.rank = e.rank
GROUP BY ALL;

-- Token lengths of every selection's members, counted with its run's tokenizer at the run's window (a budget
-- selection: the tokenizer and window its budget used), for comparing what methods pick in tokens (the paper's
-- Table 12) at the same k or under the same --max-tokens. NULL where a candidate was never counted (warmup
-- counts the pool it saw; a --max-tokens selection counts the candidates it considers).
CREATE VIEW selection_member_tokens AS
SELECT m.selection_id, s.name AS selection_name, s.task, s.method, m.rank, m.candidate_id,
       CAST(json_extract(s.params, '$.budget.max_tokens') AS BIGINT) AS max_tokens,
       json_extract_string(s.params, '$.budget.budget_on') AS budget_on,
       t.prompt_tokens, t.completion_tokens, t.total_tokens, s.replay_of
FROM selection_members m
JOIN selections s USING (selection_id)
LEFT JOIN runs r ON r.run_id = s.run_id
LEFT JOIN token_counts t ON t.candidate_id = m.candidate_id
  AND t.tokenizer_id = coalesce(json_extract_string(s.params, '$.budget.tokenizer_id'),
                                json_extract_string(r.config, '$.tokenizer_id'))
  AND t.max_seq_length = CAST(coalesce(json_extract(s.params, '$.budget.max_seq_length'),
                                       json_extract(r.config, '$.warmup.training.max_seq_length'),
                                       json_extract(r.config, '$.training.max_seq_length'),
                                       json_extract(r.config, '$.max_seq_length')) AS INTEGER);
