"""Parameter validation: one exception type for bad parameters.

:class:`ParameterError` is what every check raises when a parameter a user
gave is wrong (a value out of range, an unknown name, a conflict between two
options, a path that cannot be used). It subclasses both ``ValueError`` and
``TypeError`` (as scikit-learn's ``InvalidParameterError`` does), so code
that caught either keeps working. The CLI turns exactly these into a
one-line usage error (exit 2); any other exception is a failure (exit 1),
never reported as the user's mistake.
"""

from __future__ import annotations

__all__ = ["ParameterError"]


class ParameterError(ValueError, TypeError):
    """A parameter's value is wrong: the message names it, what is allowed and what was given.

    Example:
        >>> try:
        ...     raise ParameterError("The value of `epochs` is 0, but must be `epochs >= 1`.")
        ... except ValueError as e:
        ...     print(e)
        The value of `epochs` is 0, but must be `epochs >= 1`.
    """
