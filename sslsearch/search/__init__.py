"""The search: Ray Tune schedules trials, Optuna (multi-objective) proposes ssl_lambda, the pruning budget and
optionally the ssl/prune type and way. The only package that imports ray and optuna; it does so
lazily, so that ``import sslsearch.search`` stays cheap for the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sslsearch.search._run import SearchOptions, SearchOutcome

__all__ = ["SearchOptions", "SearchOutcome", "run_search"]


def run_search(options: SearchOptions) -> SearchOutcome:
    from sslsearch.search._run import run_search as _run

    return _run(options)


def __getattr__(name: str) -> Any:
    if name in ("SearchOptions", "SearchOutcome"):
        from sslsearch.search import _run

        return getattr(_run, name)
    raise AttributeError(name)
