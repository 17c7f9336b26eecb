"""The package list in pyproject.toml is explicit (cli/ and migrations/ are mapped into lessdb), so a new
subpackage that is not listed works in an editable install and is silently missing from a wheel."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_lessdb_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lessdb").rglob("__init__.py")}
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    mapped = {name for name in listed if name not in found}
    assert mapped == set(config["package-dir"]), "listed packages must exist under lessdb/ or be mapped"
