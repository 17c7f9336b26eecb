-- Target tasks (validation sets for selection).
-- Task definitions are content-addressed: a task name points at its current version (content hash);
-- selections record the hash, so the exact validation examples stay reproducible after edits.
CREATE TABLE task_versions (
    task_hash    VARCHAR PRIMARY KEY,
    name         VARCHAR NOT NULL,
    origin       VARCHAR NOT NULL,  -- builtin | file | less-eval-dir
    source       VARCHAR,           -- file path or package the examples came from
    description  VARCHAR,
    n_subtasks   INTEGER NOT NULL,
    n_examples   INTEGER NOT NULL,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE task_examples (
    task_hash   VARCHAR NOT NULL,
    subtask     VARCHAR NOT NULL,
    position    INTEGER NOT NULL,    -- order within the subtask
    example_id  VARCHAR NOT NULL,    -- content hash of the conversation
    messages    JSON NOT NULL,       -- [{"role": ..., "content": ...}, ...]
    PRIMARY KEY (task_hash, subtask, position)
);

CREATE TABLE tasks (
    name        VARCHAR PRIMARY KEY,
    task_hash   VARCHAR NOT NULL,
    updated_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
