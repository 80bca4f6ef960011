from __future__ import annotations

import os
from pathlib import Path

import pytest

from sslsearch import storage


def test_atomic_write_keeps_the_previous_file_on_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "trials.parquet"
    storage.write_bytes_atomic(str(target), b"complete v1")

    def crash(fd: int) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="power cut"):
        storage.write_bytes_atomic(str(target), b"half of v2")
    assert target.read_bytes() == b"complete v1"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.parquet"]  # no temp file left


def test_paths_and_listing(tmp_path: Path) -> None:
    base = str(tmp_path / "a")
    storage.write_text_atomic(storage.join(base, "x", "f.txt"), "hi")
    assert storage.exists(storage.join(base, "x", "f.txt"))
    assert storage.is_dir(storage.join(base, "x"))
    assert storage.listdir(base) == ["x"]
    assert storage.listdir(str(tmp_path / "missing")) == []
    assert storage.read_bytes(storage.join(base, "x", "f.txt")) == b"hi"
    assert storage.is_uri("s3://bucket/x") and not storage.is_uri(str(tmp_path))


def test_check_writable(tmp_path: Path) -> None:
    storage.check_writable(str(tmp_path / "new"))
    assert list((tmp_path / "new").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        storage.check_writable(str(tmp_path / "file" / "sub"))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_mode_a_plain_open_gives(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        storage.write_bytes_atomic(str(tmp_path / "atomic.csv"), b"x")
        (tmp_path / "plain.csv").write_bytes(b"x")
    finally:
        os.umask(old)
    mode = (tmp_path / "atomic.csv").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_temporary_files_of_killed_writers_are_swept(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    storage.write_text_atomic(str(exp / "jobs" / "a" / "job.json"), "{}")
    old = exp / "jobs" / "a" / f".state-00000002.pt.abc{storage.TEMP_SUFFIX}"
    old.write_bytes(b"half")
    os.utime(old, (1, 1))
    young = exp / "points" / "p" / f".result.json.def{storage.TEMP_SUFFIX}"
    young.parent.mkdir(parents=True)
    young.write_bytes(b"being written")
    (exp / "keep.tmp").write_text("not ours")
    assert storage.remove_temp_files(str(exp), older_than_s=60) == [str(old)]
    assert young.exists() and (exp / "keep.tmp").exists()
    assert storage.remove_temp_files(str(exp)) == [str(young)]
    assert (exp / "jobs" / "a" / "job.json").read_text() == "{}"


def test_json_lines_skip_a_line_cut_by_a_kill_and_a_missing_file_is_an_oserror(
    tmp_path: Path,
) -> None:
    path = tmp_path / storage.HISTORY_FILE
    path.write_text('{"epoch": 1, "top1": 50.0}\n{"epoch": 2, "top1": 61.5}\n{"epoch": 3, "to')
    assert storage.read_json_lines(str(path)) == [
        {"epoch": 1, "top1": 50.0},
        {"epoch": 2, "top1": 61.5},
    ]
    with pytest.raises(OSError):
        storage.read_json_lines(str(tmp_path / "none.jsonl"))
