"""The search spaces shipped with sslsearch, found by name from any install.

They live in ``search_spaces/`` at the root of the repository; packaging maps that folder to
the package ``sslsearch.search_spaces`` (pyproject ``package-dir``), so a wheel carries them as
package data. A source checkout or an editable install reads the folder itself.
"""

from __future__ import annotations

import difflib
from importlib.resources import files
from pathlib import Path

from sslsearch.config._typed import ConfigError

DEFAULT_SPACE = "default"


def spaces_dir() -> Path:
    """The folder holding the shipped ``*.yaml`` spaces."""
    installed = Path(str(files("sslsearch") / "search_spaces"))  # wheel: package data
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "search_spaces"  # checkout / editable install


def shipped_spaces() -> list[str]:
    d = spaces_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def space_file(spec: str | None = None) -> str:
    """``--space``: a shipped space's name (``default``, ``cifar10_resnet20``) or a YAML path.

    None means the shipped default. An existing file wins over a shipped name.
    """
    spec = spec or DEFAULT_SPACE
    path = Path(spec).expanduser()
    if path.is_file() or path.suffix in (".yaml", ".yml") or "/" in spec or "\\" in spec:
        return str(path)  # a path: load_space says clearly if it is missing
    shipped = spaces_dir() / f"{spec}.yaml"
    if shipped.is_file():
        return str(shipped)
    names = shipped_spaces()
    close = difflib.get_close_matches(spec, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(
        "",
        f"no file {spec!r} and no shipped space of that name{hint}; "
        f"shipped: {', '.join(names) or 'none found'}",
        "--space",
    )
