"""Package attributes loaded on first use (PEP 562), so importing a package, or one light
module inside it, does not load torch, scikit-learn and matplotlib behind it.

Example:
    >>> getattr_, dir_ = attach("json", {"dumps": "json"})
    >>> getattr_("dumps")({"a": 1})
    '{"a": 1}'
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any


def attach(package: str, names: dict[str, str], submodules: Iterable[str] = ()
           ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each of ``names`` comes from the module
    mapped to it, each of ``submodules`` is ``package.<name>``, imported when first asked
    for and then kept in the package's namespace."""
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in subs:
            value = importlib.import_module(f"{package}.{name}")
        elif name in names:
            value = getattr(importlib.import_module(names[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace = sys.modules.get(package)
        if namespace is not None:
            setattr(namespace, name, value)  # the next access skips this function
        return value

    def __dir__() -> list[str]:
        namespace = sys.modules.get(package)
        return sorted({*(vars(namespace) if namespace else ()), *subs, *names})

    return __getattr__, __dir__
