"""The rules' entry point: runs the package beside this script (``workflow/mammodp``), so a job
runs this workflow's own code whether the workflow is a checkout, a local module or a remote one
(then this file and the package are Snakemake's source-cache copies). See rules/common.smk."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammodp.cli import main  # noqa: E402

if __name__ == "__main__":  # not in the workers a spawn or forkserver process pool starts
    sys.exit(main())
