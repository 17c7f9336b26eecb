"""What `lessdb ingest` reads: each argument (a file, a folder, a glob, an `s3://` URI) resolved to the input
files it names, every one checked before any is read, each with its file format and compression.

- A folder is a Hugging Face `save_to_disk` folder (`state.json` + `dataset_info.json`: its Arrow shards in
  the order `state.json` lists them; a `DatasetDict` folder: every split in `dataset_dict.json`'s order), or
  else a folder of shards: its Parquet/Arrow files (recursively, sorted), or its JSON/JSONL files when it has
  none. Hidden files and names starting with `_` are skipped, as Spark and Hugging Face do.
- A glob (`*`, `?`, `[`) that matches no file is an error, as are a missing path and anything that is not a
  regular file (a FIFO would block forever, `/dev/zero` never ends): refused before anything is opened.
- The file format is forced (`--format parquet`), else read from the file's first bytes (gzip/zstd, `PAR1`,
  Arrow IPC), else from its suffix; JSON and JSONL are one format (the reader tells them apart).
- `s3://bucket/key` reads through pyarrow's S3 client with the same environment as the workspace's tables:
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (the AWS SDK's own chain), AWS_REGION, and
  AWS_ENDPOINT (or AWS_ENDPOINT_URL) for an S3-compatible store. Nothing of it is recorded but the URI.
"""
from __future__ import annotations

import fnmatch
import glob
import json
import os
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import InputError

FILE_FORMATS = ("json", "parquet", "arrow")
FORMAT_ALIASES = {"jsonl": "json", "ndjson": "json", "feather": "arrow", "ipc": "arrow"}
# the names `ingest --format` offers for a file format (the aliases above are accepted too)
FILE_FORMAT_NAMES = ("jsonl", *FILE_FORMATS)
SUFFIX_FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
                  ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
SUFFIX_COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
MAGIC_COMPRESSION = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
S3_PREFIX = "s3://"
GLOB_CHARS = "*?["


@dataclass
class InputFile:
    """One file to read. `fs`/`path`: a pyarrow FileSystem and the path inside it."""
    uri: str                 # absolute local path, or s3://bucket/key: what the ingest records
    arg: str                 # the argument it came from, as given
    fs: object
    path: str
    size: int
    file_format: str         # json | parquet | arrow
    compression: str | None  # gzip | zstd | None
    default_dataset: str     # source_dataset for records that name none
    shown: str = ""          # how messages name it: the argument when it named this file, else the uri

    def __post_init__(self):
        self.shown = self.shown or self.uri

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def open_stream(self):
        """A fresh sequential binary stream of the (decompressed) content."""
        return self.fs.open_input_stream(self.path, compression=self.compression)

    def open_random_access(self):
        return self.fs.open_input_file(self.path)


def normalise_file_format(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in FILE_FORMATS:
        raise InputError(f"unknown file format {fmt!r}; expected one of {', '.join(FILE_FORMATS)}")
    return fmt


def resolve_inputs(args, file_format: str | None = None) -> list[InputFile]:
    """Every input file the arguments name, in order, checked (exists, regular, format known); raises
    InputError naming the argument otherwise. Nothing is read but a few first bytes of each file."""
    file_format = normalise_file_format(file_format)
    files: list[InputFile] = []
    for arg in args:
        arg = os.fspath(arg)
        if not str(arg).strip():
            raise InputError("empty input path")
        files.extend(_resolve_one(str(arg), file_format))
    return files


def _resolve_one(arg: str, forced: str | None) -> list[InputFile]:
    if arg.startswith(S3_PREFIX):
        fs, path = s3_filesystem(), arg[len(S3_PREFIX):].rstrip("/")
        if not path or "/" not in path and any(c in path for c in GLOB_CHARS):
            raise InputError("give a bucket and a key or prefix: s3://bucket/key", file=arg)
        uri_of = lambda p: S3_PREFIX + p   # noqa: E731
    else:
        from pyarrow import fs as pafs

        fs, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(arg))
        uri_of = lambda p: p   # noqa: E731
    kind = _kind(fs, path, arg)
    if kind == "missing":
        if any(c in arg for c in GLOB_CHARS):
            paths = _glob(fs, path, arg)
            if not paths:
                raise InputError("matches no file", file=arg)
            label = _dataset_label(_glob_root(path))
            return [_input(fs, p, uri_of(p), arg, forced, label) for p in paths]
        raise InputError("not found: no such object or prefix (or no permission to see it)"
                         if arg.startswith(S3_PREFIX) else "file not found", file=arg)
    if kind == "dir":
        label = _dataset_label(path)
        return [_input(fs, p, uri_of(p), arg, forced, label, fmt) for p, fmt in _folder_files(fs, path, arg)]
    inp = _input(fs, path, uri_of(path), arg, forced, _dataset_label(path, file=True))
    inp.shown = arg
    return [inp]


