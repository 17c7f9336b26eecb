-- Folded low-dimensional copies of feature sets (issue 14 item 6, `select --prefilter`): a CountSketch at d folds
-- exactly into one at d' = d/m (bucket b -> b mod d'), so a feature set keeps, beside its full vectors, a sibling
-- Lance table `features_<feature_set_id>_fold<d'>` with every row folded. One row per (feature set, d'): the
-- folded table's version after the last completed sync and the full table's version it covers. Rows a killed
-- sync appended after its last record are valid folds too: the next sync keeps them and appends only the rest.
CREATE TABLE folded_copies (
    feature_set_id  VARCHAR NOT NULL,
    low_dim         INTEGER NOT NULL,
    lance_table     VARCHAR NOT NULL,
    lance_version   BIGINT NOT NULL,     -- the folded table's version once this sync finished
    source_version  BIGINT NOT NULL,     -- the full feature table's version it holds every row of
    n_rows          BIGINT NOT NULL,
    updated_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (feature_set_id, low_dim)
);
