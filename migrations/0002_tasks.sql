-- Target tasks (validation sets for selection).
-- Task definitions are content-addressed: a task version is identified by the hash of its ordered subtasks and
-- their examples' messages, and is never changed once written. A task name points at its current version;
-- selections record the hash, so the exact validation examples stay loadable after the name is re-pointed.
CREATE TABLE task_versions (
    task_hash    VARCHAR PRIMARY KEY,  -- sha256 (24 hex) of [[subtask, [messages, ...]], ...] in order
    n_subtasks   INTEGER NOT NULL,
    n_examples   INTEGER NOT NULL,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE task_examples (
    task_hash      VARCHAR NOT NULL,
    subtask_index  INTEGER NOT NULL,  -- order of the subtask within the task
    subtask        VARCHAR NOT NULL,
    position       INTEGER NOT NULL,  -- order within the subtask
    example_id     VARCHAR NOT NULL,  -- lessdb.conversation.content_hash(messages)
    messages       JSON NOT NULL,     -- [{"role": "user"|"assistant"|"system", "content": ...}, ...]
    PRIMARY KEY (task_hash, subtask_index, position)
);

CREATE TABLE tasks (
    name         VARCHAR PRIMARY KEY,
    task_hash    VARCHAR NOT NULL,
    origin       VARCHAR NOT NULL,    -- builtin | file | less-eval-dir
    source       VARCHAR,             -- file path, or the package the built-in examples were extracted from
    description  VARCHAR,
    updated_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Every (re)registration of a name, oldest first: which version a name pointed at, and when.
CREATE TABLE task_history (
    name           VARCHAR NOT NULL,
    task_hash      VARCHAR NOT NULL,
    origin         VARCHAR NOT NULL,
    source         VARCHAR,
    registered_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
