"""Deployment the way Snakemake users get workflows: as a local module with a prefix beside the
host's own rules, as a remote module fetched over HTTP, and with every file moved by a storage
plugin (a local folder, S3 on a local server). Each runs the tiny demo DAG to the tables and
checks that provenance names the code that ran."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import mammodp

from .helpers.configs import REPO, tiny_config

WORKFLOW = REPO / "workflow"


def _snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-d", str(workdir), "--cores", "2", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, cwd=workdir)


def _host_snakefile(workdir: Path, module_snakefile: str) -> Path:
    """A host workflow: this one as a module under a prefix, plus a rule of the host's own that
    reads a module output and records the environment its shell sees."""
    text = f"""\
configfile: "tiny.yaml"


module mammodp:
    snakefile:
        "{module_snakefile}"
    config:
        config
    prefix:
        "mammo"


use rule * from mammodp as mammodp_*


rule host_summary:
    input:
        rules.mammodp_tables.output.main_csv,
    output:
        "summary.txt",
    shell:
        'wc -l < {{input}} > {{output}}; echo "$PATH" >> {{output}}; '
        'echo "${{{{PYTHONPATH:-}}}}" >> {{output}}'


rule host_all:
    default_target: True
    input:
        rules.host_summary.output,
        rules.mammodp_all.input,
"""
    (workdir / "Snakefile").write_text(text)
    return workdir / "Snakefile"


def _write_tiny(workdir: Path) -> None:
    import yaml

    (workdir / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(), sort_keys=False))


def test_the_package_file_list_is_complete():
    """A remote module fetches exactly these files: a new module missing from the list would
    break every remote deployment while local runs pass."""
    listed = (WORKFLOW / "package_files.txt").read_text().split()
    present = [p.relative_to(WORKFLOW).as_posix() for p in WORKFLOW.glob("mammodp/**/*.py")]
    present += [p.relative_to(WORKFLOW).as_posix() for p in WORKFLOW.glob("schemas/*.yaml")]
    present += ["scripts/mammodp.py"]
    assert sorted(listed) == sorted(present)


def _check_run(run: dict) -> None:
    assert run["mammodp_version"] == mammodp.__version__
    assert len(run["config_sha256"]) == 64


@pytest.mark.workflow
def test_local_module_with_prefix_and_a_host_rule(tmp_path):
    _write_tiny(tmp_path)
    _host_snakefile(tmp_path, str(WORKFLOW / "Snakefile"))
    r = _snakemake(tmp_path, "-s", str(tmp_path / "Snakefile"), env={"PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "mammo" / "results" / "tables" / "main.md").is_file()
    assert not (tmp_path / "results").exists()  # every path under the prefix
    lines = (tmp_path / "summary.txt").read_text().splitlines()
    assert int(lines[0]) == 5  # header and the four tiny experiments
    assert lines[1] == os.environ["PATH"] and lines[2] == ""  # nothing leaks into host rules
    run = json.loads((tmp_path / "mammo" / "results" / "provenance" / "run.json").read_text())
    _check_run(run)
    assert Path(run["mammodp_package"]) == WORKFLOW / "mammodp"  # the module's own package
    assert run["workflow_source"] == str(WORKFLOW)


LOCAL_RULES = """
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(), snakefile=Path("Snakefile"))
    print(" ".join(sorted(wf._workflow._localrules)))
"""


def test_downloads_stay_local_rules_under_a_module_rename(tmp_path):
    """use rule * from ... as x_*: the downloads still run where Snakemake runs, not on compute
    nodes without internet (a localrules: list would not follow the rename)."""
    _write_tiny(tmp_path)
    _host_snakefile(tmp_path, str(WORKFLOW / "Snakefile"))
    r = subprocess.run(
        [sys.executable, "-c", LOCAL_RULES], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    names = r.stdout.split()[-4:]
    assert names == [f"mammodp_{n}" for n in ("fetch_published", "tcia_batch", "tcia_metadata")] + [
        "mammodp_tcia_series"
    ]


@pytest.fixture
def served_workflow(tmp_path):
    """A copy of the workflow served over loopback HTTP, as github() serves a remote module."""
    root = tmp_path / "served"
    ignore = shutil.ignore_patterns("__pycache__")
    for part in ("workflow", "resources"):
        shutil.copytree(REPO / part, root / part, ignore=ignore)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.workflow
def test_remote_module_runs_its_own_code(tmp_path, served_workflow):
    work = tmp_path / "work"
    work.mkdir()
    _write_tiny(work)
    _host_snakefile(work, f"{served_workflow}/workflow/Snakefile")
    # A broken mammodp first on the path: any job that imported it instead of the module's
    # own code would fail.
    decoy = tmp_path / "decoy" / "mammodp"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('a decoy, not the module code')\n")
    r = _snakemake(work, "-s", str(work / "Snakefile"), env={"PYTHONPATH": str(decoy.parent)})
    assert r.returncode == 0, r.stderr[-4000:]
    assert (work / "mammo" / "results" / "tables" / "main.md").is_file()
    run = json.loads((work / "mammo" / "results" / "provenance" / "run.json").read_text())
    _check_run(run)
    assert run["workflow_source"] == f"{served_workflow}/workflow"
    package = Path(run["mammodp_package"])
    assert package.name == "mammodp" and REPO not in package.parents  # the fetched copy ran
    assert "source-cache" in package.parts


def _storage_run(tmp_path: Path, *storage_args: str) -> subprocess.CompletedProcess:
    work = tmp_path / "work"
    work.mkdir()
    _write_tiny(work)
    args = ("-s", str(WORKFLOW / "Snakefile"), "--configfile", "tiny.yaml", *storage_args)
    return _snakemake(work, *args)


@pytest.mark.workflow
@pytest.mark.skipif(shutil.which("rsync") is None, reason="the fs storage plugin needs rsync")
def test_fs_storage_plugin(tmp_path):
    pytest.importorskip("snakemake_storage_plugin_fs")
    store = tmp_path / "store"
    store.mkdir()
    r = _storage_run(
        tmp_path, "--default-storage-provider", "fs", "--default-storage-prefix", str(store)
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert (store / "results" / "tables" / "main.md").is_file()
    assert not (tmp_path / "work" / "results").exists()  # every file went through storage
    _check_run(json.loads((store / "results" / "provenance" / "run.json").read_text()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.workflow
def test_s3_storage_without_a_shared_filesystem(tmp_path):
    pytest.importorskip("snakemake_storage_plugin_s3")
    moto_server = pytest.importorskip("moto.server")
    import boto3

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", **keys)
        s3.create_bucket(Bucket="mammodp")
        r = _storage_run(
            tmp_path,
            *("--default-storage-provider", "s3", "--default-storage-prefix", "s3://mammodp"),
            *("--storage-s3-endpoint-url", url, "--storage-s3-access-key", "test"),
            *("--storage-s3-secret-key", "test", "--shared-fs-usage", "none"),
        )
        assert r.returncode == 0, r.stderr[-4000:]
        listed = s3.list_objects_v2(Bucket="mammodp", Prefix="results/tables/")
        assert "results/tables/main.md" in {o["Key"] for o in listed["Contents"]}
        body = s3.get_object(Bucket="mammodp", Key="results/provenance/run.json")["Body"]
        _check_run(json.loads(body.read()))
    finally:
        server.stop()
    assert not (tmp_path / "work" / "results").exists()
