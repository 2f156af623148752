"""Slides 4, 5, 8, 9, 13 and 14: studies over a setting, run as sweeps and recorded as studies.

Every study goes through ``el.sweep(SweepSpec(...), store)``, so its runs are
in the store like any sweep's and ``epochlab report --study NAME --html``
draws the same figures. Figures come from :mod:`epochlab.report.study`.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
from torch import nn

import epochlab as el
from epochlab.recipes.tour import Tour
from epochlab.report.curves import metric_label
from epochlab.report.figures import integer_ticks, new_figure
from epochlab.report.heatmap import plot_heatmap
from epochlab.report.html import Section, Table
from epochlab.report.study import heatmap_grid, plot_metric_by, study_rows
from epochlab.sweeps.spec import canonical_schedule
from epochlab.train.loop import fit
from epochlab.train.runtime import manual_seed

__all__ = ["slide_04", "slide_05", "slide_08", "slide_09", "slide_13", "slide_14"]


def _by(rows: list[dict[str, Any]], setting: str, col: str) -> dict[Any, list[float]]:
    out: dict[Any, list[float]] = {}
    for r in rows:
        v = r.get(col)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.setdefault(r[setting], []).append(float(v))
    return out


def _mean_range(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def slide_04(t: Tour) -> Section:
    z = t.sizes
    name = t.study(4, "batch-size")
    spec = el.SweepSpec(data="synthetic", model="mlp", epochs=(z.batch_epochs,),
                        batch_size=(16, 32, 64, 128), seed=z.seeds, validation_split=0.2,
                        name=name)
    # Not fused, so each run's time per epoch is its own.
    el.sweep(spec, t.store, progress=False, fuse=False)
    rows = study_rows(t.store, name)
    t.results["slide4"], t.results["study4"] = rows, name
    runs = {r.id: r for r in t.store.runs(name)}
    acc = _by(rows, "batch_size", "val_accuracy_final")
    table, secs_per_epoch, ipe = [], {}, {}
    for bs in sorted(acc):
        mine = [r for r in rows if r["batch_size"] == bs]
        times = [row["time"] for r in mine for row in t.store.epochs(r["run"]) if "time" in row]
        secs_per_epoch[bs] = statistics.median(times)
        ipe[bs] = runs[mine[0]["run"]].summary["iterations_per_epoch"]
        table.append([bs, ipe[bs], ipe[bs] * z.batch_epochs, _mean_range(acc[bs]),
                      f"{secs_per_epoch[bs] * 1000:.1f}"])
    spread = max(max(v) - min(v) for v in acc.values())
    n_val = runs[rows[0]["run"]].summary["n_val"]
    means = {bs: statistics.fmean(v) for bs, v in acc.items()}
    best = max(means, key=means.get)
    fig_curves = plot_metric_by(t.store, name, "batch_size", "val_accuracy",
                                title="Validation accuracy per epoch, by batch size")
    fig_cost, (a1, a2) = new_figure(9, 3.6, ncols=2)
    xs = [str(b) for b in sorted(acc)]
    a1.bar(xs, [ipe[b] for b in sorted(acc)], color="#4c72b0", label="iterations per epoch")
    a1.set(title="Updates per epoch", xlabel="batch size (rows)", ylabel="iterations per epoch")
    a2.bar(xs, [secs_per_epoch[b] * 1000 for b in sorted(acc)], color="#dd8452",
           label="median over runs and epochs")
    a2.set(title="Time per epoch (one CPU thread)", xlabel="batch size (rows)",
           ylabel="time per epoch (ms)")
    for a in (a1, a2):
        a.grid(alpha=0.3, axis="y")
        a.legend(fontsize=8)
    fig_upd, (ax,) = new_figure(8, 4)
    for bs in sorted(acc):
        mine = [r for r in rows if r["batch_size"] == bs]
        curves = [t.store.epochs(r["run"]) for r in mine]
        n = min(len(c) for c in curves)
        ax.plot([curves[0][i]["updates"] for i in range(n)],
                [statistics.fmean(c[i]["val_accuracy"] for c in curves) for i in range(n)],
                marker="o", ms=3, label=f"batch {bs}")
    ax.set(title="Validation accuracy against optimizer updates made", xscale="log",
           xlabel="optimizer updates (cumulative, log scale)",
           ylabel=metric_label("val_accuracy"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Section(
        "", f"The seed's MLP trained {z.batch_epochs} epochs at batch sizes 16, 32, 64 and 128, "
        f"{len(z.seeds)} weight seeds each (mean and range over seeds): validation accuracy, "
        "updates and time per epoch, and accuracy against the number of updates made.",
        claim=("Smaller batches give more frequent but noisier updates, larger batches more "
               "stable gradients but slower convergence; one run per batch size and its last "
               "epoch's validation accuracy show it."),
        truth=(f"Per epoch a batch of 128 makes {ipe[128]} updates against {ipe[16]} for a batch "
               "of 16: after a fixed number of epochs the large batch has simply been updated "
               "less often, which the third figure shows by plotting accuracy against updates "
               "made instead of epochs. A larger batch also costs less time per epoch here. The "
               f"best mean validation accuracy is batch {best} ({means[best]:.4f}); seeds alone move a "
               f"batch size's accuracy by up to {spread:.4f} ({n_val} validation rows: one row is "
               f"{1 / n_val:.4f}), so one run per batch size cannot rank them."),
        facts=[("best mean validation accuracy", f"batch {best}: {means[best]:.4f}"),
               ("largest spread between seeds", f"{spread:.4f}"), ("study", name)],
        tables=[Table(["batch size", "iterations / epoch", "updates in all",
                       "val accuracy, mean (range over seeds)", "ms / epoch"], table)],
        figures=[(fig_curves, "validation accuracy per epoch by batch size"),
                 (fig_cost, "iterations and time per epoch by batch size"),
                 (fig_upd, "validation accuracy against updates, by batch size")],
        code=f"epochlab sweep --data synthetic --epochs {z.batch_epochs} "
             "--batch-size 16,32,64,128 --seed " + ",".join(map(str, z.seeds)),
    )


def slide_05(t: Tour) -> Section:
    z = t.sizes
    name = t.study(5, "learning-rate")
    lrs = (0.1, 0.01, 0.001, 0.0001)
    spec = el.SweepSpec(data="synthetic", model="mlp", epochs=(z.lr_epochs,), lr=lrs,
                        seed=z.seeds, validation_split=0.2, name=name)
    result = el.sweep(spec, t.store, progress=False)
    fused = [task for task in result.executed.tasks if task.fused]
    rows = study_rows(t.store, name)
    t.results["slide5"], t.results["study5"] = rows, name
    acc = _by(rows, "lr", "val_accuracy_final")
    best_acc = _by(rows, "lr", "val_accuracy_best")
    vloss = _by(rows, "lr", "final_val_loss")
    first = {}
    for lr in lrs:
        mine = [r for r in rows if r["lr"] == lr]
        curves = [[row["val_accuracy"] for row in t.store.epochs(r["run"])] for r in mine]
        mean = np.mean(np.array(curves), axis=0)
        first[lr] = next(i + 1 for i, v in enumerate(mean) if v >= 0.98 * mean.max())
    table = [[lr, _mean_range(acc[lr]), _mean_range(best_acc[lr]), _mean_range(vloss[lr]),
              first[lr]] for lr in lrs]
    n_fused = sum(len(task.members) for task in fused)
    mean_acc = {lr: statistics.fmean(v) for lr, v in acc.items()}
    top = max(mean_acc, key=mean_acc.get)
    return Section(
        "", f"The MLP trained {z.lr_epochs} epochs with Adam at learning rates 0.1, 0.01, 0.001 "
        f"and 0.0001, {len(z.seeds)} seeds each. The {n_fused} runs trained fused: one "
        "vectorized model with a learning rate per member, each member equal to training it "
        "alone with fit.",
        claim=("A high learning rate converges quickly but may overshoot; a low one needs more "
               "epochs."),
        truth=(f"Right, and measured: the mean validation accuracy curve reaches 98% of its own best at epoch "
               f"{first[0.1]} (lr 0.1), {first[0.01]} (0.01), {first[0.001]} (0.001) and "
               f"{first[0.0001]} (0.0001). What the slide's last-epoch accuracy hides is the "
               f"validation loss: at lr 0.1 it ends at {_mean_range(vloss[0.1])}, against "
               f"{_mean_range(vloss[0.001])} at 0.001 (overconfident, overfitted predictions). "
               f"After {z.lr_epochs} epochs the best mean final validation accuracy is lr "
               f"{top:g}'s ({mean_acc[top]:.4f}): the faster rates have overfitted by then."),
        facts=[("plan", result.plan.describe().splitlines()[0]),
               ("fused tasks", f"{len(fused)} task(s), {n_fused} runs"), ("study", name)],
        tables=[Table(["learning rate", "val accuracy at the end", "best val accuracy",
                       "val loss at the end", "epoch reaching 98% of its best"], table,
                      caption="mean (range over seeds)")],
        figures=[(plot_metric_by(t.store, name, "lr", "val_accuracy",
                                 title="Validation accuracy per epoch, by learning rate"),
                  "validation accuracy per epoch by learning rate"),
                 (plot_metric_by(t.store, name, "lr", "val_loss",
                                 title="Validation loss per epoch, by learning rate"),
                  "validation loss per epoch by learning rate")],
        notes=["Fused: " + result.plan.describe().replace("\n", " ")],
        code=f"epochlab sweep --data synthetic --epochs {z.lr_epochs} --lr 0.1,0.01,0.001,0.0001",
    )


SLIDE_SCHEDULE = "exponential:decay_steps=1000,decay_rate=0.96,staircase=true"


def slide_08(t: Tour) -> Section:
    z = t.sizes
    name = t.study(8, "schedules")
    ipe = 20  # 640 training rows / 32
    schedules = {
        "constant": "constant",
        "the slide's: exponential, staircase, decay every 1000 updates": SLIDE_SCHEDULE,
        f"exponential, x0.8 every epoch ({ipe} updates)":
            f"exponential:decay_steps={ipe},decay_rate=0.8,staircase=true",
        "step: x0.5 every 5 epochs": "step:factor=0.5,every_epochs=5",
        "cosine to 0": "cosine",
        "one-cycle": "one_cycle",
    }
    spec = el.SweepSpec(data="synthetic", model="mlp", epochs=(z.schedule_epochs,), lr=(0.1,),
                        schedule=tuple(schedules.values()), seed=z.seeds, validation_split=0.2,
                        name=name)
    result = el.sweep(spec, t.store, progress=False)
    rows = study_rows(t.store, name, "val_loss", "min")
    label_of = {canonical_schedule(v): k for k, v in schedules.items()}
    fig_lr, (ax,) = new_figure(8, 4)
    seen = set()
    for r in t.store.runs(name):
        sched = r.settings["schedule"]
        if sched in seen:
            continue
        seen.add(sched)
        lr = t.store.iterations(r.id)["lr"]
        ax.plot(range(1, len(lr) + 1), lr, lw=1.4, label=label_of.get(sched, sched),
                ls="--" if sched == canonical_schedule(SLIDE_SCHEDULE) else "-")
    total = z.schedule_epochs * ipe
    ax.set(title=f"Learning rate used at each of the {total} updates (initial rate 0.1, Adam)",
           xlabel="iteration (optimizer update)", ylabel="learning rate (per update)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    loss = _by(rows, "schedule", "val_loss_final")
    bestl = _by(rows, "schedule", "val_loss_best")
    acc = _by(rows, "schedule", "final_val_accuracy")
    table = [[label_of.get(s, s), _mean_range(loss[s]), _mean_range(bestl[s]), _mean_range(acc[s])]
             for s in loss]
    slide_c = canonical_schedule(SLIDE_SCHEDULE)
    const = [r for r in rows if r["schedule"] == "constant"]
    same = all(
        t.store.epochs(a["run"]) and [x.get("val_loss") for x in t.store.epochs(a["run"])]
        == [x.get("val_loss") for x in t.store.epochs(b["run"])]
        for a in const for b in rows if b["schedule"] == slide_c and b["seed"] == a["seed"])
    means = {s: statistics.fmean(v) for s, v in loss.items()}
    best_s = min(means, key=means.get)
    fig_loss = plot_metric_by(t.store, name, "schedule", "val_loss", names=label_of,
                              title="Validation loss per epoch, by schedule")
    return Section(
        "", f"The MLP trained {z.schedule_epochs} epochs (batch 32: {total} updates) with Adam "
        "from a learning rate of 0.1 under six schedules, the slide's among them; the first "
        "figure is the rate actually used at every update, as recorded by the loop.",
        claim=("ExponentialDecay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True) starts "
               "high and gradually lowers the learning rate during training."),
        truth=(f"The run makes only {total} updates ({z.schedule_epochs} epochs x {ipe}), and "
               "the staircase drops the rate first at update 1000: the whole run trains at a "
               "constant 0.1. Its curves are identical to the constant schedule's"
               f" ({'bit for bit' if same else 'NOT identical: see the table'}). Decay steps must "
               "be counted in updates of this run. Of the six, the lowest final validation loss "
               f"here is {label_of.get(best_s, best_s)}'s ({means[best_s]:.4f}, against "
               f"{means['constant']:.4f} at a constant rate)."),
        facts=[("updates in the run", total), ("the slide's first decay", "update 1000"),
               ("plan", result.plan.describe().splitlines()[0]), ("study", name)],
        tables=[Table(["schedule", "val loss at the end", "best val loss", "val accuracy at the end"],
                      table, caption="mean (range over seeds)")],
        figures=[(fig_lr, "learning rate per update for each schedule"),
                 (fig_loss, "validation loss per epoch by schedule")],
        code=(f"epochlab fit --data synthetic --epochs {z.schedule_epochs} --lr 0.1 "
              "--schedule exponential:decay_steps=1000,decay_rate=0.96,staircase=true"),
    )


def _slide_bn_model() -> nn.Module:
    # The slide's model exactly: Dense -> BatchNorm with no activation anywhere: linear.
    return nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.Linear(64, 32),
                         nn.BatchNorm1d(32), nn.Linear(32, 1))


def slide_09(t: Tour) -> Section:
    z = t.sizes
    name = t.study(9, "batch-norm")
    spec = el.SweepSpec(data="synthetic", model="mlp", epochs=(z.bn_epochs,),
                        batch_norm=(False, True), seed=z.seeds, validation_split=0.2, name=name)
    el.sweep(spec, t.store, progress=False)
    d = t.synthetic
    linear_name = t.study(9, "batch-norm-slide-model")
    slide_runs = []
    for seed in z.seeds:
        manual_seed(seed)
        h = fit(_slide_bn_model(), d.train, epochs=z.bn_epochs, batch_size=32,
                validation_split=0.2, seed=seed, verbose=0)
        t.record(linear_name, f"seed {seed}", h, {
            "data": "synthetic", "model": "the slide's Dense-BatchNorm stack, no activation",
            "epochs": z.bn_epochs, "batch_size": 32, "lr": 1e-3, "seed": seed,
            "validation_split": 0.2})
        slide_runs.append(h)
    from sklearn.linear_model import LogisticRegression

    logreg = LogisticRegression(max_iter=1000).fit(d.x_train, d.y_train).score(d.x_test, d.y_test)
    rows = study_rows(t.store, name)
    fig, (a1, a2) = new_figure(11, 4, ncols=2)
    groups: dict[str, list[list[dict]]] = {"MLP without batch norm": [],
                                           "MLP with batch norm (Linear-BN-ReLU)": []}
    for r in rows:
        key = "MLP with batch norm (Linear-BN-ReLU)" if r["batch_norm"] else "MLP without batch norm"
        groups[key].append(t.store.epochs(r["run"]))
    groups["the slide's model (Linear-BN, no activation)"] = [h.epochs for h in slide_runs]
    finals = {}
    for label, curves in groups.items():
        for ax, metric in ((a1, "loss"), (a2, "val_accuracy")):
            m = np.mean([[row[metric] for row in c] for c in curves], axis=0)
            ax.plot(range(1, len(m) + 1), m, marker="o", ms=2.5, label=label)
        finals[label] = statistics.fmean(c[-1]["val_accuracy"] for c in curves)
    a1.set(title="Training loss per epoch (mean over seeds)", xlabel="epoch",
           ylabel=metric_label("loss", slide_runs[0]))
    a2.set(title="Validation accuracy per epoch (mean over seeds)", xlabel="epoch",
           ylabel=metric_label("val_accuracy"))
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
        integer_ticks(a)
    labels = list(groups)
    return Section(
        "", f"Training loss and validation accuracy over {z.bn_epochs} epochs for the MLP "
        "without batch norm, with batch norm placed correctly (Linear, BatchNorm, ReLU), and "
        f"the slide's own model; means over {len(z.seeds)} seeds.",
        claim=("Dense(64) -> BatchNormalization -> Dense(32) -> BatchNormalization -> "
               "Dense(1, sigmoid) shows what batch normalization does to the epochs needed, "
               "compared with the model of the previous slide."),
        truth=("The slide's model has no activation between its layers: at inference it is a "
               "single linear map followed by a sigmoid, i.e. logistic regression "
               f"(scikit-learn's reaches test accuracy {logreg:.4f}; the slide's model "
               f"{finals[labels[2]]:.4f} validation accuracy, the MLP with batch norm "
               f"{finals[labels[1]]:.4f}). Its 'without' curve is also slide 8's model, trained "
               "at a learning rate of 0.1, so two things change at once. Here only batch norm "
               "changes."),
        facts=[(f"final validation accuracy: {k}", f"{v:.4f}") for k, v in finals.items()]
        + [("logistic regression, test accuracy", f"{logreg:.4f}"),
           ("studies", f"{name}, {linear_name}")],
        figures=[(fig, "training loss and validation accuracy with and without batch norm")],
        notes=["Each model's seeds trained fused: with batch norm too, each member "
               "normalizing over its own batch and keeping its own running statistics, "
               "as fit does."],
        code=f"epochlab sweep --data synthetic --epochs {z.bn_epochs} --batch-norm on,off",
    )


def _grid(t: Tour) -> tuple[str, list[dict[str, Any]], Any]:
    if "slide13" in t.results:
        return t.results["slide13"]
    z = t.sizes
    name = t.study(13, "grid")
    spec = el.SweepSpec(data="digits", model="cnn_small", epochs=z.grid_epochs,
                        batch_size=z.grid_batch_sizes, validation_split=0.2,
                        data_options={"test_size": z.grid_digits_test_size}, name=name)
    result = el.sweep(spec, t.store, progress=False)
    rows = study_rows(t.store, name)
    t.results["slide13"] = (name, rows, result)
    t.results["study13"] = name
    return t.results["slide13"]


def slide_13(t: Tour) -> Section:
    name, rows, result = _grid(t)
    z = t.sizes
    lo, hi = min(z.grid_epochs), max(z.grid_epochs)
    plan = result.plan
    best_final = max(rows, key=lambda r: (r["val_accuracy_final"], -r["total_updates"]))
    best_slide = max(rows, key=lambda r: (r["val_accuracy_best"], -r["total_updates"]))
    table = [[r["epochs"], r["batch_size"], r["val_accuracy_final"], r["val_accuracy_best"],
              r["val_accuracy_best_epoch"], r.get("test_accuracy"),
              "trained" if r["shared_from"] is None else f"read off run {r['shared_from']}"]
             for r in sorted(rows, key=lambda r: (r["batch_size"], r["epochs"]))]
    fig = plot_metric_by(t.store, name, "batch_size", "val_accuracy",
                         title="Validation accuracy per epoch of the trained runs; "
                         f"read out at epochs {', '.join(map(str, z.grid_epochs))}")
    ax = fig.axes[0]
    for e in z.grid_epochs:
        ax.axvline(e, color="grey", lw=0.8, ls=":", label=None)
    ax.plot([], [], color="grey", lw=0.8, ls=":", label="read-out epochs")
    ax.legend(fontsize=8)
    return Section(
        "", f"The seed's grid: epochs {list(z.grid_epochs)} x batch sizes "
        f"{list(z.grid_batch_sizes)} for slide 13's small CNN on the digits (1x28x28). "
        f"{plan.n_configs} configurations, {plan.n_trained} trainings: each batch size trains "
        "once to the largest epoch count and is read out at the smaller ones (epoch-prefix "
        "sharing, exact because the schedule is constant and there is no early stopping).",
        claim=("Nine models must be trained; max(history['val_accuracy']) picks the best "
               "(epochs, batch size), and that validation accuracy is the result."),
        truth=(f"A {lo}-epoch run is the first {lo} epochs of a {hi}-epoch run: "
               f"{plan.n_trained} trainings give all {plan.n_configs} results "
               f"({plan.trained_epochs} epochs trained instead of "
               f"{sum(r['epochs'] for r in rows)}). max() over epochs picks "
               f"epochs={best_slide['epochs']}, batch {best_slide['batch_size']} "
               f"({best_slide['val_accuracy_best']:.4f}), a value reached at epoch "
               f"{best_slide['val_accuracy_best_epoch']}"
               + (": 'epochs' is not what it measured. " if best_slide["val_accuracy_best_epoch"]
                  != best_slide["epochs"] else "; in general it need not be the last one. ")
               + "Ranked by the accuracy of the weights each run ends with: epochs="
               f"{best_final['epochs']}, batch {best_final['batch_size']} "
               f"({best_final['val_accuracy_final']:.4f}; test accuracy "
               f"{best_final.get('test_accuracy', float('nan')):.4f}, on rows no choice "
               "looked at)."),
        facts=[("plan", plan.describe().splitlines()[0]), ("study", name)],
        tables=[Table(["epochs", "batch", "val acc (final)", "val acc (best, slide's max)",
                       "best epoch", "test acc", "how"], table)],
        figures=[(fig, "validation accuracy per epoch of the trained grid runs")],
        code=("epochlab sweep --data digits --model cnn_small --epochs "
              f"{','.join(map(str, z.grid_epochs))} --batch-size "
              f"{','.join(map(str, z.grid_batch_sizes))} --study {name}"),
    )


def slide_14(t: Tour) -> Section:
    name, rows, _ = _grid(t)
    figs = []
    for select, what in (("final", "at the weights each run ends with"),
                         ("best", "as the slide takes it: the max over epochs")):
        grid, xs, ys = heatmap_grid(rows, "batch_size", "epochs", "val_accuracy", "max", select)
        figs.append((plot_heatmap(grid, xs, ys, x_name="batch size (rows)",
                                  y_name="epochs (trained)", metric="validation accuracy (fraction)",
                                  title=f"Validation accuracy, {what}"),
                     f"heatmap of validation accuracy ({select})"))
    g_best, _, _ = heatmap_grid(rows, "batch_size", "epochs", "val_accuracy", "max", "best")
    monotone = bool(np.all(np.diff(g_best, axis=0) >= -1e-12))
    return Section(
        "", "Slide 14's heatmap of the grid, drawn with matplotlib alone: once with the "
        "accuracy of the weights each run ends with, once with the slide's max over epochs. "
        "The framed cell is the best.",
        claim="The heatmap of max(val_accuracy) shows how epochs and batch size affect accuracy.",
        truth=("With max over epochs, a longer run's value includes every shorter run's epochs, "
               "so each column can only rise with the epoch count"
               + (" (it does here)" if monotone else "")
               + ": the 'epochs' axis then measures patience, not the effect of training longer. "
               "The final-weights heatmap shows what training for that many epochs gives. "
               "seaborn is not needed."),
        figures=figs,
        code=f"epochlab report --study {name} --html",
    )
