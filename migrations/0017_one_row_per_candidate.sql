-- One row per candidate in every view that joins `candidates` (issue 23). Older lessdb versions could store a
-- candidate twice (an ingest that planned by line number kept every record of a one-line JSON array), and the
-- views then counted such a member twice (k = 10 shown as 13 members). Each view now keeps, per (pool, id),
-- the earliest row: lowest ingest_id, ties by source (the same content hash means the same conversation).
-- `lessdb verify --repair` removes the extra rows themselves; these views are right with or without it.

CREATE OR REPLACE VIEW selection_audit AS
SELECT s.selection_id, s.name AS selection_name, s.task, s.method, m.rank, m.score, m.best_subtask,
       c.id AS candidate_id, c.pool, c.source_dataset, c.source_id, c.n_turns,
       c.prompt_chars, c.completion_chars, c.total_chars, c.messages, s.replay_of
FROM selection_members m
JOIN selections s USING (selection_id)
JOIN candidates c ON c.id = m.candidate_id AND c.pool = m.pool
QUALIFY row_number() OVER (PARTITION BY m.selection_id, m.rank
                           ORDER BY c.ingest_id, c.source_dataset NULLS LAST, c.source_id NULLS LAST) = 1;

CREATE OR REPLACE VIEW selection_sources AS
SELECT selection_id, selection_name, task, method, source_dataset,
       count(*) AS n, avg(completion_chars) AS mean_completion_chars
FROM selection_audit
WHERE replay_of IS NULL
GROUP BY ALL;

CREATE OR REPLACE VIEW pool_summary AS
SELECT c.pool,
       count(*)                         AS n_candidates,
       count(DISTINCT c.source_dataset) AS n_sources,
       avg(c.total_chars)               AS mean_chars,
       avg(c.n_turns)                   AS mean_turns
FROM (SELECT DISTINCT ON (pool, id) pool, id, source_dataset, total_chars, n_turns
      FROM candidates
      ORDER BY pool, id, ingest_id, source_dataset NULLS LAST) c
GROUP BY c.pool;
