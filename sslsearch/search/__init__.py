"""The search: Ray Tune schedules trials, Optuna (multi-objective) proposes ssl_lambda, the pruning budget and
optionally the ssl/prune type and way. The only package that imports ray and optuna; it does so
lazily, so that ``import sslsearch.search`` stays cheap for the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sslsearch.search._driver import SearchOutcome
    from sslsearch.search._setup import SearchOptions

__all__ = ["SearchOptions", "SearchOutcome", "rebuild_trials", "run_search"]


def run_search(options: SearchOptions) -> SearchOutcome:
    from sslsearch.search._driver import run_search as _run

    return _run(options)


def rebuild_trials(exp_dir: str) -> None:
    """trials.parquet and screens.parquet written again from an experiment's trial directories."""
    from sslsearch.search._finish import rebuild_trials as _rebuild

    _rebuild(exp_dir)


def __getattr__(name: str) -> Any:
    if name == "SearchOptions":
        from sslsearch.search._setup import SearchOptions

        return SearchOptions
    if name == "SearchOutcome":
        from sslsearch.search._driver import SearchOutcome

        return SearchOutcome
    raise AttributeError(name)
