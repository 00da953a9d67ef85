"""What a DP run's (epsilon, delta) means and does not cover: the patient-level guarantee implied
by group privacy, the warnings a privacy reader needs, and the outputs outside the accountant.
"""

from __future__ import annotations

import math

import pandas as pd

# Outputs of every DP classifier run that the accountant's guarantee does not cover.
NOT_COVERED = (
    "checkpoint selection: validation metrics on real patients, computed without noise, choose "
    "the released epoch (as in the study); the validation patients are not protected",
    "metrics.json and predictions.csv: test-set results (test patients are not in training)",
    "history.csv: validation metrics per epoch; the noise-free training loss is left out",
)
# A non-DP classifier trained only on a DP-MCGAN's crops: its guarantee is the generator's.
LINEAGE_NOT_COVERED = (
    "checkpoint selection: validation metrics on real patients choose the released epoch; the "
    "validation patients are not protected",
    "metrics.json and predictions.csv: test-set results (test patients are not in training)",
)
APPROXIMATE_ACCOUNTANTS = {"gdp": "the GDP accountant is an approximation (CLT), not a bound"}


def max_crops_per_patient(train: pd.DataFrame) -> int:
    """The most real training crops of one patient (synthetic rows carry no patient)."""
    real = train[train["patient_id"].astype(str) != ""]
    return int(real.groupby("patient_id").size().max()) if len(real) else 0


