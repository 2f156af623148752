"""``python -m epochlab``: the ``epochlab`` command, for environments without its script on PATH."""

from epochlab.cli import main

if __name__ == "__main__":
    main(prog_name="epochlab")
