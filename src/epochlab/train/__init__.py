"""The training loop, its state, its History, and the accounting they share."""

from epochlab._lazy import attach as _lazy_attach

# Submodules load on first use as attributes too (`el.train.<module>`), as when the package
# imported them all.
__getattr__, __dir__ = _lazy_attach(__name__, {})
