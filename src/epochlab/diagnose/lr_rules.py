"""The names of :func:`~epochlab.diagnose.lr_find.lr_find`'s suggestion rules, in a module
light enough for the CLI's ``--help`` (``lr_find`` itself loads torch).

Example:
    >>> RULES
    ('steepest', 'minimum', 'valley')
"""

RULES = ("steepest", "minimum", "valley")
RULE_TEXT = {
    "valley": "halfway along the longest descent (fastai)",
    "steepest": "steepest descent vs log10(lr), before the minimum",
    "minimum": "a tenth of the rate at the lowest loss",
}
