"""The user's own parts of a search: their modules travel to the workers, their weights into the
experiment.

* ``arch: my_models:small_cnn`` and ``data: {name: my_data:load}`` name code outside sslsearch.
  The driver imports it (beside the space file, the current directory or the Python path) and
  ships each module (a file or a package directory) in Ray's ``runtime_env`` ``py_modules``,
  next to sslsearch itself: a node needs neither the file nor the package installed.
* ``weights:`` (a local path or a storage URI) is copied once into the experiment
  (``<experiment>/weights/<file name>``), which every node reads through the storage path; the
  trials start from that copy, and a resume uses it even if the original moved or changed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from sslsearch import storage
from sslsearch.config import SearchSpace
from sslsearch.imports import add_search_dir, is_import_path, load_object, shipped_source

log = logging.getLogger(__name__)
WEIGHTS_DIR = "weights"


def look_beside(space_file: str | None) -> None:
    """User modules named by the space may sit beside its file."""
    if space_file and not storage.is_uri(space_file):
        add_search_dir(Path(space_file).expanduser().absolute().parent)


def user_modules(space: SearchSpace) -> list[str]:
    """The files or package directories of the user modules the space names, to ship to every
    worker (imported here first: a name that does not import stops the search before it
    starts)."""
    sources: list[str] = []
    named = [("arch", space.arch), ("data.name", space.data.name)]
    named += [("objectives", path) for path in space.user_objectives()]
    for key, name in named:
        if not is_import_path(name):
            continue
        load_object(name, key)
        source = shipped_source(name)
        if source is not None and source not in sources:
            sources.append(source)
    for s in sources:
        log.info("shipping %s to every Ray worker (runtime_env py_modules)", s)
    return sources


def absolute_weights(space: SearchSpace) -> SearchSpace:
    """A relative ``weights`` path is relative to the current directory (as data.root is)."""
    w = space.weights
    if not w or storage.is_uri(w):
        return space
    return replace(space, weights=str(Path(w).expanduser().absolute()))


def staged_weights_path(space: SearchSpace, exp_dir: str) -> str | None:
    if not space.weights:
        return None
    name = space.weights.rstrip("/").rsplit("/", 1)[-1] or "weights.pt"
    return storage.join(exp_dir, WEIGHTS_DIR, name)


def stage_weights(space: SearchSpace, exp_dir: str) -> SearchSpace:
    """The space the trials run: ``weights`` pointing at the experiment's copy (made now, or
    kept from the experiment's first run)."""
    target = staged_weights_path(space, exp_dir)
    if target is None or space.weights is None:
        return space
    if not storage.exists(target):
        storage.write_bytes_atomic(target, storage.read_bytes(space.weights))
        log.info("weights %s copied into the experiment: %s", space.weights, target)
    return replace(space, weights=target)
