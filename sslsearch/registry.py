"""A tiny name -> builder registry shared by models, datasets, penalties, criteria and pruners."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sslsearch.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. A duplicate name is a programming error; an unknown one a user error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def unknown_name_message(kind: str, name: object, known: list[str]) -> str:
    """'unknown model 'vgg17' (did you mean 'vgg16_bn'?); known: ...'"""
    hint = ""
    if isinstance(name, str):
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    return f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}"
