"""Where a running trial keeps what it resumes from: whole state files, written by the trial.

After every epoch and every point, a trial's state (the model and optimizer mid-training, the
points done, the random stream) goes to ``<directory>/state-<seq>.pt``, written whole by
``storage.write_bytes_atomic`` (write, fsync, rename), and its epochs so far to
``history.jsonl`` (one JSON line per epoch, the report's training curves). The newest ``keep``
states are kept: ``load`` takes the newest one that reads back whole, so a state damaged after
the fact (a copy cut short, a full disk, a truncated file) costs an epoch, not the trial. The
directory may be local or an object-store URI; nothing here knows about Ray.
"""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import torch

from sslsearch import storage
from sslsearch.storage import HISTORY_FILE

log = logging.getLogger(__name__)

_STATE = re.compile(r"^state-(\d+)\.pt$")


def state_name(seq: int) -> str:
    return f"state-{seq:08d}.pt"


class StateStore:
    """The states of one trial in ``directory``, newest last; ``keep`` of them are kept.

    Example:
        >>> store = StateStore("runs/x/jobs/abc")
        >>> store.save({"version": 2, "phase": "ssl", ...})  # state-00000001.pt
        >>> store.load()  # the newest whole state, or None
    """

    def __init__(self, directory: str, keep: int = 2, version: int | None = None) -> None:
        if keep < 1:
            raise ValueError("keep at least one state")
        self.directory = directory
        self.keep = keep
        self.version = version  # states of another version are not ours to resume from
        self._seq: int | None = None

    def names(self) -> list[str]:
        """The state files in the directory, newest first."""
        found = [
            (int(m.group(1)), n) for n in storage.listdir(self.directory) if (m := _STATE.match(n))
        ]
        return [n for _, n in sorted(found, reverse=True)]

    def load(self) -> dict[str, Any] | None:
        """The newest state that reads back whole (None: nothing to resume from)."""
        names = self.names()
        self._seq = int(_STATE.match(names[0]).group(1)) if names else 0  # type: ignore[union-attr]
        for name in names:
            path = storage.join(self.directory, name)
            try:
                state = torch.load(io.BytesIO(storage.read_bytes(path)), weights_only=True)
            except Exception as e:  # truncated, damaged or unreadable: try the one before
                log.warning("state %s is not whole (%s): resuming from the one before", path, e)
                continue
            if not isinstance(state, dict) or (
                self.version is not None and state.get("version") != self.version
            ):
                log.warning("%s is not a sslsearch trial state: skipping it", path)
                continue
            return state
        return None

    def save(self, state: dict[str, Any], keep: int | None = None) -> str:
        """Write ``state`` as the newest state, then drop all but the newest ``keep`` (default:
        the store's)."""
        if self._seq is None:
            names = self.names()
            self._seq = int(_STATE.match(names[0]).group(1)) if names else 0  # type: ignore[union-attr]
        self._seq += 1
        buf = io.BytesIO()
        torch.save(state, buf)
        path = storage.join(self.directory, state_name(self._seq))
        storage.write_bytes_atomic(path, buf.getvalue())
        for old in self.names()[keep or self.keep :]:
            storage.delete_file(storage.join(self.directory, old))
        return path

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """The epochs so far, one JSON line each (rewritten whole: a resumed trial's too)."""
        text = "".join(json.dumps(h) + "\n" for h in history)
        storage.write_text_atomic(storage.join(self.directory, HISTORY_FILE), text)


def read_history(directory: str) -> list[dict[str, Any]]:
    """The epochs ``StateStore.write_history`` left in ``directory`` ([] when none)."""
    try:
        return storage.read_json_lines(storage.join(directory, HISTORY_FILE))
    except OSError:
        return []
