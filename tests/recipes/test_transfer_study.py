"""slide 10 done right: a pretrained backbone measured against training from scratch."""

from __future__ import annotations

from epochlab.recipes.transfer import epochs_to_reach, transfer_study


def test_small_transfer_study_reports_curves_counts_and_a_head_start():
    r = transfer_study(epochs=2, pretrain_epochs=3, fine_tune_epochs=1, max_train=250,
                       target_accuracy=0.5, seed=0)
    transfer, scratch = r["transfer"], r["scratch"]
    assert len(transfer["test_accuracy"]) == len(scratch["test_accuracy"]) == 3
    assert len(r["pretrain"]["test_accuracy"]) == 3
    assert (transfer["trainable"], transfer["frozen"]) == (37_253, 55_744)
    assert scratch["frozen"] == 0 and transfer["fine_tune_from"] == 3
    # Pretrained features on digits 0-4 give digits 5-9 a head start over random ones.
    assert transfer["test_accuracy"][0] > scratch["test_accuracy"][0] + 0.1
    assert transfer["epochs_to_target"] == epochs_to_reach(transfer["test_accuracy"], 0.5)
    assert [len(h.epochs) for h in transfer["histories"]] == [2, 1]
    assert scratch["histories"][0].params["phase"] == "scratch"


def test_epochs_to_reach_is_one_based_and_none_when_never_reached():
    assert epochs_to_reach([0.9, 0.95], 0.95) == 2
    assert epochs_to_reach([0.9, 0.94], 0.95) is None

