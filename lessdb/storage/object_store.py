"""Where a workspace's Lance tables live: its own `lance/` folder (default) or an object store (`s3://…`).

The choice is the workspace's `tables.json` beside the DuckDB file: {"uri": "s3://bucket/prefix",
"storage_options": {non-secret options}}. The DuckDB catalogue, checkpoints and exports always stay local
(DuckDB is a single-writer local file; it cannot live on S3).

Credentials never enter that file, DuckDB, Lance transaction properties or job specs: Lance (and every Ray
worker, which inherits or is given its own environment) reads them from the standard `AWS_*` environment
variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT,
AWS_ALLOW_HTTP). `--storage-option KEY=VALUE` adds non-secret settings (endpoint, region, allow_http, …);
a secret-looking key is refused with a pointer to the environment variable instead.

The object store must support conditional PUT (If-None-Match: *): Lance commits through it, and a store that
ignores it lets concurrent commits overwrite each other (AWS S3, R2 and MinIO support it; moto 5.2.5 too).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LessdbError
from ..settings import SettingError

CONFIG_FILE = "tables.json"
REMOTE_SCHEMES = ("s3://", "s3a://", "gs://", "az://", "abfs://")
# substrings of option keys that hold secrets: these come from the environment only
SECRET_MARKERS = ("secret", "token", "password", "access_key", "key_id", "credential", "sas")


@dataclass(frozen=True)
class TablesLocation:
    """The Lance tables' base URI (a local path or s3://…) and the non-secret storage options."""
    uri: str
    storage_options: dict = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        return is_remote(self.uri)

    def table_uri(self, name: str) -> str:
        """The URI of one table, as LanceDB lays it out (`<base>/<name>.lance`)."""
        return f"{self.uri.rstrip('/')}/{name}.lance"

    def options(self) -> dict | None:
        """Options for lance/lancedb calls: the recorded ones (None where there are none, so the AWS_*
        environment alone decides)."""
        return dict(self.storage_options) or None

    def public(self) -> dict:
        return {"uri": self.uri, "storage_options": dict(self.storage_options)}


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def parse_storage_options(pairs) -> dict:
    """`KEY=VALUE` strings -> dict; refuses malformed pairs and secrets (they belong in AWS_* variables)."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingError(None, [("storage_option", f"{pair!r}: expected KEY=VALUE, e.g. "
                                                         "aws_endpoint=http://127.0.0.1:9000")])
        if is_secret_key(key):
            raise SettingError(None, [("storage_option", f"{key}: credentials are never stored in the workspace; "
                                                         "set them in the environment (AWS_ACCESS_KEY_ID, "
                                                         "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)")])
        out[key] = value
    return out


def is_secret_key(key: str) -> bool:
    low = key.lower()
    return any(m in low for m in SECRET_MARKERS)


def load_location(root: Path, default_dir: str) -> TablesLocation:
    """The workspace's tables location: tables.json if present, else `<root>/<default_dir>`."""
    path = Path(root) / CONFIG_FILE
    if not path.exists():
        return TablesLocation(str(Path(root) / default_dir))
    try:
        data = json.loads(path.read_text())
        uri, opts = data["uri"], data.get("storage_options") or {}
        if not isinstance(uri, str) or not isinstance(opts, dict):
            raise TypeError("uri must be a string and storage_options an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LessdbError(f"{path}: not a valid tables location ({exc}); expected "
                          '{"uri": "s3://bucket/prefix", "storage_options": {...}}') from None
    if not is_remote(uri) and not os.path.isabs(uri):   # a folder inside the workspace, stored relative
        uri = str(Path(root) / uri)
    bad = [k for k in opts if is_secret_key(k)]
    if bad:
        raise LessdbError(f"{path}: field 'storage_options' holds credentials ({', '.join(bad)}); remove them and "
                          "set AWS_* environment variables instead")
    return TablesLocation(uri, {str(k): str(v) for k, v in opts.items()})


