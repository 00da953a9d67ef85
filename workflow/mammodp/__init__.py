"""mammodp: the logic behind the Snakemake workflow that reproduces Osuala et al. (2024).

Every Snakemake rule calls one subcommand of ``mammodp`` (see ``cli.py``); the modules are
named after the stage they implement.
"""

__version__ = "0.1.0"

# Label convention everywhere: benign = 1 (positive class), malignant = 0.
BENIGN = 1
MALIGNANT = 0
