"""What a configuration names, made real: its data loaded, its model built.

The plan (which looks at a model's structure to decide fusion) and the
workers (which train) both need a configuration's data and model; this
module is the one place that turns names into objects, below both of them:
``spec -> workload -> plan -> worker -> driver``.

- :func:`load_data`: the configuration's dataset, loaded once per process.
- :func:`build_model`: ``torch.manual_seed(seed)``, then the model (same
  seed, same initial weights, in any process).
- :func:`test_metrics`: the test-set metrics of a model, as a sweep stores them.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from epochlab.data.base import DataBundle
from epochlab.data.registry import load
from epochlab.models.registry import build
from epochlab.sweeps.spec import Config
from epochlab.train.loop import evaluate

__all__ = ["build_model", "load_data", "test_metrics"]


@functools.lru_cache(maxsize=4)
def _load(name: str, options: tuple[tuple[str, Any], ...]) -> DataBundle:
    return load(name, **dict(options))


def load_data(config: Config) -> DataBundle:
    """The configuration's dataset, loaded once per process.

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> c = SweepSpec(data_options={"n_samples": 100}).configs()[0]
        >>> len(load_data(c).x_train)
        80
    """
    return _load(config.data, config.data_options)


def build_model(config: Config, data: DataBundle) -> torch.nn.Module:
    """Seed torch with the configuration's seed, then build its model (same seed, same weights).

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> c = SweepSpec(data_options={"n_samples": 100}).configs()[0]
        >>> a, b = build_model(c, load_data(c)), build_model(c, load_data(c))
        >>> torch.equal(a[0].weight, b[0].weight)
        True
    """
    torch.manual_seed(config.seed)
    return build(config.model, data, **({"batch_norm": True} if config.batch_norm else {}))


def test_metrics(model: torch.nn.Module, data: DataBundle) -> dict[str, float]:
    """Loss and metrics of ``model`` on the test split; empty when there is none."""
    return evaluate(model, data) if len(data.x_test) else {}
