"""Config and experiment-table validation: one clear message naming key and allowed values."""

from __future__ import annotations

import copy

import pytest
import yaml

from mammodp.config import ConfigError, load_experiments, select_experiments, validate_config

from .helpers.configs import REPO, demo_config

SHIPPED_CONFIGS = [
    "config.yaml",
    "paper.yaml",
    "paper-published.yaml",
    "paper-published-cpu.yaml",
    "processed.yaml",
]


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_shipped_configs_are_valid(name):
    validate_config(yaml.safe_load((REPO / "config" / name).read_text()), name)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "data.source",
            "dropbox",
            r"data.source = 'dropbox' is not allowed; "
            r"allowed values: \['phantom', 'processed', 'tcia'\]",
        ),
        (
            "data.crop.framing",
            "middle",
            r"data.crop.framing = 'middle' is not allowed; allowed values: \['study', 'centred'\]",
        ),
        (
            "data.lesions.contours",
            "all",
            r"data.lesions.contours = 'all' is not allowed; allowed values: \['study', 'outer'\]",
        ),
        ("data.bcdr.intensity", "raw", r"allowed values: \['as_is', 'minmax'\]"),
        ("data.crop.zoom_spread", -0.1, r"data.crop.zoom_spread = -0.1 is out of range"),
        ("classifier.dp.delta", 1.5, r"classifier.dp.delta = 1.5 is out of range; it must be < 1"),
        (
            "classifier.train.epochs",
            "many",
            r"classifier.train.epochs = 'many' has the wrong type; expected integer",
        ),
        ("classifier.model.pretrained", "yes", r"allowed values: \['imagenet', 'none'\]"),
        (
            "classifier.model.drop_path_rate",
            "high",
            r"drop_path_rate = 'high' has the wrong type; expected \['number', 'null'\] "
            r"\(Stochastic depth .*null, the architecture's default",
        ),
        ("classifier.model.drop_path_rate", 1.5, r"drop_path_rate = 1.5 is out of range"),
        ("seeds", [], r"seeds: \[\] should be non-empty"),
        (
            "device",
            "tpu",
            r"device = 'tpu' is not allowed; allowed values: \['cpu', 'cuda', 'auto'\]",
        ),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    config = copy.deepcopy(demo_config())
    node = config
    *parents, last = key.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config, "cfg.yaml")


def test_unknown_key_lists_the_allowed_ones():
    config = copy.deepcopy(demo_config())
    config["data"]["sauce"] = "x"
    with pytest.raises(ConfigError, match=r"data: unknown key\(s\) \['sauce'\]; allowed keys: \["):
        validate_config(config, "cfg.yaml")


def test_experiment_table():
    table = load_experiments(REPO / "config" / "experiments.tsv")
    paper = select_experiments(table, "paper")
    assert len(paper) == 25 and len(table) == 26
    assert {table[e].paper_id for e in paper} >= {
        "dbr0",
        "dbr15",
        "dbr155",
        "dbr156",
        "dbr3",
        "dbr5",
        "dbr11",
    }
    assert table["synpre_real_frozen_dp_eps6"].source == "syn_full_nodp"
    dbr155 = table["synbackbone_real_frozen_dp_eps6"]
    assert (dbr155.paper_id, dbr155.source, dbr155.loads_source_head) == (
        "dbr155",
        "syn_full_nodp",
        False,
    )
    assert (dbr155.head, table["syn_full_nodp"].head, dbr155.trained) == ("mlp", "linear", "head")
    assert (dbr155.dp_epsilon, dbr155.train_data, dbr155.group) == (
        6,
        "real",
        "synthetic-pretrained",
    )
    order = list(table)
    assert (
        order.index("synbackbone_real_frozen_dp_eps6")
        == order.index("synpre_real_frozen_dp_eps60") + 1
    )
    assert table["synpre_real_frozen_dp_eps6"].loads_source_head
    assert table["synfrozen_to_real_dp_eps6"].source == "syn_frozen_nodp"
    assert table["synfrozendp60_to_real_dp_eps6"].source == "syn_frozen_dp_eps60"
    assert table["realdp6_to_syn_frozen_nodp"].source == "real_frozen_dp_eps6"
    eps = sorted(table[e].dp_epsilon for e in paper if e.startswith("real_frozen_dp"))
    assert eps == [1, 6, 12, 20, 60]
    with pytest.raises(ConfigError, match=r"unknown experiment id\(s\) \['nope'\]"):
        select_experiments(table, ["nope"])


def _table(tmp_path, rows):
    head = "experiment\tpaper_id\tgroup\ttrain_data\ttrained\thead\tinit\tdp_epsilon\tdescription\n"
    path = tmp_path / "e.tsv"
    path.write_text(head + "".join("\t".join(r) + "\n" for r in rows))
    return path


