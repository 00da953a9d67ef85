"""A stage package's exports, imported on first use (PEP 562). Each rule's conda environment
installs only what its command imports (tests/test_envs.py): reading one module of a stage must
not import the whole stage, e.g. the report reads ``classify.privacy_notes`` without torch."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``exports``: name -> the package's module that defines it. Returns the package's
    ``__getattr__``, ``__dir__`` and ``__all__``."""

    def __getattr__(name: str):
        if name not in exports:  # then `from package import module` imports the submodule
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
