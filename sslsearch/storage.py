"""Paths that may be local directories or URIs (s3://, gs://, hdfs://...) via pyarrow.fs.

Writes are atomic: to a temporary name next to the target (``.<name>.<random>`` +
``TEMP_SUFFIX``), flushed and fsynced, then renamed, and the directory fsynced (on object stores a
single PUT is already atomic), so a crash mid-write never leaves a half file under the real
name. A process killed mid-write leaves its temporary file; ``remove_temp_files`` sweeps them.
Local files get the mode a plain ``open()`` would give (0666 minus the umask), so teammates on a
shared storage path can read the results as they read Ray's files beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def resolve(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    p = str(path)
    if is_uri(p):
        fs, inner = pafs.FileSystem.from_uri(p)
        return fs, inner
    if p.startswith("file://"):
        p = p[len("file://") :]
    return pafs.LocalFileSystem(), str(Path(p).expanduser().absolute())


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return bool(fs.get_file_info(p).type != pafs.FileType.NotFound)


def is_dir(path: str) -> bool:
    fs, p = resolve(path)
    return bool(fs.get_file_info(p).type == pafs.FileType.Directory)


def read_bytes(path: str) -> bytes:
    fs, p = resolve(path)
    with fs.open_input_stream(p) as f:
        return bytes(f.read())


# a trial directory's epochs, one JSON line each (written by the trial, read by the report)
HISTORY_FILE = "history.jsonl"


def read_json_lines(path: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; a line that does not parse (cut by a
    kill mid-write) is skipped. OSError when the file cannot be read."""
    out = []
    for line in read_bytes(path).decode(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def cache_root() -> Path:
    """This machine's cache of derived files (latency tables, decoded images):
    ``$SSLSEARCH_CACHE``, else ``~/.cache/sslsearch``. Safe to delete: all is rebuilt."""
    root = os.environ.get("SSLSEARCH_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "sslsearch"


TEMP_SUFFIX = ".sslsearch-tmp"  # what every temporary file of an atomic write ends with


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (write, fsync, rename, fsync the dir)."""
    if not is_uri(path):
        target = Path(resolve(path)[1])
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
        try:
            os.fchmod(fd, _umask_mode())  # mkstemp creates 0600
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return
    fs, p = resolve(path)
    parent, name = p.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temp_files(root: str, older_than_s: float = 0.0) -> list[str]:
    """Delete the temporary files that killed writers left anywhere under ``root``.

    ``older_than_s``: keep those younger than this (a writer on another node may still be
    renaming one). Returns the paths removed.
    """
    fs, p = resolve(root)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    now = time.time()
    removed = []
    for info in fs.get_file_info(pafs.FileSelector(p, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or not info.base_name.endswith(TEMP_SUFFIX):
            continue
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        if now - mtime < older_than_s:
            continue
        try:
            fs.delete_file(info.path)
            removed.append(info.path)
        except OSError:  # gone already (its writer finished or cleaned up)
            continue
    return removed


def delete_file(path: str) -> None:
    """Delete ``path``; a file that is already gone is fine."""
    fs, p = resolve(path)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(p)


def _umask_mode() -> int:
    """0666 minus the process umask: what ``open(path, "w")`` creates. The umask can only be read
    by setting it, so set it back at once (a race only with another thread changing it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def listdir(path: str) -> list[str]:
    """Names (not paths) of the entries directly under ``path``; empty if it does not exist."""
    fs, p = resolve(path)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=False))
    return sorted(i.base_name for i in infos)


def makedirs(path: str) -> None:
    fs, p = resolve(path)
    fs.create_dir(p, recursive=True)


def check_writable(path: str) -> None:
    """Raise OSError (with the reason) unless files can be created under ``path``."""
    makedirs(path)
    probe = join(path, f".write-test-{uuid.uuid4().hex}")
    write_bytes_atomic(probe, b"ok")
    fs, p = resolve(probe)
    fs.delete_file(p)
