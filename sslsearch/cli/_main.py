from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from sslsearch.errors import UserError

COMMANDS = ("search", "trial", "prune", "profile", "export", "evaluate", "list")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit code 2 (no usage dump)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --num-sample must not pass for --num-samples
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    from sslsearch.cli import _commands as c

    p = _Parser(
        prog="sslsearch",
        description="Structured Sparsity Learning + structured pruning, searched with Ray Tune "
        "and Optuna for accuracy/FLOPs/size Pareto fronts. FLOPs are multiply-adds (fvcore).",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, adder in (
        ("search", c.add_search),
        ("trial", c.add_trial),
        ("prune", c.add_prune),
        ("profile", c.add_profile),
        ("export", c.add_export),
        ("evaluate", c.add_evaluate),
        ("list", c.add_list),
    ):
        adder(sub.add_parser(name, help=adder.__doc__, description=adder.__doc__))
    return p


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    for noisy in ("fvcore", "torch_pruning", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. User errors: one line on stderr, exit code 2. Nothing else is swallowed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        _setup_logging(args.quiet, args.verbose)
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"sslsearch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sslsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def run_command(command: str, argv: Sequence[str] | None = None) -> int:
    """``launch/*.py`` wrappers: ``sslsearch <command> <argv>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return main([command, *args])
