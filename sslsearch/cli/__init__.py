"""Command line: ``sslsearch <command>`` / ``python -m sslsearch <command>``."""

from __future__ import annotations

from sslsearch.cli._main import build_parser, main, run_command

__all__ = ["build_parser", "main", "run_command"]
