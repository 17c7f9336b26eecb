-- A digest of each selection's members, recorded in the same transaction as the members (issue 23): a member
-- row changed afterwards (by hand, or by damage) no longer matches it, so `lessdb export` refuses to write a
-- set that is not what was selected and `lessdb verify` reports it. The digest is `member_digest` in
-- lessdb/storage/member_digest.py (sha256 over the selection id and every member's rank, candidate id, pool,
-- exact score and best subtask, in rank order). Selections recorded before this migration have no row ("no
-- digest") until one is computed for them (origin 'backfilled').
CREATE TABLE selection_digests (
    selection_id    VARCHAR PRIMARY KEY,
    members_sha256  VARCHAR NOT NULL,
    n_members       BIGINT NOT NULL,
    origin          VARCHAR NOT NULL,     -- recorded (at selection time) | backfilled (an older selection, later)
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
);
