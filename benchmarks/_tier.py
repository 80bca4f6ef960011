"""Where the benchmarks find CIFAR-10: ``$SSLSEARCH_CIFAR10`` (a data root holding
``cifar10/train`` and ``cifar10/test``, or torchvision's ``cifar-10-batches-py``), else the
project's shared copy (``../shared/data/cifar10-jpeg.tar.gz``), unpacked once under
``benchmarks/.cache/``. The product never needs either: a user points ``data.root`` at theirs."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_TARBALL = HERE.parents[1] / "shared" / "data" / "cifar10-jpeg.tar.gz"
UNPACKED = HERE / ".cache" / "data"


def tier_root() -> Path:
    """A data root with CIFAR-10 in it (unpacking the shared archive the first time)."""
    env = os.environ.get("SSLSEARCH_CIFAR10")
    if env:
        return Path(env)
    if (UNPACKED / "cifar10" / "test").is_dir():
        return UNPACKED
    if not SHARED_TARBALL.is_file():
        raise SystemExit(
            f"CIFAR-10 not found: set SSLSEARCH_CIFAR10 to a data root holding cifar10/ "
            f"(or cifar-10-batches-py/), or put the archive at {SHARED_TARBALL}"
        )
    UNPACKED.mkdir(parents=True, exist_ok=True)
    tmp = UNPACKED / ".unpacking"
    with tarfile.open(SHARED_TARBALL) as tar:
        tar.extractall(tmp, filter="data")
    (tmp / "cifar10").rename(UNPACKED / "cifar10")
    tmp.rmdir()
    return UNPACKED
