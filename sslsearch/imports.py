"""The user's own code, named by import path: ``my_models:small_cnn`` (module, colon, attribute).

A model factory (``arch:``) or a dataset function (``data.name:``) can live outside sslsearch.
Its module is found, in this order, by Python's own import system (installed, or on the path),
beside the search space file (``add_search_dir``), or in the current directory; a directory
that holds it is appended to ``sys.path`` (never prepended: a user file never shadows the
standard library or an installed package). The search ships every such module to its Ray
workers (``shipped_source``), so a node needs neither the file nor the package installed.

No torch here: the command line checks names with this before it imports anything heavy.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import sysconfig
from pathlib import Path
from typing import Any

from sslsearch.errors import UserError

# dotted module path, a colon, a dotted attribute path: "pkg.mod:factory" or "mod:Cls.build"
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_search_dirs: list[str] = []


def first_line(e: BaseException) -> str:
    """The first line of an exception's message ('' when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def call_user(what: str, path: str, call: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``: the user's own code (``what`` ``path``, called as ``call``); what
    it raises becomes one UserError that names it: "arch 'm:f': m:f(...) raised ValueError: ..".
    A UserError it raises passes as it is."""
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except Exception as e:
        text = first_line(e)
        raise UserError(
            f"{what} {path!r}: {call} raised {type(e).__name__}{': ' + text if text else ''}"
        ) from None


def is_import_path(name: object) -> bool:
    """``True`` for ``module:attribute`` (a user's factory), ``False`` for a registered name."""
    return isinstance(name, str) and ":" in name


def import_path_problem(name: str) -> str | None:
    """What is wrong with the form of ``name`` (``my models:cnn``, ``mod:``, ``a:b:c``), if
    anything."""
    if _IMPORT_PATH.match(name):
        return None
    return (
        f"{name!r} is not an import path: write module:attribute, e.g. my_models:small_cnn (a "
        "module beside the space file, in the current directory or importable)"
    )


def check_import_path(name: str, what: str) -> None:
    """A malformed import path as one UserError naming ``what``."""
    problem = import_path_problem(name)
    if problem:
        raise UserError(f"{what} {problem}")


def add_search_dir(path: str | os.PathLike[str]) -> None:
    """Also look for user modules in ``path`` (the search space file's directory)."""
    d = str(Path(path).expanduser().absolute())
    if d not in _search_dirs:
        _search_dirs.append(d)


def search_dirs() -> list[str]:
    """Where modules not importable as they are are looked for: the space files' directories,
    then the current directory."""
    return list(dict.fromkeys([*_search_dirs, os.getcwd()]))


def _holds(directory: str, top: str) -> bool:
    d = Path(directory)
    return (d / f"{top}.py").is_file() or (d / top / "__init__.py").is_file()


def _find_top(top: str) -> None:
    """Make the top-level module ``top`` importable: as it is, else from a search directory."""
    if top in sys.modules:
        return
    try:
        if importlib.util.find_spec(top) is not None:
            return
    except (ImportError, ValueError):
        pass
    for d in search_dirs():
        if _holds(d, top):
            if d not in sys.path:
                sys.path.append(d)
            importlib.invalidate_caches()
            return


def load_object(path: str, what: str) -> Any:
    """The object ``module:attribute`` names; one clear UserError naming ``what`` otherwise.

    Args:
        path: ``module:attribute`` (dotted on both sides).
        what: the config key or flag it came from, for the message ("arch", "data.name").

    Example:
        >>> factory = load_object("my_models:small_cnn", "arch")
    """
    check_import_path(path, what)
    module_name, _, attr = path.partition(":")
    top = module_name.split(".")[0]
    _find_top(top)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name) and e.name.split(".")[0] == top:
            looked = ", ".join(search_dirs())
            raise UserError(
                f"{what} {path!r}: cannot import module {e.name!r} (not installed, and no "
                f"{top}.py or {top}/ in {looked}); put it beside the space file, in the "
                "current directory or on PYTHONPATH"
            ) from None
        raise UserError(f"{what} {path!r}: importing {module_name} failed: {e}") from None
    except Exception as e:  # the user's module raised while being imported
        raise UserError(
            f"{what} {path!r}: importing {module_name} raised {type(e).__name__}: {_first(e)}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            known = sorted(n for n in dir(module) if not n.startswith("_"))
            import difflib

            close = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(
                f"{what} {path!r}: module {module_name} has no {attr!r}{hint} "
                f"({getattr(module, '__file__', module_name)})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{what} {path!r} is a {type(obj).__name__}, not a function or class")
    return obj


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _installed(path: Path) -> bool:
    """In the standard library or site-packages: a node has it the way it has torch."""
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    parts = set(path.parts)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return any(str(path).startswith(str(Path(r).resolve()) + os.sep) for r in roots if r)


def shipped_source(path: str) -> str | None:
    """The file or package directory of ``path``'s top-level module, for Ray's ``py_modules``.

    None when the module need not travel: sslsearch itself (shipped anyway) or anything
    installed (standard library, site-packages): a node installs those like torch. Call after
    :func:`load_object` succeeded (the module is imported).
    """
    top = path.partition(":")[0].split(".")[0]
    if top == "sslsearch":
        return None
    module = sys.modules.get(top)
    if module is None:
        return None
    locations = list(getattr(module, "__path__", []) or [])
    source = Path(locations[0]) if locations else Path(str(getattr(module, "__file__", "")))
    if not str(source) or not source.exists():
        return None
    source = source.resolve()
    if _installed(source):
        return None
    return str(source)