# what an object store's error says, in words (its full text is a long debug dump of the Rust client)
_STORE_PROBLEMS = (("NoSuchBucket", "the bucket does not exist"),
                   ("The specified bucket does not exist", "the bucket does not exist"),
                   ("InvalidAccessKeyId", "the access key is not known there (AWS_ACCESS_KEY_ID)"),
                   ("SignatureDoesNotMatch", "the secret key does not match (AWS_SECRET_ACCESS_KEY)"),
                   ("AccessDenied", "access denied to these credentials"),
                   ("Connection refused", "nothing listens at the endpoint (connection refused)"),
                   ("dns error", "the endpoint's host name does not resolve"),
                   ("resolve region", "its region is unknown (set AWS_REGION)"),
                   ("timed out", "the endpoint did not answer in time"))


def check_reachable(location: TablesLocation) -> None:
    """An object-store location must be listable from here before a workspace is made on it; raise a
    LessdbError naming the bucket and what is wrong. Local folders: nothing to check."""
    if not location.remote:
        return
    import lancedb

    try:
        lancedb.connect(location.uri, storage_options=location.options()).list_tables()
    except Exception as exc:   # noqa: BLE001  (lancedb raises ValueError/OSError/RuntimeError for store errors)
        text = str(exc)
        why = next((words for marker, words in _STORE_PROBLEMS if marker.lower() in text.lower()),
                   text.splitlines()[0][:300] if text else type(exc).__name__)
        bucket = location.uri.split("://", 1)[1].split("/", 1)[0]
        raise LessdbError(f"--tables {location.uri}: cannot use bucket {bucket!r}: {why}. Check that the bucket "
                          "exists and that AWS_* credentials, AWS_REGION and the endpoint (AWS_ENDPOINT or "
                          "--storage-option aws_endpoint=…) are set in this environment; nothing was created") \
            from None


def save_location(root: Path, location: TablesLocation) -> None:
    """Write tables.json atomically (a kill leaves the old file or the new one)."""
    from .paths import stored_path

    path = Path(root) / CONFIG_FILE
    public = location.public()
    if not location.remote:   # relative when inside the workspace, so a moved workspace keeps its tables
        public["uri"] = stored_path(root, public["uri"])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(public, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def check_tables_uri(uri: str | None) -> None:
    """A local folder or an object store lessdb can write to; anything else with a scheme is refused (it would
    become a local folder named after the scheme)."""
    if uri is not None and "://" in uri and not is_remote(uri):
        raise SettingError(None, [("tables", f"{uri!r}: lessdb keeps tables in a local folder or on "
                                             f"{', '.join(s.rstrip(':/') for s in REMOTE_SCHEMES)} (an object store)")])


def configure(root: Path, default_dir: str, uri: str | None, options: dict) -> TablesLocation:
    """Set the tables location at `lessdb init` time. Changing it on a workspace that already has tables
    elsewhere is refused (the catalogue records their versions; they would silently vanish)."""
    current = load_location(root, default_dir)
    if uri is None and not options:
        return current
    new_uri = uri if uri is not None else current.uri
    check_tables_uri(new_uri)
    if not is_remote(new_uri):
        new_uri = str(Path(new_uri).expanduser().resolve())
    merged = {**current.storage_options, **options} if new_uri == current.uri else dict(options)
    wanted = TablesLocation(new_uri.rstrip("/"), merged)
    if wanted == current:
        return current
    duck = Path(root) / "lessdb.duckdb"
    if duck.exists() and wanted.uri != current.uri.rstrip("/"):
        raise LessdbError(f"{root}: this workspace's tables are at {current.uri}; moving them to {wanted.uri} is not "
                          "supported (create a new workspace with `lessdb init --tables …`)")
    check_reachable(wanted)   # before anything is written: a wrong bucket leaves no half-made workspace
    Path(root).mkdir(parents=True, exist_ok=True)
    save_location(root, wanted)
    return wanted