def test_table_errors(tmp_path):
    ok = ["a", "dbr1", "real", "real", "head", "mlp", "backbone", "6", ""]
    with pytest.raises(
        ConfigError, match=r"e.tsv line 2: dp_epsilon = -1.0 is out of range; it must be > 0"
    ):
        load_experiments(_table(tmp_path, [ok[:7] + ["-1", ""]]))
    with pytest.raises(ConfigError, match="starts from unknown experiment 'zz'"):
        load_experiments(_table(tmp_path, [ok[:6] + ["from:zz", "6", ""]]))
    with pytest.raises(ConfigError, match="pretraining cycle"):
        load_experiments(
            _table(
                tmp_path, [ok[:6] + ["from:b", "6", ""], ["b"] + ok[1:6] + ["from:a", "none", ""]]
            )
        )
    with pytest.raises(ConfigError, match="DP is supported for head training only"):
        load_experiments(_table(tmp_path, [ok[:4] + ["all"] + ok[5:]]))


def _row(name, head="mlp", init="backbone", trained="head", eps="6"):
    return [name, "-", "real", "real", trained, head, init, eps, ""]


def test_backbone_init(tmp_path):
    """backbone:<x>: x's backbone under a new head; any head type; x may itself be frozen (it
    passes on the backbone it was given); unknown sources and cycles are refused as for from:."""
    table = load_experiments(
        _table(
            tmp_path,
            [
                _row("full", head="linear", trained="all", eps="none"),
                _row("new_head", init="backbone:full"),
                _row("same_head", head="linear", init="backbone:full"),
                _row("chain", head="linear", init="backbone:new_head"),
                _row("whole", head="mlp", init="from:new_head"),
            ],
        )
    )
    assert [table[e].source for e in table] == [None, "full", "full", "new_head", "new_head"]
    assert [table[e].loads_source_head for e in table] == [False, False, False, False, True]
    with pytest.raises(ConfigError, match=r"new starts from unknown experiment 'zz'"):
        load_experiments(_table(tmp_path, [_row("new", init="backbone:zz")]))
    with pytest.raises(ConfigError, match=r"pretraining cycle a -> b -> a"):
        load_experiments(_table(tmp_path, [_row("a", init="backbone:b"), _row("b", init="from:a")]))
    with pytest.raises(ConfigError, match=r"pretraining cycle a -> a"):
        load_experiments(_table(tmp_path, [_row("a", init="backbone:a")]))
    # from: keeps the source's head, so the types must match; the error points to backbone:.
    with pytest.raises(ConfigError, match=r"init backbone:full takes only its backbone"):
        load_experiments(
            _table(
                tmp_path,
                [
                    _row("full", head="linear", trained="all", eps="none"),
                    _row("x", init="from:full"),
                ],
            )
        )
    for bad in ("backbone:", "backbone:Full", "head:full", "from:a:b"):
        with pytest.raises(ConfigError, match=r"line 2: init: .* does not match"):
            load_experiments(_table(tmp_path, [_row("x", init=bad)]))


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_dry_run_of_every_config_needs_only_snakemakes_dependencies(repo, tmp_path, name):
    """`snakemake -n` parses the workflow and evaluates every input function of the DAG
    (the TCIA checkpoint's too) with pandas, numpy, torch, OpenCV, ... unimportable."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(repo / "config", tmp_path / "config")
    cmd = [sys.executable, str(repo / "tests" / "snakemake_only.py"), "-s"]
    cmd += [str(repo / "workflow" / "Snakefile"), "-d", str(tmp_path), "-n", "--cores", "1"]
    cmd += ["--configfile", f"config/{name}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "ImportError" not in r.stdout + r.stderr


def test_the_laptop_config_is_the_frozen_imagenet_part_of_the_paper_config(repo, tmp_path):
    """config/paper-published-cpu.yaml: the 18 experiments of paper-published.yaml whose frozen
    backbone is the ImageNet one, x 3 seeds, to the tables, with no GPU rule and no full
    fine-tuning, FRD v0 only; otherwise the paper config's settings (model, epochs, DP, data)."""
    import shutil
    import subprocess
    import sys

    cpu = yaml.safe_load((repo / "config" / "paper-published-cpu.yaml").read_text())
    paper = yaml.safe_load((repo / "config" / "paper-published.yaml").read_text())
    exps = load_experiments(repo / "config" / "experiments.tsv")
    chosen = [exps[e] for e in cpu["experiments"]["select"]]
    frozen_imagenet = {
        name
        for name in select_experiments(exps, "paper")
        if exps[name].trained == "head"
        and all(exps[s].trained == "head" for s in _chain(exps, exps[name]))
    }
    assert {e.experiment for e in chosen} == frozen_imagenet and len(chosen) == 18
    for key in ("model", "dp"):
        assert cpu["classifier"][key] == paper["classifier"][key]
    differs = {
        k
        for k in paper["classifier"]["train"]
        if cpu["classifier"]["train"][k] != paper["classifier"]["train"][k]
    }
    assert differs == {"feature_batch_size", "feature_precision"}
    assert cpu["data"] == {**paper["data"], "threads": 2} and cpu["seeds"] == paper["seeds"]
    # FRD v0 only (the study's era): v1's radiomics would cost the laptop ~11 of its minutes
    assert cpu["fidelity"] == {**paper["fidelity"], "frd_versions": ["v0"], "threads": 2}
    shutil.copytree(repo / "config", tmp_path / "config")
    cmd = [sys.executable, str(repo / "tests" / "snakemake_only.py"), "-s"]
    cmd += [str(repo / "workflow" / "Snakefile"), "-d", str(tmp_path), "-n", "--cores", "2"]
    cmd += ["--configfile", "config/paper-published-cpu.yaml", "--quiet", "rules"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    counts = dict(
        (line.split()[0], int(line.split()[1]))
        for line in r.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    assert counts["classify"] == 54 and counts["tables"] == 1, counts
    assert counts["backbone_features"] == 2 and "train_mcgan" not in counts  # pretrained only


def _chain(exps, exp):
    while exp.source:
        exp = exps[exp.source]
        yield exp.experiment


def test_parsing_the_workflow_needs_only_snakemakes_dependencies(repo):
    """What common.smk imports loads no pandas, numpy, torch or OpenCV (not in Snakemake's env)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, 'workflow'); "
        "import mammodp.config, mammodp.provenance, mammodp.labels; "
        "print(sorted({'pandas', 'numpy', 'torch', 'cv2', 'pydicom'} & set(sys.modules)))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_secure_mode_is_refused_at_validation_with_its_reason():
    cfg = copy.deepcopy(demo_config())
    cfg["classifier"]["dp"]["secure_mode"] = True
    with pytest.raises(ConfigError) as e:
        validate_config(cfg, "demo")
    message = str(e.value)
    assert "\n" not in message
    assert "secure_mode = true is not available" in message and "torchcsprng" in message
    assert "set it to false" in message


def test_patient_unit_needs_bookkeeping_clipping():
    cfg = copy.deepcopy(demo_config())
    cfg["classifier"]["dp"]["unit"] = "patient"
    validate_config(cfg, "demo")  # with book-keeping clipping: valid
    cfg["classifier"]["dp"]["clipping"] = "opacus"
    with pytest.raises(ConfigError, match="unit = patient .* set clipping: bookkeeping"):
        validate_config(cfg, "demo")
    cfg["classifier"]["dp"]["unit"] = "lesion"
    with pytest.raises(ConfigError, match="classifier.dp.unit"):
        validate_config(cfg, "demo")


def test_config_strings_get_the_schemas_types():
    from mammodp.config import coerce_strings, load_schema

    schema = load_schema("config.schema.yaml")
    given = {"seeds": ["1", "2", "3"], "classifier": {"dp": {"delta": "1e-5", "unit": "crop"}}}
    given["data"] = {"tcia": {"max_patients": "null"}, "external": "none"}
    out = coerce_strings(given, schema)
    assert out["seeds"] == [1, 2, 3] and out["classifier"]["dp"]["delta"] == 1e-5
    assert out["data"]["tcia"]["max_patients"] is None and out["data"]["external"] == "none"
    assert coerce_strings({"seeds": ["x"]}, schema) == {"seeds": ["x"]}  # left to validation


def test_an_error_names_the_layer_its_value_came_from():
    from mammodp.config import origin

    layers = [("--config", {"seeds": ["x"]}), ("b.yaml", {"classifier": {"dp": {"delta": 2}}})]
    assert origin(layers, ["seeds", 0], "a.yaml") == "--config"
    assert origin(layers, ["classifier", "dp", "delta"], "a.yaml") == "b.yaml"
    assert origin(layers, ["classifier", "dp", "unit"], "a.yaml") == "a.yaml"
    cfg = copy.deepcopy(demo_config())
    cfg["classifier"]["dp"]["delta"] = 2
    with pytest.raises(ConfigError, match=r"^invalid config in b\.yaml: classifier\.dp\.delta"):
        validate_config(cfg, "a.yaml", origins=layers)
    cfg = copy.deepcopy(demo_config())
    cfg["classifier"]["dp"]["unit"], cfg["classifier"]["dp"]["clipping"] = "patient", "opacus"
    with pytest.raises(ConfigError, match=r"^invalid config in --config: classifier\.dp\.unit"):
        validate_config(cfg, "a.yaml", origins=[("--config", {"classifier": {"dp": {"unit": 1}}})])
