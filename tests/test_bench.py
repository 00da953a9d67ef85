"""The benchmark scripts run (their numbers are measurements, never asserted here)."""

from __future__ import annotations

import json
import sys

from .helpers.configs import REPO

sys.path.insert(0, str(REPO / "workflow" / "bench"))

TINY = {
    "input_size": 32,
    "overrides": {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4},
}


def test_gpu_check_smoke_on_the_cpu(shared_data, tmp_path):
    import gpu_check

    out = gpu_check.main(
        [
            "--data",
            str(shared_data / "mammo_dp" / "dataset16062024"),
            "--device",
            "cpu",
            "--limit",
            "32",
            "--model",
            json.dumps(TINY),
            "--gan-width",
            "4",
            "--dp-epochs",
            "2",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["n_train"] == 32 and saved["epsilon_final"] <= 6.0 and saved["device"]
    assert out["full_images_per_s"] > 0 and out["gan_epoch_s"] > 0
    assert out["feature_images_per_s_fp32"] > 0 and out["feature_images_per_s_bf16"] > 0


def test_audit_bench_times_a_real_audit():
    import bench_audit

    assert bench_audit.audit_seconds(6.0, 60, 16, 2, 16, 5e-4, 6) > 0
