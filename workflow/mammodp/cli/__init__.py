"""Command line: one subcommand per Snakemake rule. ``mammodp <command> --help`` lists options.

Problems the user can fix (bad input, missing file, bad config, full disk) end with one line on
stderr, ``mammodp <command>: error: ...``, and exit status 2. Each output file is written
atomically (a temporary file renamed into place), so no file is ever half-written; when a job
with several outputs fails, Snakemake deletes the ones it did write, so a rerun trusts none.

One module per stage, named like its rule file (``data``, ``synthesis``, ``fidelity``,
``classify``, ``audit``, ``report``); each lists its subcommands in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys

from mammodp.errors import UserError

from . import audit, classify, data, fidelity, report, synthesis

STAGES = (data, synthesis, fidelity, classify, audit, report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mammodp", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        for add_command in stage.COMMANDS:
            add_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    # pydicom logs a decoder's traceback before raising; the error we raise says it in one line.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    _exit_through_python_on_sigterm()
    try:
        args.func(args)
    except UserError as e:
        print(f"mammodp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        # An input that vanished between Snakemake's check and the read: one line, not a trace.
        print(
            f"mammodp {args.command}: error: {e.filename or e}: no such file; check the path in "
            "the config, or rebuild it (snakemake --forcerun <the rule that writes it>).",
            file=sys.stderr,
        )
        return 2
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        print(
            f"mammodp {args.command}: error: cannot write {e.filename or 'an output'}: "
            f"{e.strerror}. Free disk space (or fix the folder's permissions) and rerun; "
            "nothing partial was kept.",
            file=sys.stderr,
        )
        return 2
    return 0


WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES}
_fork_hook_installed = False


def _exit_through_python_on_sigterm() -> None:
    """SLURM's time limit and scancel send SIGTERM: exit through Python so that ``finally``
    blocks and atexit handlers release this job's GPU or download slot locks. Forked workers
    (frd-score's and our process pools) get the default action back: a pool terminates its
    workers with SIGTERM, and a worker that raised SystemExit inside the pool's queue lock could
    hang the pool's shutdown (seen with frd-score's pool)."""
    global _fork_hook_installed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not _fork_hook_installed:  # once per process (tests call main() in-process, often)
        os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
        _fork_hook_installed = True
