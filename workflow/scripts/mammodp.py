"""The rules' entry point: runs the package beside this script (``workflow/mammodp``), so a job
runs this workflow's own code whether the workflow is a checkout, a local module or a remote one
(then this file and the package are Snakemake's source-cache copies). See rules/common.smk."""

import os
import sys
from pathlib import Path

# Thread pools are sized when their library loads (numpy's BLAS comes in with the package's
# first import): size them to the job's --threads (the rule's {threads}) before that, so that
# jobs sharing a machine do not oversubscribe its cores.
if "--threads" in sys.argv[:-1]:
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _n

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammodp.cli import main

if __name__ == "__main__":  # not in the workers a spawn or forkserver process pool starts
    sys.exit(main())
