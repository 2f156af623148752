"""Sweeps: many training configurations, planned and run together.

Fused training (:mod:`epochlab.sweep.fused`) trains K configurations of one
MLP as a single vectorized model.
"""

from epochlab.sweep.fused import FusedResult, train_fused
from epochlab.sweep.fused_ops import is_fusable

__all__ = ["FusedResult", "is_fusable", "train_fused"]