def group_privacy(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """(epsilon, delta)-DP per record implies (k epsilon, k e^((k-1) epsilon) delta)-DP for a
    group of k records (Vadhan, "The Complexity of Differential Privacy", Lemma 2.2)."""
    if k <= 1:
        return epsilon, delta
    exponent = (k - 1) * epsilon
    group_delta = math.inf if exponent > 700 else k * math.exp(exponent) * delta
    return k * epsilon, min(group_delta, math.inf)


def patient_guarantee(epsilon: float, delta: float, k: int, unit: str = "crop") -> dict:
    """The patient-level (epsilon, delta): group privacy over the ``k`` crops of the largest
    patient when the unit is the crop; the accountant's own when it is the patient."""
    eps, dlt = group_privacy(epsilon, delta, k if unit == "crop" else 1)
    return {
        "unit_of_privacy": unit,
        "max_crops_per_patient": k,
        "patient_epsilon": eps,
        "patient_delta": dlt,
        "patient_guarantee_vacuous": not dlt < 1,
    }


def _pair(epsilon: float, delta: float) -> str:
    return f"epsilon {epsilon:.3g}, delta {delta:.3g}" + ("" if delta < 1 else " (vacuous)")


def dp_warnings(privacy: dict) -> list[str]:
    """The caveats of one DP run's privacy.json record."""
    out = []
    n, delta = privacy.get("n_units", privacy["n_train"]), privacy["delta"]
    unit = privacy.get("unit_of_privacy", "crop")
    if delta >= 1 / n:
        out.append(f"delta = {delta:g} >= 1/N = {1 / n:.3g}: a weak delta for N = {n} {unit}s")
    if privacy["accountant"] in APPROXIMATE_ACCOUNTANTS:
        out.append(APPROXIMATE_ACCOUNTANTS[privacy["accountant"]])
    if privacy["epsilon_at_chosen_epoch"] < privacy["epsilon_final"]:
        out.append(
            "the released model's guarantee is epsilon_final "
            f"({privacy['epsilon_final']:.3g}): selection looked at every epoch, so "
            f"epsilon_at_chosen_epoch ({privacy['epsilon_at_chosen_epoch']:.3g}) is not it"
        )
    own = privacy["accountant"]
    others = {p["accountant"] for p in privacy.get("lineage_parts", []) if p.get("private")}
    for a in sorted((others - {own}) & APPROXIMATE_ACCOUNTANTS.keys()):
        out.append(f"the lineage's epsilon includes a {a} part: {APPROXIMATE_ACCOUNTANTS[a]}")
    if len(privacy.get("lineage_parts", [])) > 1 and privacy.get("lineage_patient_epsilon"):
        pair = _pair(privacy["lineage_patient_epsilon"], privacy["lineage_patient_delta"])
        out.append(f"over its lineage ({privacy['lineage_unit']} units) a patient has {pair}")
    if unit == "crop" and privacy.get("max_crops_per_patient", 1) > 1:
        k = privacy["max_crops_per_patient"]
        pair = _pair(privacy["patient_epsilon"], privacy["patient_delta"])
        out.append(f"the unit of privacy is the crop; a patient with {k} crops has {pair}")
    return out


# ----------------------------------------------------------------------------- lineage

ACCOUNT_KEYS = ("accountant", "noise_multiplier", "sample_rate", "steps", "delta")


def lineage_warnings(privacy: dict) -> list[str]:
    """The caveats of a non-DP run whose lineage is private (a DP-MCGAN's crops only)."""
    out = [
        "this classifier was not trained privately: its guarantee is that of the trainings "
        "before it (post-processing of their outputs)"
    ]
    accountants = {p["accountant"] for p in privacy["lineage_parts"]}
    out += [
        APPROXIMATE_ACCOUNTANTS[a] for a in sorted(accountants & APPROXIMATE_ACCOUNTANTS.keys())
    ]
    n = min(p.get("n_units", 0) or math.inf for p in privacy["lineage_parts"])
    if privacy["lineage_delta"] is not None and privacy["lineage_delta"] >= 1 / n:
        out.append(f"lineage delta = {privacy['lineage_delta']:g} >= 1/N for N = {n}")
    k = privacy["lineage_max_crops_per_patient"]
    if privacy["lineage_unit"] != "patient" and k > 1:
        pair = _pair(privacy["lineage_patient_epsilon"], privacy["lineage_patient_delta"])
        unit = "is the crop" if privacy["lineage_unit"] == "crop" else "of some parts is the crop"
        out.append(f"the unit of privacy {unit}; a patient with {k} crops has {pair}")
    return out


def training_part(name: str, privacy: dict | None) -> dict:
    """One training that touched the real training patients, from its privacy.json record
    (a classifier's or a DP-MCGAN's); ``private: False`` when it was not DP."""
    if not privacy or not privacy.get("dp"):
        return {"part": name, "private": False}
    return {
        "part": name,
        "private": True,
        **{k: privacy[k] for k in ACCOUNT_KEYS},
        "epsilon": privacy["epsilon_final"],
        "unit": privacy.get("unit_of_privacy", "crop"),
        "n_units": privacy.get("n_units", privacy.get("n_train")),
    }


def lineage_parts(exp, own: dict, generator: dict | None, source: dict | None) -> list[dict]:
    """Every training of this run's lineage that saw the real training patients: this run (if it
    trains on real crops), the generator of its synthetic crops, and its source model's lineage
    (``source``: the privacy.json record of what it loads; None: unknown)."""
    parts = []
    if "real" in exp.train_data.split("+"):
        parts.append(training_part(f"classifier {exp.experiment}", own))
    if "synthetic" in exp.train_data:
        parts.append(training_part("generator", generator))
    if exp.source:
        unknown = [{"part": f"source {exp.source}", "private": None}]  # no record of its training
        if source is None:
            parts += unknown
        elif not source.get("pretrained_weights"):
            parts += source.get("lineage_parts", unknown)
    return parts


def compose(parts: list[dict], max_crops: int = 1) -> dict:
    """The real training patients' guarantee over the whole lineage: the RDP curves composed
    (one accountant over every part's steps; needs RDP everywhere) and basic composition (the
    sum of the epsilons and deltas) beside it, both at the summed delta, for parts of one unit of
    privacy. The patient-level bound: the lineage's own for patient units, group privacy over
    ``max_crops`` (the most real training crops of one patient) for crop units; parts of mixed
    units add their patient-level bounds (basic composition)."""
    out = {"lineage_parts": parts, "lineage_private": True, "lineage_delta": None}
    out |= {"lineage_epsilon_rdp": None, "lineage_epsilon_basic": None, "lineage_unit": None}
    out |= {"lineage_patient_epsilon": None, "lineage_patient_delta": None}
    out["lineage_max_crops_per_patient"] = max_crops
    if any(p["private"] is not True for p in parts):
        known = all(p["private"] is not None for p in parts)
        out["lineage_private"] = False if known else None
        return out
    if not parts:
        return out
    units = {p.get("unit", "crop") for p in parts}
    if len(units) > 1:
        bounds = [group_privacy(p["epsilon"], p["delta"], _k(p, max_crops)) for p in parts]
        out["lineage_unit"] = "mixed"
        out["lineage_patient_epsilon"] = sum(e for e, _ in bounds)
        out["lineage_patient_delta"] = min(sum(d for _, d in bounds), math.inf)
        return out
    delta = sum(p["delta"] for p in parts)
    out["lineage_unit"] = units.pop()
    out["lineage_delta"] = delta
    out["lineage_epsilon_basic"] = sum(p["epsilon"] for p in parts)
    if all(p["accountant"] == "rdp" for p in parts):
        from opacus.accountants import RDPAccountant

        acc = RDPAccountant()
        acc.history = [(p["noise_multiplier"], p["sample_rate"], p["steps"]) for p in parts]
        out["lineage_epsilon_rdp"] = float(acc.get_epsilon(delta))
    best = min(e for e in (out["lineage_epsilon_rdp"], out["lineage_epsilon_basic"]) if e)
    k = max_crops if out["lineage_unit"] == "crop" else 1
    out["lineage_patient_epsilon"], out["lineage_patient_delta"] = group_privacy(best, delta, k)
    return out


def _k(part: dict, max_crops: int) -> int:
    return max_crops if part.get("unit", "crop") == "crop" else 1
