#!/usr/bin/env python3
"""A fake SLURM for tests: sbatch, squeue, sacct, scontrol, sinfo, sacctmgr, sshare and srun in
one script (dispatched on the name it is called by). Jobs run at once on this machine, in the
background; every call is recorded in $FAKE_SLURM_DIR/calls.jsonl."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_DIR"])
ACCOUNT = os.environ.get("FAKE_SLURM_ACCOUNT", "your_account")
PARTITION = os.environ.get("FAKE_SLURM_PARTITION", "your_partition")


def record(tool, argv, **extra):
    with open(STATE / "calls.jsonl", "a") as f:
        f.write(json.dumps({"tool": tool, "argv": argv, **extra}) + "\n")


def option(argv, *names):
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def sbatch(argv):
    wrap = option(argv, "--wrap")
    script = None if wrap else sys.stdin.read()
    jobs = STATE / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    counter = STATE / "counter"
    jobid = int(counter.read_text()) + 1 if counter.exists() else 1000
    counter.write_text(str(jobid))
    name = option(argv, "--job-name", "-J") or "job"
    log = Path((option(argv, "--output", "-o") or "slurm-%j.out").replace("%j", str(jobid)))
    log.parent.mkdir(parents=True, exist_ok=True)
    (jobs / f"{jobid}.name").write_text(name)
    record("sbatch", argv, jobid=jobid, wrap=wrap)
    cpus = option(argv, "--cpus-per-task", "-c") or "1"
    env = {
        **os.environ,
        "SLURM_JOB_ID": str(jobid),
        "SLURM_JOB_NAME": name,
        "SLURM_CPUS_PER_TASK": cpus,
        "SLURM_NTASKS": "1",
    }
    command = wrap if wrap else script
    runner = f"( {command} ) > {shlex.quote(str(log))} 2>&1; echo $? > {jobs}/{jobid}.rc"
    if not wrap:
        (jobs / f"{jobid}.sh").write_text(script)
        runner = (
            f"( sh {jobs}/{jobid}.sh ) > {shlex.quote(str(log))} 2>&1; echo $? > {jobs}/{jobid}.rc"
        )
    subprocess.Popen(
        ["bash", "-c", runner], env=env, start_new_session=True, stdin=subprocess.DEVNULL
    )
    print(jobid)


def states(name):
    jobs = STATE / "jobs"
    for f in sorted(jobs.glob("*.name")) if jobs.exists() else []:
        if name and f.read_text() != name:
            continue
        jobid = f.name.split(".")[0]
        rc = jobs / f"{jobid}.rc"
        if not rc.exists():
            state = "RUNNING"
        else:
            code = rc.read_text().strip()
            state = "COMPLETED" if code == "0" else "FAILED"
        yield jobid, state


def sacct(argv):
    record("sacct", argv)
    fmt = option(argv, "-o", "--format") or ""
    if fmt.lower().startswith("account"):
        print(ACCOUNT)
        return
    for jobid, state in states(option(argv, "--name")):
        print(f"{jobid}|{state}")


def squeue(argv):
    record("squeue", argv)
    for jobid, state in states(option(argv, "--name")):
        print(f"{jobid}|{state}")


def scontrol(argv):
    record("scontrol", argv)
    print("MinJobAge               = 300 sec")


def sinfo(argv):
    record("sinfo", argv)
    print("PARTITION")
    print(f"{PARTITION}*")


def sacctmgr(argv):
    record("sacctmgr", argv)
    print(ACCOUNT)


def srun(argv):
    record("srun", argv)
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        rest.pop(0)
    os.execvp(rest[0], rest)


def main():
    tool = Path(sys.argv[0]).name
    handlers = {
        "sbatch": sbatch,
        "sacct": sacct,
        "squeue": squeue,
        "scontrol": scontrol,
        "sinfo": sinfo,
        "sacctmgr": sacctmgr,
        "sshare": sacctmgr,
        "srun": srun,
        "scancel": lambda argv: record("scancel", argv),
    }
    handlers[tool](sys.argv[1:])


if __name__ == "__main__":
    main()