def _kind(fs, path: str, arg: str) -> str:
    """file | dir | missing; refuses what is neither a regular file nor a folder (local paths: by stat, which
    follows symlinks, before anything opens it)."""
    from pyarrow import fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise InputError(exc.strerror or str(exc), file=arg) from None
        if stat.S_ISDIR(mode):
            return "dir"
        if not stat.S_ISREG(mode):
            raise InputError(f"is {_node_words(mode)}, not a regular file; ingest reads regular files only "
                             "(copy the data into a file first)", file=arg)
        return "file"
    info = _file_info(fs, path, arg)
    return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(info.type, "missing")


def _node_words(mode: int) -> str:
    for test, words in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def _file_info(fs, path: str, arg: str):
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise InputError(f"cannot be read: {_first_line(exc)}", file=arg) from None


def _first_line(exc) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _glob(fs, path: str, arg: str) -> list[str]:
    from pyarrow import fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        found = sorted(glob.glob(path, recursive=True))
        for p in found:
            _kind(fs, p, p)     # a FIFO matched by the glob is refused like one named
        return [p for p in found if os.path.isfile(p)]
    root = _glob_root(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise InputError(f"cannot be listed: {_first_line(exc)}", file=arg) from None
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and _glob_match(i.path, path))


def _glob_match(path: str, pattern: str) -> bool:
    """What the local glob matches, for object keys: `*`, `?` and `[...]` within one path segment, `**` across
    any number of them."""
    def match(parts: list[str], pats: list[str]) -> bool:
        if not pats:
            return not parts
        if pats[0] == "**":
            return any(match(parts[i:], pats[1:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pats[0]) and match(parts[1:], pats[1:])

    return match(path.split("/"), pattern.split("/"))


def _glob_root(path: str) -> str:
    """The longest leading part of a glob without glob characters (the folder to list)."""
    parts = PurePosixPath(path).parts
    keep = []
    for part in parts:
        if any(c in part for c in GLOB_CHARS):
            break
        keep.append(part)
    return str(PurePosixPath(*keep)) if keep else "."


def _dataset_label(path: str, file: bool = False) -> str:
    """The source_dataset of records that name none: a file's stem (without .gz/.zst), a folder's name."""
    name = PurePosixPath(path.rstrip("/")).name or "input"
    if file:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in SUFFIX_COMPRESSION:
            name = stem
        name = os.path.splitext(name)[0] or name
    return name


def _folder_files(fs, folder: str, arg: str) -> list[tuple[str, str | None]]:
    """(path, format or None to detect) of the files a folder holds, in reading order."""
    def join(*parts: str) -> str:
        return str(PurePosixPath(folder, *parts))

    names = _listing(fs, folder, arg, recursive=False)
    if "dataset_dict.json" in names and "state.json" not in names:
        splits = _read_json(fs, join("dataset_dict.json"), arg).get("splits") or []
        out = []
        for split in splits:
            out += _folder_files(fs, join(str(split)), arg)
        if not out:
            raise InputError("a Hugging Face DatasetDict folder whose splits hold no data files", file=arg)
        return out
    if "state.json" in names and "dataset_info.json" in names:   # datasets' save_to_disk layout
        state = _read_json(fs, join("state.json"), arg)
        shards = [f.get("filename") for f in state.get("_data_files") or [] if isinstance(f, dict)]
        if not shards or not all(isinstance(s, str) and s and "/" not in s and s not in ("..", ".") for s in shards):
            raise InputError("state.json lists no data files (`_data_files`): not a datasets save_to_disk folder",
                             file=arg)
        return [(join(s), "arrow") for s in shards]
    files = [p for p in _listing(fs, folder, arg, recursive=True)
             if not any(part.startswith((".", "_")) for part in PurePosixPath(p).parts)]
    kinds = {p: SUFFIX_FORMATS.get(_strip_compression(p)[1]) for p in files}
    columnar = [p for p in files if kinds[p] in ("parquet", "arrow")]
    chosen = columnar or [p for p in files if kinds[p] == "json"]
    if not chosen:
        raise InputError("folder holds no data files (.parquet, .arrow, .feather, .jsonl, .json, optionally .gz/"
                         ".zst), nor a Hugging Face save_to_disk dataset", file=arg)
    return [(join(p), None) for p in sorted(chosen)]


def _listing(fs, folder: str, arg: str, recursive: bool) -> list[str]:
    """Names of the files (recursive: relative paths of every file; else: every entry) inside `folder`."""
    from pyarrow import fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=recursive))
    except OSError as exc:
        raise InputError(f"cannot be listed: {_first_line(exc)}", file=arg) from None
    out = []
    for info in infos:
        if recursive and info.type != pafs.FileType.File:
            continue
        out.append(str(PurePosixPath(info.path).relative_to(folder)))
    return sorted(out)


