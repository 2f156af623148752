"""The seed's slide 7 written out in NumPy: mini-batch gradient descent from scratch.

A reference, not a tool: it exists so that epochlab's training loop can be
checked against twenty lines anyone can read (:mod:`epochlab.reference.minibatch`).
It imports nothing from epochlab.
"""

from epochlab._lazy import attach as _lazy_attach
from epochlab.reference.minibatch import MiniBatchResult, mini_batch_gradient_descent

__all__ = ["MiniBatchResult", "mini_batch_gradient_descent"]

# Submodules load on first use as attributes too (`el.reference.<module>`), as when the package
# imported them all.
__getattr__, __dir__ = _lazy_attach(__name__, {})
