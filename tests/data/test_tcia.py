"""TCIA download against a local fake NBIA server that injects faults."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pydicom
import pytest

from mammodp.config import CASE_CSVS
from mammodp.data import dicomio, lesions, tcia
from mammodp.errors import UserError

FAST = {"retries": 4, "backoff": 0.01, "timeout": 5}


def _csv_paths(folder):
    return {key: folder / name for key, name in CASE_CSVS.items()}


class FakeNBIA:
    """Serves /v1/getImage?SeriesInstanceUID=... as zips and /meta/<file> as CSVs. ``faults``
    maps a series UID to a list of faults consumed one per request: 500, reset, truncated,
    wrong (another series' archive)."""

    def __init__(self, phantom_dir):
        self.meta = phantom_dir / "metadata"
        self.series = dicomio.index_series(phantom_dir / "CBIS-DDSM")
        self.faults: dict[str, list[str]] = {}
        self.requests: list[str] = []
        self.times: list[float] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                if url.path.startswith("/meta/"):
                    return self._send((fake.meta / url.path.split("/")[-1]).read_bytes())
                if url.path.endswith("/getSeries"):
                    listing = [
                        {"SeriesInstanceUID": u, "ImageCount": len(f), "PatientID": "x"}
                        for u, f in fake.series.items()
                    ]
                    return self._send(json.dumps(listing).encode())
                uid = parse_qs(url.query)["SeriesInstanceUID"][0]
                fake.requests.append(uid)
                fault = fake.faults.get(uid, []).pop(0) if fake.faults.get(uid) else None
                fake.times.append(time.monotonic())
                if fault == "500":
                    self.send_response(500)
                    self.end_headers()
                    return None
                if fault == "429":  # too many requests: come back in a second
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                body = fake.archive(uid)
                if fault == "wrong":
                    other = next(u for u in fake.series if u != uid)
                    body = fake.archive(other)
                if fault == "truncated":
                    body = body[: len(body) // 2]
                if fault == "reset":  # promise the whole body, send half, hang up
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.connection.close()
                    return None
                return self._send(body)

            def _send(self, body):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def archive(self, uid):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for i, path in enumerate(sorted(self.series[uid]), start=1):
                zf.writestr(f"1-{i}.dcm", path.read_bytes())
        return buf.getvalue()


@pytest.fixture
def server(phantom_dir):
    fake = FakeNBIA(phantom_dir)
    yield fake
    fake.server.shutdown()


def _urls(server):
    names = {
        "mass_train": "mass_case_description_train_set.csv",
        "mass_test": "mass_case_description_test_set.csv",
        "calc_train": "calc_case_description_train_set.csv",
        "calc_test": "calc_case_description_test_set.csv",
    }
    return {k: f"{server.url}/meta/{v}" for k, v in names.items()}


def _download(server, tmp_path, max_patients=3, batch_size=4, **kw):
    meta = tmp_path / "metadata"
    tcia.download_metadata(_urls(server), _csv_paths(meta), **FAST)
    csvs = [
        meta / "mass_case_description_train_set.csv",
        meta / "mass_case_description_test_set.csv",
    ]
    api = f"{server.url}/v1/"
    series = tcia.list_series(api, "CBIS-DDSM", csvs, max_patients, batch_size=batch_size, **FAST)
    (tmp_path / "patients.txt").write_text("\n".join(series.attrs["patients"]))
    for batch in sorted(series["batch"].unique()):
        tcia.download_batch(
            api,
            series,
            batch,
            tmp_path / "CBIS-DDSM",
            tmp_path / f"batch{batch}.tsv",
            **{"lock_dir": tmp_path / "locks", **FAST, **kw},
        )
    return csvs


def _all_files_valid(root):
    for done in root.glob("*.done"):
        uid = done.name[: -len(".done")]
        files = list((root / uid).glob("*.dcm"))
        assert files and int(done.read_text()) == len(files)
        for f in files:
            assert pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID == uid


def test_download_then_lesions_from_the_downloaded_tree(server, tmp_path):
    csvs = _download(server, tmp_path)
    patients = set((tmp_path / "patients.txt").read_text().split())
    assert len(patients) == 3
    batches = pd.concat([pd.read_csv(p, sep="\t") for p in tmp_path.glob("batch*.tsv")])
    assert len(batches) == len(set(server.requests)) and batches["batch"].nunique() > 1
    _all_files_valid(tmp_path / "CBIS-DDSM")
    table = lesions.cbis_lesions(
        {"train": csvs[0], "test": csvs[1]}, tmp_path / "CBIS-DDSM", patients=patients
    )
    assert set(table["patient_id"].str.removeprefix("cbis-ddsm__")) == patients


def test_faults_are_retried_and_never_accepted(server, tmp_path):
    uids, _ = tcia.needed_series([server.meta / "mass_case_description_train_set.csv"], 2)
    for uid, fault in zip(uids, ["500", "reset", "truncated", "wrong", "500"], strict=False):
        server.faults[uid] = [fault, fault] if fault == "500" else [fault]
    _download(server, tmp_path, max_patients=2)
    _all_files_valid(tmp_path / "CBIS-DDSM")
    assert not any(server.faults.values())  # every fault was served


def test_interrupted_run_resumes_without_refetching(server, tmp_path):
    uids, _ = tcia.needed_series([server.meta / "mass_case_description_train_set.csv"], 2)
    server.faults[uids[-1]] = ["wrong"] * 5  # the last series fails for good: the run stops
    with pytest.raises(UserError, match="every download was rejected"):
        _download(server, tmp_path, max_patients=2, batch_size=100)
    assert not (tmp_path / "batch0.tsv").exists()  # the batch did not complete
    finished = {p.name[: -len(".done")] for p in (tmp_path / "CBIS-DDSM").glob("*.done")}
    assert finished and uids[-1] not in finished
    server.requests.clear()
    _download(server, tmp_path, max_patients=2, batch_size=100)
    assert not finished & set(server.requests)  # finished series are not fetched again
    _all_files_valid(tmp_path / "CBIS-DDSM")


def test_a_batch_clears_only_its_own_leftovers(server, tmp_path):
    uids, _ = tcia.needed_series([server.meta / "mass_case_description_train_set.csv"], 1)
    root = tmp_path / "CBIS-DDSM"
    mine = root / f".{uids[0]}.k3j_9x2a.part"  # as fileio.atomic_dir names them
    others = [  # other batches' downloads in progress, one with a UID that extends ours
        root / ".1.2.3.999.k3j_9x2a.part",
        root / f".{uids[0]}.5.k3j_9x2a.part",
    ]
    for d in (mine, *others):
        d.mkdir(parents=True)
    _download(server, tmp_path, max_patients=1, batch_size=100)
    assert not mine.exists() and all(d.is_dir() for d in others)


def test_downloads_wait_for_a_free_connection_slot(server, tmp_path):
    from mammodp import gpu

    locks = tmp_path / "locks"
    held = gpu.claim([0], locks, kind="tcia")  # another live download holds the only slot
    with pytest.raises(UserError, match=r"no free tcia slot among \[0\]"):
        _download(server, tmp_path, max_patients=1, connections=1, slot_timeout=1)
    assert not server.requests
    gpu.release(held, locks, kind="tcia")
    _download(server, tmp_path, max_patients=1, connections=1)
    assert server.requests and not list(locks.glob("tcia*.lock"))  # released after use


def test_too_many_requests_waits_for_retry_after(server, tmp_path):
    """HTTP 429 with Retry-After: 1 is retried after that second (not failed, not hammered)."""
    uid = next(iter(server.series))
    server.faults[uid] = ["429", "429"]
    data = tcia.fetch(f"{server.url}/v1/getImage", {"SeriesInstanceUID": uid}, **FAST)
    tcia.verify_archive(data, uid)
    assert server.requests == [uid] * 3 and not server.faults[uid]
    assert all(b - a >= 0.9 for a, b in zip(server.times, server.times[1:], strict=False))


def test_a_server_that_stays_busy_is_one_clear_error(server):
    uid = next(iter(server.series))
    server.faults[uid] = ["500"] * 4
    with pytest.raises(UserError, match="after 4 attempts \\(HTTP 500\\).*try again later"):
        tcia.fetch(f"{server.url}/v1/getImage", {"SeriesInstanceUID": uid}, **FAST)


def test_unreachable_api_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot download http://127.0.0.1:9/x after 2 attempts"):
        tcia.fetch("http://127.0.0.1:9/x", retries=2, backoff=0.01, timeout=2)


def test_series_missing_from_the_listing(server, tmp_path):
    tcia.download_metadata(_urls(server), _csv_paths(tmp_path), **FAST)
    csv = tmp_path / "mass_case_description_train_set.csv"
    del server.series[tcia.needed_series([csv])[0][0]]
    with pytest.raises(UserError, match="not in TCIA's CBIS-DDSM listing"):
        tcia.list_series(f"{server.url}/v1/", "CBIS-DDSM", [csv], **FAST)


def test_wrong_image_count_is_rejected(phantom_dir):
    fake = FakeNBIA(phantom_dir)
    try:
        uid, files = next((u, f) for u, f in fake.series.items() if len(f) == 2)
        with pytest.raises(ValueError, match="2 DICOM files, TCIA lists 3"):
            tcia.verify_archive(fake.archive(uid), uid, expected_files=3)
    finally:
        fake.server.shutdown()


@pytest.mark.workflow
def test_tcia_source_through_the_workflow(server, tmp_path, write_config):
    """data.source: tcia end to end up to the crops, one job (and one folder) per batch."""
    from ..helpers.configs import REPO, tiny_config
    from ..helpers.snakemake import snakemake

    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tiny_config(**{"data.source": "tcia", "data.external": "none"})
    config["data"]["tcia"].update(
        api_url=f"{server.url}/v1/", max_patients=4, batch_size=5, metadata_urls=_urls(server)
    )
    cfg = write_config(config, "tcia.yaml")
    r = snakemake(tmp_path, "--configfile", str(cfg), "--cores", "2", "--until", "crop")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    n_batches = len(list((tmp_path / "resources" / "tcia" / "batches").glob("*.tsv")))
    batch_logs = list((tmp_path / "results" / "logs" / "data" / "tcia_batch").glob("*.log"))
    assert n_batches >= 2 and len(batch_logs) == n_batches  # one job per batch
    folders = sorted((tmp_path / "resources" / "tcia" / "CBIS-DDSM").iterdir())
    assert [f.name for f in folders] == [f"batch{k}" for k in range(n_batches)]  # its output
    index = pd.read_csv(tmp_path / "results" / "data" / "crop_index.csv")
    assert (tmp_path / "results" / "data" / "crops" / index["path"][0]).is_file()
    table = pd.read_csv(tmp_path / "results" / "data" / "lesions.csv")
    patients = (tmp_path / "resources" / "tcia" / "patients.txt").read_text().split()
    assert len(patients) == 4
    assert set(table["patient_id"]) == {f"cbis-ddsm__{p}" for p in patients}
