"""Callbacks: the hook protocol and the ones that ship (progress, ...)."""

from epochlab.callbacks.base import Callback, CallbackList
from epochlab.callbacks.progress import EpochLogger, ProgressBar

__all__ = ["Callback", "CallbackList", "EpochLogger", "ProgressBar"]
