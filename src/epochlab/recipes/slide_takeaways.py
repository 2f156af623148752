"""Slide 15: what the tour's runs support (epochs, batch size, learning rate), with the numbers.

The seed ends with three reading suggestions. This section ends with advice
computed from the runs the tour just made by :mod:`epochlab.diagnose.advice`
(:func:`advice`: slide 6's curves and the studies of slides 4, 5 and 13),
and with the reading list corrected.
"""

from __future__ import annotations

from typing import Any

from epochlab.diagnose.advice import Advice, advise_history, advise_runs, runs_from_store
from epochlab.recipes.tour import Tour
from epochlab.report.html import Section, Table
from epochlab.store.base import Store

__all__ = ["advice", "slide_15"]

# (where, which study or result, metric, select): the questions slide 15 answers.
_QUESTIONS = (
    ("batch size (MLP, slide 4)", "study4", "val_accuracy", "final"),
    ("learning rate by best validation loss (MLP, slide 5)", "study5", "val_loss", "best"),
    ("learning rate by final validation accuracy (MLP, slide 5)", "study5", "val_accuracy",
     "final"),
    ("epochs and batch size (CNN on digits, slide 13)", "study13", "val_accuracy", "final"),
)


def advice(store: Store, results: dict[str, Any]) -> list[tuple[str, Advice]]:
    """(where it comes from, advice) for slide 6's run and slides 4, 5 and 13's studies."""
    out: list[tuple[str, Advice]] = []
    if "slide6" in results:
        out += [("epochs (MLP, slide 6's curves)", a) for a in advise_history(results["slide6"])]
    for where, key, metric, select in _QUESTIONS:
        if key in results:
            runs = runs_from_store(store, store.runs(results[key]))
            out += [(where, a) for a in advise_runs(runs, metric=metric, select=select)]
    return out


_READING = [
    ["Deep Learning (Goodfellow, Bengio, Courville)", "arXiv 1206.5533",
     "a book (MIT Press, 2016), not on arXiv; free online at the authors' site"],
    ["Efficient BackProp (LeCun, Bottou, Orr, Müller)", "arXiv 1206.5533v2",
     "a chapter of Neural Networks: Tricks of the Trade (Springer, 1998), not on arXiv"],
    ["Practical recommendations for gradient-based training of deep architectures (Bengio)",
     "arXiv 1206.5533v2", "correct: this is arXiv 1206.5533 (2012)"],
]


def slide_15(t: Tour) -> Section:
    items = advice(t.store, t.results)
    return Section(
        "", "The recommendations these runs support for this data and model, each with the "
        "measurements behind it (epochlab.diagnose.advice on the runs above). They are answers "
        "for the seed's MLP on its 1,000 rows and the digits CNN, not rules: run the same "
        "studies on your own model and data.",
        claim=("Three resources for further reading, with arXiv links: 1206.5533, 1206.5533v2, "
               "1206.5533v2."),
        truth=("All three links point to the same paper, Bengio's 'Practical recommendations "
               "for gradient-based training of deep architectures'. The other two are not on "
               "arXiv (see the table; the page links nowhere so that it opens offline)."),
        tables=[Table(["question", "topic", "advice, with the numbers behind it"],
                      [[where, a.topic.replace("_", " "), a.text] for where, a in items],
                      caption="advice from this tour's runs"),
                Table(["the slide lists", "with the link", "where it really is"], _READING,
                      caption="the slide's reading list, corrected")],
    )
