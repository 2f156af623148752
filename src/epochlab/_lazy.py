"""Package attributes loaded on first use (PEP 562), so importing a package, or one light
module inside it, does not load torch, scikit-learn and matplotlib behind it.

Example:
    >>> getattr_, dir_ = attach("json", {"dumps": "json"})
    >>> getattr_("dumps")({"a": 1})
    '{"a": 1}'
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from typing import Any


def attach(package: str, names: dict[str, str], submodules: Iterable[str] = ()
           ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each of ``names`` comes from the module
    mapped to it, and any other name that is a submodule is ``package.<name>``; each is
    imported when first asked for, then kept in the package's namespace. ``submodules``
    are the ones ``dir()`` lists."""
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
        elif name in subs or (not name.startswith("__")
                              and importlib.util.find_spec(f"{package}.{name}") is not None):
            # Any submodule, as when the package imported them all (`el.train.data`).
            value = importlib.import_module(f"{package}.{name}")
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
