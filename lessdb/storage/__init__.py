"""Storage layer: the only place that speaks SQL (besides `migrations/`) or touches LanceDB directly.

- `duck`: DuckDB connections (short-lived, lock-retrying) and the migration runner.
- `lance_tables`: LanceDB tables (candidates, features), their Arrow schemas and versioned reads/writes.
- `meta_*`: one module of metadata queries per pipeline stage.
"""
