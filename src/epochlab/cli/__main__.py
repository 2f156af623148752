"""``python -m epochlab.cli``: the ``epochlab`` command (torchrun starts it so)."""

from epochlab.cli import main

if __name__ == "__main__":
    main()
