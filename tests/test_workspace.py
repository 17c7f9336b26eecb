"""Workspace creation, migrations (up from an older schema, refusal of a newer one), read-only SQL."""
from __future__ import annotations

import duckdb
import pytest

from lessdb import Workspace
from lessdb.errors import LessdbError, WorkspaceError
from lessdb.storage.duck import Migration, bundled_migrations
from lessdb.storage.user_sql import run_readonly_sql

from conftest import run_cli


def test_init_creates_lance_and_duckdb_with_all_migrations(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    assert (tmp_path / "ws" / "lessdb.duckdb").exists()
    assert "candidates" in ws.lance.table_names()
    applied = [v for v, _, _ in ws.duck.applied_migrations()]
    assert applied == [m.version for m in bundled_migrations()]
    assert applied == sorted(applied) and applied[0] == 1


def test_open_missing_workspace_is_a_clear_error(tmp_path):
    with pytest.raises(WorkspaceError, match="lessdb init"):
        Workspace.open(tmp_path / "nowhere")


def test_older_workspace_is_migrated_on_open(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    ws = Workspace(root)
    first_only = bundled_migrations()[:1]
    ws.duck.migrate(first_only, placeholders=ws.lance_placeholders())
    assert [v for v, _, _ in ws.duck.applied_migrations()] == [1]
    with duckdb.connect(str(root / "lessdb.duckdb")) as con:
        assert not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name='selections'").fetchone()[0]
    reopened = Workspace.open(root)
    assert [v for v, _, _ in reopened.duck.applied_migrations()] == [m.version for m in bundled_migrations()]
    with duckdb.connect(str(root / "lessdb.duckdb")) as con:
        assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name='selections'").fetchone()[0]


def test_newer_workspace_is_refused(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    future = Migration(9999, "from_the_future", "CREATE TABLE future_thing (x INTEGER);")
    ws.duck.migrate(bundled_migrations() + [future], placeholders=ws.lance_placeholders())
    with pytest.raises(WorkspaceError, match="newer than this lessdb"):
        Workspace.open(tmp_path / "ws")
    proc = run_cli("sql", "SELECT 1", workspace=tmp_path / "ws", check=False)
    assert proc.returncode != 0 and "newer than this lessdb" in proc.stderr


def test_edited_applied_migration_is_refused(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    edited = bundled_migrations()
    edited[0] = Migration(edited[0].version, edited[0].name, edited[0].sql + "\n-- edited\n")
    with pytest.raises(WorkspaceError, match="different file"):
        ws.duck.migrate(edited)


def test_failing_migration_rolls_back_entirely(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    bad = Migration(9000, "half_broken", "CREATE TABLE half_made (x INTEGER); SELECT * FROM no_such_table;")
    with pytest.raises(duckdb.Error):
        ws.duck.migrate(bundled_migrations() + [bad])
    with duckdb.connect(str(ws.duck.path)) as con:
        assert not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name='half_made'").fetchone()[0]
        assert 9000 not in [r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()]


def test_user_sql_is_read_only_and_confined_to_the_workspace(workspace, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    with pytest.raises(LessdbError, match="disabled by configuration"):
        run_readonly_sql(workspace, f"SELECT * FROM read_csv('{secret}')")
    with pytest.raises(LessdbError):
        run_readonly_sql(workspace, "CREATE TABLE sneaky (x INTEGER)")
    with pytest.raises(LessdbError):
        run_readonly_sql(workspace, "SET enable_external_access = true")
    assert run_readonly_sql(workspace, "SELECT count(*) AS n FROM candidates").rows == [(0,)]


def test_cli_init_and_sql_json_through_a_real_subprocess(tmp_path):
    import json
    ws = tmp_path / "ws"
    run_cli("init", workspace=ws)
    out = run_cli("sql", "SELECT version, name FROM schema_migrations ORDER BY version", "--json", workspace=ws)
    rows = json.loads(out.stdout)
    assert [r["version"] for r in rows] == [m.version for m in bundled_migrations()]
