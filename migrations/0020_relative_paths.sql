-- Stored paths become relative to the workspace root (issue 23: a copied or moved workspace must read only its
-- own files; they were stored absolute, so `cp -a WS WS2` made WS2 read WS's checkpoints). Readers join a
-- relative path to the root (lessdb/storage/paths.py). This rewrites what lessdb itself laid out, wherever the
-- workspace was when it was written (so a copy made before this migration is fixed too); any other absolute
-- path inside the current root is rewritten in Python right after (storage/paths.relativize_stored_paths).
UPDATE checkpoints SET path = 'checkpoints/' || run_id || '/epoch-' || epoch
WHERE ends_with(path, '/checkpoints/' || run_id || '/epoch-' || epoch);

UPDATE models SET path = 'models/' || regexp_extract(path, '[^/]+$')
WHERE starts_with(source, 'gguf:') AND regexp_matches(path, '/models/[^/]+$');

UPDATE exports SET path = 'exports/' || selection_id || '.' || format
WHERE ends_with(path, '/exports/' || selection_id || '.' || format);