def _read_json(fs, path: str, arg: str) -> dict:
    try:
        with fs.open_input_stream(path, compression=None) as fh:
            value = json.loads(fh.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{PurePosixPath(path).name} cannot be read: {_first_line(exc)}", file=arg) from None
    if not isinstance(value, dict):
        raise InputError(f"{PurePosixPath(path).name} is not a JSON object", file=arg)
    return value


def _strip_compression(path: str) -> tuple[str | None, str]:
    """(compression its suffix names, the suffix before that)."""
    stem, suffix = os.path.splitext(path.lower())
    comp = SUFFIX_COMPRESSION.get(suffix)
    if comp:
        suffix = os.path.splitext(stem)[1]
    return comp, suffix


def _input(fs, path: str, uri: str, arg: str, forced: str | None, label: str, known: str | None = None) -> InputFile:
    from pyarrow import fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        _kind(fs, path, uri)
        size = os.stat(path).st_size
    else:
        info = _file_info(fs, path, uri)
        if info.type != pafs.FileType.File:
            raise InputError("not found", file=uri)
        size = info.size
    suffix = _strip_compression(path)[1]
    head = _head(fs, path, uri, None)
    compression = next((c for magic, c in MAGIC_COMPRESSION.items() if head.startswith(magic)), None)
    content = _head(fs, path, uri, compression) if compression else head
    fmt = forced or known or _format_from_magic(content) or SUFFIX_FORMATS.get(suffix) or "json"
    if compression and fmt != "json":
        raise InputError(f"a {compression}-compressed {fmt} file: {fmt} files compress inside (their own codecs); "
                         "decompress it first", file=uri)
    return InputFile(uri, arg, fs, path, size, fmt, compression, label)


def _head(fs, path: str, uri: str, compression: str | None, n: int = 8) -> bytes:
    try:
        with fs.open_input_stream(path, compression=compression) as fh:
            return fh.read(n)
    except OSError as exc:
        raise InputError(f"cannot be read: {_first_line(exc)}", file=uri) from None


def _format_from_magic(head: bytes) -> str | None:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow"
    stripped = head.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf")
    if stripped[:1] in (b"{", b"["):
        return "json"
    return None


def s3_filesystem():
    """pyarrow's S3 client configured from the AWS_* environment (the tables' own; see the module docstring)."""
    from pyarrow import fs as pafs

    kwargs = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    endpoint = (os.environ.get("AWS_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    if endpoint:
        scheme, sep, host = endpoint.partition("://")
        kwargs["endpoint_override"] = host if sep else endpoint
        kwargs["scheme"] = scheme if sep else "https"
    try:
        return pafs.S3FileSystem(**kwargs)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot set up the S3 client: {_first_line(exc)}") from None
