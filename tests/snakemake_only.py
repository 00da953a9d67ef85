"""Run Snakemake's CLI with the workflow's own heavy dependencies unimportable, as in an
interpreter that has only Snakemake: `python tests/snakemake_only.py <snakemake args>`."""

import sys

from snakemake.cli import main  # Snakemake and its plugins (the SLURM plugin imports pandas)

BLOCKED = {"pandas", "numpy", "torch", "torchvision", "timm", "opacus", "cv2", "pydicom"}
BLOCKED |= {"sklearn", "scipy", "matplotlib", "medigan", "frd_score", "radiomics", "SimpleITK"}


class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not in Snakemake's own environment")
        return None


for loaded in list(sys.modules):
    if loaded.split(".")[0] in BLOCKED:
        del sys.modules[loaded]
sys.meta_path.insert(0, Block())
sys.argv = ["snakemake", *sys.argv[1:]]
main()
