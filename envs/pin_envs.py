"""Pin every package of the rule families' conda environments (workflow/envs/*.yaml) to the
version in envs/requirements.lock: a file's own pip list (above the marker line) stays as written;
below the marker this writes everything pip would install for it (the requirement closure, read
from the installed distributions' metadata), each at the lock's version.

    .venv/bin/python envs/pin_envs.py          # rewrite the environment files
    .venv/bin/python envs/pin_envs.py --check  # exit 1 if any is out of date (tests run this)
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "envs" / "requirements.lock"
ENVS = ROOT / "workflow" / "envs"
MARKER = "      # requirements of the above, pinned from envs/requirements.lock (envs/pin_envs.py)"


def lock_pins() -> dict[str, tuple[str, str]]:
    """canonical name -> (name as locked, version)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = (name, version)
    return pins


def requirements(dist: str) -> set[str]:
    """What pip installs for ``dist`` (no extras), as canonical names."""
    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        sys.exit(f"{dist}: not installed here; run `make setup` first")
    return {
        canonicalize_name(r.name)
        for r in map(Requirement, reqs)
        if r.marker is None or r.marker.evaluate({"extra": ""})
    }


def closure(direct: set[str]) -> set[str]:
    seen, todo = set(), sorted(direct)
    while todo:
        dist = todo.pop()
        if dist not in seen:
            seen.add(dist)
            todo += sorted(requirements(dist))
    return seen - direct


def pinned(text: str, pins: dict[str, tuple[str, str]]) -> str:
    """The environment file ``text`` with its generated part rewritten."""
    head = text.split(MARKER + "\n")[0].rstrip("\n").splitlines()
    pip_at = next(i for i, line in enumerate(head) if line.strip() == "- pip:")
    direct = {canonicalize_name(line.split("- ")[1].split("==")[0]) for line in head[pip_at + 1 :]}
    extra = sorted(closure(direct), key=lambda n: pins[n][0].lower())
    lines = [f"      - {pins[n][0]}=={pins[n][1]}" for n in extra]
    return "\n".join(head + [MARKER] + lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report stale files, change nothing")
    args = p.parse_args()
    pins, stale = lock_pins(), []
    for env in sorted(ENVS.glob("*.yaml")):
        text = env.read_text()
        new = pinned(text, pins)
        if new != text:
            stale.append(env.name)
            if not args.check:
                env.write_text(new)
    if stale and args.check:
        print(f"out of date: {', '.join(stale)}; run envs/pin_envs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
