"""mammodp: the logic behind the Snakemake workflow that reproduces Osuala et al. (2024).

Every Snakemake rule calls one subcommand of ``mammodp`` (``cli/``, one module per rule file).
The stages are subpackages named like their rule files, in the DAG's order: ``data``,
``synthesis``, ``fidelity``, ``classify``, ``audit``, ``report``; none imports a later one
(tests/test_architecture.py). The modules at this level are the helpers they share: ``config``,
``errors``, ``fileio``, ``images``, ``training_state``, ``gpu``, ``progress``, ``plotting``,
``labels``, ``study_settings``, ``provenance`` and ``exports``.
"""

__version__ = "0.1.0"

# Label convention everywhere: benign = 1 (positive class), malignant = 0.
BENIGN = 1
MALIGNANT = 0
