-- Ingest from Parquet, Arrow IPC, Hugging Face `save_to_disk` folders, compressed JSON and s3:// (issue 24):
-- what each ingested input was. One `ingests` row per input file (a folder or glob gives several).
-- No credentials are ever stored: `input_uri` is the object's address only.
ALTER TABLE ingests ADD COLUMN input_uri VARCHAR;      -- absolute local path or s3://bucket/key; NULL: a Python object
ALTER TABLE ingests ADD COLUMN input_format VARCHAR;   -- json | parquet | arrow | python (record shape: `format`)
ALTER TABLE ingests ADD COLUMN compression VARCHAR;    -- gzip | zstd | NULL
ALTER TABLE ingests ADD COLUMN input_columns VARCHAR;  -- JSON list of the input's top-level columns / record keys
ALTER TABLE ingests ADD COLUMN schema_hash VARCHAR;    -- sha256 (24 hex) of the input's schema: Arrow schema, or JSON keys
ALTER TABLE ingests ADD COLUMN column_map VARCHAR;     -- JSON {lessdb field: input column} given with --map
ALTER TABLE ingests ADD COLUMN minhash BOOLEAN;        -- --dedup-text signatures computed at ingest (else lazily)
-- a bad row of a Parquet/Arrow input is located by row (0-based, in the file) and row group / record batch
ALTER TABLE ingest_skipped ADD COLUMN row_group BIGINT;
ALTER TABLE ingest_skipped ADD COLUMN row_index BIGINT;
