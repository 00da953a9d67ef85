"""The study's published crops as a data source."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammodp.data.crops import WINDOW_COLUMNS
from mammodp.data.processed import import_processed
from mammodp.errors import UserError

from ..helpers.configs import REPO


def test_published_counts(shared_data):
    index, split = import_processed(shared_data / "mammo_dp" / "dataset16062024")
    cbis = index[index["dataset"] == "cbis-ddsm"]
    in_split = {pid: k for k, ids in split.items() for pid in ids}
    cbis_split = cbis["patient_id"].map(in_split)
    assert cbis_split.value_counts().to_dict() == {"train": 1104, "test": 402, "val": 192}
    assert (index["dataset"] == "bcdr").sum() == 1106
    train = cbis[cbis_split == "train"]
    assert train["label"].value_counts().to_dict() == {1: 579, 0: 525}
    assert train["patient_id"].nunique() == 578
    from mammodp.data.processed import duplicate_report

    dups = duplicate_report(index)
    assert len(dups) == 16 and dups["group"].nunique() == 8
    assert set(dups["dataset"]) == {"bcdr"}
    conflicting = dups[dups["conflicting_labels"]]
    assert conflicting["patient_id"].unique().tolist() == ["bcdr__193"]


def test_study_split_is_rebuilt_byte_for_byte(tmp_path, shared_data):
    """``mammodp study-split`` on the published crops writes the shipped file exactly; its
    counts are the published ones (212 test patients, whose published crops are 402)."""
    import json

    from mammodp.cli import main

    root = shared_data / "mammo_dp" / "dataset16062024"
    out = tmp_path / "study_split.json"
    assert main(["study-split", "--path", str(root), "--out", str(out)]) == 0
    assert out.read_bytes() == (REPO / "resources" / "study_split.json").read_bytes()
    split = json.loads(out.read_text())
    assert {k: len(split[k]) for k in ("train", "val", "test")} == {
        "train": 578,
        "val": 102,
        "test": 212,
    }
    assert all(p.startswith("cbis-ddsm__P_") for k in ("train", "val", "test") for p in split[k])
    index, _ = import_processed(root)
    crops = index[index["patient_id"].isin(split["test"])]
    assert len(crops) == 402 and set(crops["dataset"]) == {"cbis-ddsm"}
    assert index[WINDOW_COLUMNS].isna().all().all()  # the published windows are unknown


def test_study_split_checks_the_layout(tmp_path):
    from mammodp.data.processed import study_split

    with pytest.raises(UserError, match="cbis-ddsm: not found. Point --path"):
        study_split(tmp_path)
    d = tmp_path / "cbis-ddsm" / "train" / "is_benign_true"
    d.mkdir(parents=True)
    (d / "P_1.png").write_bytes(b"")
    with pytest.raises(UserError, match="P_1.png: not in the published layout"):
        study_split(tmp_path)
    (d / "P_1.png").unlink()
    (d / "patientcbis-ddsm__P_1_image9_mass1_is_benign_1.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"no published crops in \['val', 'test'\]"):
        study_split(tmp_path)
    for name in ("val", "test"):
        sub = tmp_path / "cbis-ddsm" / name / "is_benign_false"
        sub.mkdir(parents=True)
        (sub / "patientcbis-ddsm__P_1_image9_mass2_is_benign_0.png").write_bytes(b"")
    with pytest.raises(UserError, match="patient cbis-ddsm__P_1 is in both"):
        study_split(tmp_path)


def test_wrong_size_png_is_rejected(tmp_path):
    d = tmp_path / "cbis-ddsm" / "train" / "is_benign_true"
    d.mkdir(parents=True)
    cv2.imwrite(
        str(d / "patientcbis-ddsm__P_1_image9_mass1_is_benign_1.png"), np.zeros((64, 64), np.uint8)
    )
    with pytest.raises(UserError, match="expected a 128x128 8-bit grayscale PNG"):
        import_processed(tmp_path)


def test_label_disagreement_is_rejected(tmp_path):
    d = tmp_path / "cbis-ddsm" / "train" / "is_benign_false"
    d.mkdir(parents=True)
    cv2.imwrite(
        str(d / "patientcbis-ddsm__P_1_image9_mass1_is_benign_1.png"),
        np.zeros((128, 128), np.uint8),
    )
    with pytest.raises(UserError, match="disagree on label"):
        import_processed(tmp_path)


# ----------------------------------------------------------------------------- pinned archive


@pytest.fixture(scope="module")
def archive(shared_data):
    """The published data as the repository archive would hold it (top folder + repo paths)."""
    import io
    import zipfile

    buf = io.BytesIO()
    root = shared_data / "mammo_dp"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted((root / "dataset16062024").rglob("*.png")):
            zf.write(p, f"mammo_dp-pinned/{p.relative_to(root)}")
        for p in sorted((root / "synthetic" / "c-dcgan").glob("*.png")):
            zf.write(p, f"mammo_dp-pinned/extension/synthetic_data/cbis-ddsm/c-dcgan/{p.name}")
        zf.writestr("mammo_dp-pinned/README.md", "not extracted")
    return buf.getvalue()


@pytest.fixture
def serve():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"body": b"", "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state["requests"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_port}/archive.zip"
    yield state
    server.shutdown()


CHECKSUMS = REPO / "resources" / "mammo_dp.sha256"


def test_fetch_verify_and_no_refetch(tmp_path, archive, serve):
    from mammodp.data.processed import fetch_published

    serve["body"] = archive
    ds, syn = tmp_path / "mammo_dp" / "dataset16062024", tmp_path / "syn"
    assert fetch_published(serve["url"], CHECKSUMS, ds, syn, retries=1) == 2804 + 3000
    assert not (tmp_path / "mammo_dp" / "README.md").exists()
    index, _ = import_processed(ds)
    assert len(index) == 2804
    assert fetch_published(serve["url"], CHECKSUMS, ds, syn, retries=1) == 0
    assert serve["requests"] == 1  # verified local copies are not downloaded again
    victim = next(syn.glob("*.png"))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(
        UserError, match=r"1 file\(s\) are missing or differ from the published data"
    ):
        fetch_published(serve["url"], CHECKSUMS, ds, syn, retries=1)


def test_bad_archives_leave_nothing(tmp_path, archive, serve):
    import io
    import zipfile

    from mammodp.data.processed import fetch_published

    ds, syn = tmp_path / "ds", tmp_path / "syn"
    serve["body"] = archive[: len(archive) // 2]
    with pytest.raises(UserError, match="not a valid zip archive"):
        fetch_published(serve["url"], CHECKSUMS, ds, syn, retries=1)
    tampered = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(tampered, "w") as dst:
        for i, info in enumerate(src.infolist()):
            data = src.read(info)
            dst.writestr(info, data + b"x" if i == 7 else data)
    serve["body"] = tampered.getvalue()
    with pytest.raises(UserError, match="differ from the pinned checksums.*nothing was kept"):
        fetch_published(serve["url"], CHECKSUMS, ds, syn, retries=1)
    assert not ds.exists() and not syn.exists()


def test_an_unreachable_published_archive_names_the_published_data_settings(tmp_path):
    from mammodp.data.processed import fetch_published

    with pytest.raises(UserError, match=r"after 1 attempts.*data\.processed\.archive_url") as e:
        fetch_published(
            "http://127.0.0.1:9/a.zip",
            CHECKSUMS,
            tmp_path / "d",
            tmp_path / "s",
            retries=1,
            timeout=2,
        )
    assert "data.tcia" not in str(e.value)
