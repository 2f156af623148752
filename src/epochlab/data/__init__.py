"""Datasets, each returning a :class:`~epochlab.data.base.DataBundle`."""

from epochlab.data.base import DataBundle
from epochlab.data.synthetic import synthetic

__all__ = ["DataBundle", "synthetic"]
