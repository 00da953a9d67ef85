"""One GPU per concurrent GPU job on a multi-GPU machine.

Snakemake's local scheduler caps the number of concurrent GPU jobs (``--resources gpu=N``) but
does not tell a job which device to use. Each GPU job therefore claims a device with a lock file
(``<lock dir>/gpu<k>@<host>.lock``, holding host and pid: a device belongs to one machine, so
machines that share the folder never block each other), exports it as ``CUDA_VISIBLE_DEVICES``
before CUDA starts, and releases it on exit. A lock is reclaimed only when its holder is known
dead: this host, and no such process (a killed job). Where a scheduler already chose the device
(``CUDA_VISIBLE_DEVICES`` set, as SLURM does), nothing is claimed. Other slots shared by every
machine (the TCIA connections) use ``<kind><k>.lock``; a lock held by another host cannot be
checked, so it is reported (in the log, and in the error at the timeout), never reclaimed.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import time
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = ".snakemake/gpu-locks"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(lock: Path) -> tuple[str, int] | None:
    try:
        host, pid = lock.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None  # being written right now


def _stale(lock: Path) -> bool:
    """Known dead: held by a process of this host that no longer exists."""
    holder = _holder(lock)
    return holder is not None and holder[0] == socket.gethostname() and not _alive(holder[1])


def lock_path(lock_dir: str | Path, kind: str, device: int) -> Path:
    suffix = f"@{socket.gethostname()}" if kind == "gpu" else ""
    return Path(lock_dir) / f"{kind}{device}{suffix}.lock"


def _foreign(locks: list[Path]) -> list[str]:
    """The locks held by other hosts, as 'file (host pid)'."""
    me = socket.gethostname()
    out = []
    for lock in locks:
        holder = _holder(lock)
        if holder is not None and holder[0] != me:
            out.append(f"{lock.name} ({holder[0]} pid {holder[1]})")
    return out


def claim(
    devices: list[int],
    lock_dir: str | Path = DEFAULT_LOCK_DIR,
    timeout: float = 3600.0,
    poll: float = 0.5,
    kind: str = "gpu",
) -> int:
    """Claim a free device of ``devices``; wait (up to ``timeout`` s) while all are taken.
    Any other limited slot works the same way (``kind`` names its lock files).
    The scan runs under an exclusive lock on the directory, so checking, reclaiming and claiming
    are one step for every process on this machine."""
    import fcntl

    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    deadline = time.monotonic() + timeout
    reported = False
    while True:
        with open(lock_dir / ".mutex", "w") as mutex:
            fcntl.flock(mutex, fcntl.LOCK_EX)
            for device in devices:
                lock = lock_path(lock_dir, kind, device)
                if lock.exists():
                    if not _stale(lock):
                        continue
                    log.warning("reclaiming the stale lock %s (%s)", lock, lock.read_text())
                lock.write_text(me)
                return device
        foreign = _foreign([lock_path(lock_dir, kind, d) for d in devices])
        if foreign and not reported:
            log.warning(
                "waiting for %s slots held on other hosts, which cannot be checked from here: %s",
                kind,
                ", ".join(foreign),
            )
            reported = True
        if time.monotonic() > deadline:
            what, hint = (
                ("GPU", "run Snakemake with --resources gpu=<number of GPUs>")
                if kind == "gpu"
                else (
                    f"{kind} slot",
                    f"wait for the other jobs, raise the limit in the config, or delete the "
                    f"{kind}*.lock files there if no such job is running",
                )
            )
            held = f"; held on other hosts: {', '.join(foreign)}" if foreign else ""
            raise UserError(
                f"no free {what} among {devices} after {timeout:.0f} s (locks in {lock_dir}"
                f"{held}); {hint}"
            )
        time.sleep(poll)


def release(device: int, lock_dir: str | Path = DEFAULT_LOCK_DIR, kind: str = "gpu") -> None:
    lock = lock_path(lock_dir, kind, device)
    with contextlib.suppress(OSError):
        if lock.read_text().split()[-1] == str(os.getpid()):
            lock.unlink()


def visible_device_count() -> int:
    """GPUs on this machine, counted without starting CUDA in this process (which would fix
    the visible devices before CUDA_VISIBLE_DEVICES is set)."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def assign(lock_dir: str | Path = DEFAULT_LOCK_DIR, devices: list[int] | None = None) -> int | None:
    """For a GPU job: claim a device and export it as CUDA_VISIBLE_DEVICES (released at exit).
    Returns the device, or None when a scheduler already set CUDA_VISIBLE_DEVICES or the machine
    has no GPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    if devices is None:
        devices = list(range(visible_device_count()))
    if not devices:
        return None
    device = claim(devices, lock_dir)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    atexit.register(release, device, lock_dir)
    log.info("using GPU %d (CUDA_VISIBLE_DEVICES=%d)", device, device)
    return device
