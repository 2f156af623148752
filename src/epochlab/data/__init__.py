"""Datasets, each returning a :class:`~epochlab.data.base.DataBundle`.

Offline, always: ``synthetic``, ``digits`` and ``sequences``. Downloaded once
into :func:`~epochlab.data.download.cache_dir` (or read from a path you give):
``mnist`` and ``imdb``. :func:`load` takes any of them by name.

Example:
    >>> import epochlab.data as data
    >>> data.load("digits").input_shape
    (1, 28, 28)
"""

from importlib.util import find_spec

from epochlab._lazy import attach as _lazy_attach
from epochlab.data.base import DataBundle
from epochlab.data.digits import digits
from epochlab.data.download import cache_dir, fetch
from epochlab.data.imdb import imdb
from epochlab.data.mnist import mnist
from epochlab.data.registry import NAMES, load
from epochlab.data.synthetic import synthetic

__all__ = [
    "NAMES",
    "DataBundle",
    "cache_dir",
    "digits",
    "fetch",
    "imdb",
    "load",
    "mnist",
    "synthetic",
]

# sequences.py is written separately; export it once it exists. The import
# binds the function over the submodule attribute that importing sets.
if find_spec("epochlab.data.sequences") is not None:
    from epochlab.data.sequences import sequences as sequences

    __all__.append("sequences")

# Submodules load on first use as attributes too (`el.data.<module>`), as when the package
# imported them all.
__getattr__, __dir__ = _lazy_attach(__name__, {})
