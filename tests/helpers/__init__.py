"""Helpers shared by the tests: the repository's paths and configs (``configs``) and running
Snakemake in a scratch directory (``snakemake``). Fixtures live in ``tests/conftest.py``."""
