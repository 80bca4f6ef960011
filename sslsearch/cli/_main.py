"""``sslsearch`` entry point: parse, check, then import what the command needs.

Nothing here (or in the argument definitions) imports torch or ray: ``--help``, a mistyped flag
and a bad search space answer in a fraction of a second; each command imports its library
inside its handler.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from collections.abc import Sequence

from sslsearch.errors import UserError

COMMANDS = ("search", "trial", "finetune", "prune", "profile", "export", "evaluate", "list")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line and exit code 2 (no usage dump)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --num-sample must not pass for --num-samples
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.commands: dict[str, argparse.ArgumentParser] = {}  # subcommand parsers, by name

    def option_names(self, command: str | None = None) -> list[str]:
        """Every option this parser (and ``command``'s parser) lists in its help."""
        texts = [self.format_help()]
        if command in self.commands:
            texts.append(self.commands[command].format_help())
        return sorted({o for t in texts for o in re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", t)})

    def error(self, message: str) -> None:  # type: ignore[override]
        # main() adds the one "sslsearch: error:" prefix; argparse's own prog prefix would double it
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            known = [c.strip().strip("'") for c in choice.group(2).split(",")]
            message += _did_you_mean(choice.group(1), known)
        raise UserError(message)


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def build_parser() -> _Parser:
    from sslsearch.cli import _experiment_commands as e
    from sslsearch.cli import _model_commands as m
    from sslsearch.cli import _trial_commands as t

    p = _Parser(
        prog="sslsearch",
        description="Structured Sparsity Learning + structured pruning, searched with Ray Tune "
        "and Optuna for accuracy/FLOPs/size Pareto fronts. FLOPs are multiply-adds (fvcore).",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    adders = {
        "search": e.add_search,
        "trial": t.add_trial,
        "finetune": t.add_finetune,
        "prune": m.add_prune,
        "profile": m.add_profile,
        "export": e.add_export,
        "evaluate": m.add_evaluate,
        "list": e.add_list,
    }
    for name in COMMANDS:
        adder = adders[name]
        p.commands[name] = sub.add_parser(name, help=adder.__doc__, description=adder.__doc__)
        adder(p.commands[name])
    return p


def _unrecognized(extra: list[str], known: list[str]) -> str:
    hints = {}
    for word in extra:
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
            if close:
                hints[word] = close[0]
    if len(hints) == 1:
        hint = f" (did you mean {next(iter(hints.values()))}?)"
    else:
        hint = " (did you mean " + "; ".join(f"{w} -> {c}" for w, c in hints.items()) + "?)"
    hint = hint if hints else ""
    return f"unrecognized arguments: {' '.join(extra)}{hint}"


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
        args, extra = parser.parse_known_args(argv)
        if extra:
            raise UserError(_unrecognized(extra, parser.option_names(args.command)))
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
