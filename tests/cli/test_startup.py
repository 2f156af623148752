"""`epochlab --help`, `--version`, a mistyped command, `runs` and `report` answer without loading torch."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

from click.testing import CliRunner

from epochlab.cli import COMMANDS, main


def test_help_and_version_do_not_import_torch_sklearn_or_matplotlib():
    # They took 2.5 s when the package imported everything (torch 0.8 s, scikit-learn 0.6 s).
    code = ("import sys\nfrom epochlab.cli import main\n"
            "for args in (['--help'], ['--version'], ['nosuch']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "epochlab, version" in out.stdout and "No such command 'nosuch'" in out.stderr


def test_training_commands_answer_help_and_bad_options_without_loading_torch():
    # `epochlab fit --help` (or a mistyped option) took 2.1 s when the command modules imported torch, scikit-learn
    # and matplotlib at the top; now 0.12 s. Their functions import those when they run.
    commands = ("fit", "sweep", "tune", "lr-find", "batch-size")
    code = ("import sys\nfrom epochlab.cli import main\n"
            f"for name in {commands!r}:\n"
            "    for args in ([name, '--help'], [name, '--no-such-flag']):\n"
            "        try:\n            main(args)\n        except SystemExit:\n            pass\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]
    assert out.stdout.count("Usage: ") == len(commands)
    assert out.stderr.count("No such option '--no-such-flag'") == len(commands), out.stderr


def test_runs_lists_a_store_without_loading_torch(tmp_path):
    # `epochlab runs` reads SQLite and prints a table: 0.16 s instead of 2 s.
    from epochlab.store import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    rid = store.add_run(store.create_study("demo"), "a", {"lr": 0.1})
    store.finish_run(rid, "completed", {"total_updates": 5}, [{"epoch": 0, "val_loss": 0.5}])
    store.close()
    code = ("import sys\nfrom epochlab.cli import main\ntry:\n"
            f"    main(['runs', '--store', {str(tmp_path / 's.db')!r}])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "completed" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]"


def test_report_writes_its_figures_without_loading_torch(tmp_path):
    # `epochlab report` reads runs and draws: 0.56 s (matplotlib) instead of 2.3 s.
    from epochlab.store import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    sid = store.create_study("demo")
    for lr, acc in ((0.1, 0.7), (0.01, 0.8)):
        rid = store.add_run(sid, f"lr={lr}", {"lr": lr, "epochs": 2})
        store.finish_run(rid, "completed", {"total_updates": 4},
                         [{"epoch": 0, "val_accuracy": acc - 0.1, "val_loss": 1.0},
                          {"epoch": 1, "val_accuracy": acc, "val_loss": 0.5}])
    store.close()
    code = ("import sys\nfrom epochlab.cli import main\ntry:\n"
            f"    main(['report', '--store', {str(tmp_path / 's.db')!r}, '--study', 'demo', "
            f"'--out', {str(tmp_path / 'out')!r}, '--html'])\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
    assert (tmp_path / "out" / "index.html").exists() and (tmp_path / "out" / "results.csv").exists()


def test_the_help_listing_is_each_commands_own_help():
    # COMMANDS carries each command's first help paragraph so --help need not import it.
    for name, (module, attribute, summary) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert command.name == name
        assert inspect.cleandoc(command.help).split("\n\n")[0].replace("\n", " ") == summary
    listing = CliRunner().invoke(main, ["--help"]).output
    for name in COMMANDS:
        assert f"  {name} " in listing
    run = CliRunner().invoke(main, ["fit", "--help"])  # imported on demand
    assert run.exit_code == 0 and "--epochs" in run.output


def test_the_package_loads_its_names_on_first_use():
    import epochlab as el

    assert "fit" in dir(el) and callable(el.fit) and el.data.synthetic is not None
    assert el.EarlyStopping.__module__ == "epochlab.callbacks.early_stopping"
    for name in el.__all__:
        assert getattr(el, name) is not None
    try:
        el.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("a missing name must raise AttributeError")


def test_every_module_is_reachable_as_an_attribute_after_import_epochlab():
    # `el.train.data.split_indices` worked when the package imported everything; a
    # benchmark used it. Checked in a fresh process, where nothing else imported them.
    code = (
        "import pkgutil, epochlab\n"
        "missing = []\n"
        "for m in pkgutil.walk_packages(epochlab.__path__, 'epochlab.'):\n"
        "    if m.name.endswith('__main__') or '._' in m.name:\n"
        "        continue\n"
        "    obj = epochlab\n"
        "    try:\n"
        "        for part in m.name.split('.')[1:]:\n"
        "            obj = getattr(obj, part)\n"
        "    except AttributeError:\n"
        "        missing.append(m.name)\n"
        "print(missing)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
