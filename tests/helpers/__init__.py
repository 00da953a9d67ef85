"""Helpers shared by the tests: the repository's paths and configs (``configs``), running
Snakemake in a scratch directory (``snakemake``), tiny models (``models``) and classifier jobs
(``jobs``), DICOM fixtures (``dicom``), run tables (``runs``) and the import graph of the package
and its rules (``rule_imports``). Fixtures live in ``tests/conftest.py``."""
