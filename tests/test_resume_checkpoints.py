"""A driver killed between Tune's snapshots: the snapshot can name a checkpoint that Tune has
since deleted (``num_to_keep``). Seen in a real kill/resume: Tune's restore then failed the trial
on every retry and its unfinished points ended ``error``. The disk decides where a trial
resumes, and placeholders keep Tune's restore from failing."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from sslsearch.search._trainable import (
    fill_missing_checkpoints,
    remove_placeholders,
    resume_path,
)
from sslsearch.trial import RESULT_FILE, STATE_FILE

FS = pafs.LocalFileSystem()


def _ckpt(trial: Path, idx: int, *files: str) -> str:
    d = trial / f"checkpoint_{idx:06d}"
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_bytes(b"x")
    return str(d)


def test_a_deleted_checkpoint_gets_a_placeholder_and_the_trial_resumes_from_the_newest(
    tmp_path: Path,
) -> None:
    exp = tmp_path / "exp"
    trial = exp / "sslsearch_trial_abc_1_points=x"
    newer = [_ckpt(trial, i, STATE_FILE) for i in (14, 15)]  # 13 and older deleted by Tune
    (exp / "other_dir").mkdir()
    made = fill_missing_checkpoints(str(exp))
    assert len(made) == 14 and str(trial / "checkpoint_000013") in made
    assert all(Path(p).is_dir() and not any(Path(p).iterdir()) for p in made)
    # Tune restores from the placeholder its snapshot named; the trial takes the newest state
    assert resume_path(FS, str(trial), str(trial / "checkpoint_000013")) == newer[-1]
    remove_placeholders(str(exp), made)
    assert sorted(p.name for p in trial.iterdir()) == ["checkpoint_000014", "checkpoint_000015"]


def test_resume_path_prefers_the_disk(tmp_path: Path) -> None:
    trial = tmp_path / "t"
    s3 = _ckpt(trial, 3, STATE_FILE)
    assert resume_path(FS, str(trial), s3) == s3  # Tune's is the newest: kept
    assert resume_path(FS, str(trial), None) == s3  # started afresh, state on disk: resumed
    empty = _ckpt(trial, 1)
    assert resume_path(FS, str(trial), empty) == s3  # a placeholder
    s5 = _ckpt(trial, 5, STATE_FILE)
    assert resume_path(FS, str(trial), s3) == s5  # newer on disk than Tune knew
    final = _ckpt(trial, 6, STATE_FILE, RESULT_FILE)
    assert resume_path(FS, str(trial), s5) == final  # finished: re-reported, not re-run
    assert resume_path(FS, str(tmp_path / "none"), None) is None
    lone = tmp_path / "lone"
    placeholder = _ckpt(lone, 2)
    assert resume_path(FS, str(lone), placeholder) is None  # nothing real: start afresh
