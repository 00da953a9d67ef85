"""Per-run files of a small made-up study (metrics.json, privacy.json), for the report's tests,
and the study's setting as a report ``Context``."""

from __future__ import annotations

import json

from mammodp.study_settings import STUDY_SETTINGS

from .configs import REPO

TABLE = REPO / "config" / "experiments.tsv"
PAPER_RESULTS = REPO / "resources" / "paper_results.csv"
PAPER_FIDELITY = REPO / "resources" / "paper_fidelity.csv"
# The study's setting: every row it ran is comparable (with the study's generator).
STUDY = {
    "data_source": "processed",
    "external": "bcdr",
    "generator": "published",
    "medigan_model": "00008_C-DCGAN_MMG_MASSES",
    "n_per_class": 1500,
    "mcgan_dp": False,
    "settings": {k: v for scope in STUDY_SETTINGS.values() for k, v in scope.items()},
    "model": {"arch": "swin_t", "pretrained": "imagenet", "input_size": 224, "overrides": {}},
    "epochs": 300,
    "seeds": (42, 43, 44),
}


def write_runs(tmp_path):
    """Five runs of two experiments: their AUROCs by (experiment, seed), and the metrics paths."""
    values = {
        ("real_frozen_nodp", 1): 0.70,
        ("real_frozen_nodp", 2): 0.74,
        ("real_frozen_nodp", 3): 0.81,
        ("real_frozen_dp_eps6", 1): 0.61,
        ("real_frozen_dp_eps6", 2): 0.65,
    }
    paths = []
    for (exp, seed), auroc in values.items():
        d = tmp_path / exp / f"seed{seed}"
        d.mkdir(parents=True)
        test = {
            "cbis-ddsm": {
                "accuracy": auroc - 0.1,
                "f1": auroc - 0.2,
                "auroc": auroc,
                "auprc": auroc + 0.05,
                "precision": 0,
                "recall": 0,
                "n": 10,
            }
        }
        (d / "metrics.json").write_text(json.dumps({"experiment": exp, "seed": seed, "test": test}))
        dp = exp.endswith("eps6")
        privacy = {"dp": dp, "experiment": exp, "seed": seed}
        if dp:
            privacy.update(
                accountant="rdp",
                noise_multiplier=1.1,
                max_grad_norm=1.0,
                sample_rate=0.1,
                steps=30,
                steps_at_chosen_epoch=9,
                chosen_in_window=seed != 2,
                delta=1e-4,
                target_epsilon=6,
                epsilon_at_chosen_epoch=5.5,
                epsilon_final=5.9,
                chosen_epoch=3,
                synthetic_in_training=False,
                pretrained_from=None,
                source_dp=None,
                synthetic_in_lineage=False,
                generator_private=None,
                lineage_private=True,
                lineage_epsilon_rdp=5.9,
                lineage_epsilon_basic=5.9,
                lineage_delta=1e-4,
                lineage_unit="crop",
                lineage_patient_epsilon=17.7,
                lineage_patient_delta=1e-4 * 3 * 2.718281828**11.8,
                unit_of_privacy="crop",
                n_units=100,
                max_crops_per_patient=3,
                patient_epsilon=17.7,
                patient_delta=1e-4 * 3 * 2.718281828**11.8,
                warnings=["first caveat", "second caveat"],
            )
        (d / "privacy.json").write_text(json.dumps(privacy))
        paths.append(str(d / "metrics.json"))
    return values, paths
