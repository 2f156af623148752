"""``python -m epochlab.train._torchrun TORCHRUN-ARGS``: torchrun, a failed process's exit code
passed on without torchrun's own report (see :func:`epochlab.train.distributed.run_torchrun`)."""

import sys

from epochlab.train.distributed import run_torchrun

if __name__ == "__main__":
    sys.exit(run_torchrun(sys.argv[1:]))
