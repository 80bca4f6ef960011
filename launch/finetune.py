"""`python launch/finetune.py ...` is `sslsearch finetune ...` (see `--help`)."""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a clone without install; the launch/ folder itself must not shadow any module.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from sslsearch.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("finetune"))
