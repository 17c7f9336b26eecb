-- A replay (`lessdb select --replay`) is recorded as its own selection with the same members as the original.
-- Analysts grouping the audit views by method counted those members twice: selection_audit now carries
-- replay_of so a query can keep or drop replays, and selection_sources (a per-selection source mix) leaves
-- replays out, since each one repeats the mix of the selection it replays.

CREATE OR REPLACE VIEW selection_audit AS
SELECT s.selection_id, s.name AS selection_name, s.task, s.method, m.rank, m.score, m.best_subtask,
       c.id AS candidate_id, c.pool, c.source_dataset, c.source_id, c.n_turns,
       c.prompt_chars, c.completion_chars, c.total_chars, c.messages, s.replay_of
FROM selection_members m
JOIN selections s USING (selection_id)
JOIN candidates c ON c.id = m.candidate_id AND c.pool = m.pool;

CREATE OR REPLACE VIEW selection_sources AS
SELECT selection_id, selection_name, task, method, source_dataset,
       count(*) AS n, avg(completion_chars) AS mean_completion_chars
FROM selection_audit
WHERE replay_of IS NULL
GROUP BY ALL;
