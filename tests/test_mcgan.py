"""MCGAN architecture as the study's, training outputs and sampling determinism."""

from __future__ import annotations

import cv2
import pandas as pd
import torch

from mammodp import mcgan


def _n(m):
    return sum(p.numel() for p in m.parameters())


def test_study_architecture_shapes_and_parameter_counts():
    g, d = mcgan.build(mcgan.GanSpec())  # width 64: channels 1024 ... 64
    assert _n(g) == 14_428_112 and _n(d) == 25_928_036
    convs = [m for m in g.net if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [1024, 512, 256, 128, 64, 1]
    assert all(c.kernel_size == (4, 4) and c.bias is None for c in convs)
    dconvs = [m for m in d.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in dconvs] == [64, 128, 256, 512, 1024, 1]
    assert all(c.kernel_size == (6, 6) and c.stride == (2, 2) for c in dconvs[:-1])
    z, y = torch.randn(3, 100), torch.tensor([0, 1, 1])
    x = g(z, y)
    assert x.shape == (3, 1, 128, 128) and x.min() >= -1 and x.max() <= 1
    out = d(x, y)
    assert out.shape == (3,) and ((out > 0) & (out < 1)).all()


def test_train_and_sample(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(10, 1, 128, 128) * 2 - 1
    labels = torch.tensor([0, 1] * 5)
    spec = mcgan.GanSpec(epochs=2, width=4, checkpoint_every=1, seed=1)
    mcgan.train(images, labels, spec, tmp_path / "model")
    losses = pd.read_csv(tmp_path / "model" / "losses.csv")
    assert list(losses["epoch"]) == [1, 2] and losses["loss_d"].notna().all()
    assert sorted(p.name for p in (tmp_path / "model" / "samples").iterdir()) == [
        "epoch00001.png",
        "epoch00002.png",
    ]
    # Sampling: a generator that barely moved from its random init (BatchNorm statistics
    # settled by a few batches), so its eval-mode outputs depend on z.
    fresh = mcgan.GanSpec(epochs=15, width=8, lr=1e-9, checkpoint_every=15, seed=2)
    mcgan.train(images, labels, fresh, tmp_path / "fresh")
    gen = tmp_path / "fresh" / "generator.pt"
    a = mcgan.sample(gen, 3, seed=5, out_dir=tmp_path / "a")
    b = mcgan.sample(gen, 3, seed=5, out_dir=tmp_path / "b")
    assert list(a["label"]) == [0, 0, 0, 1, 1, 1]
    assert a["path"].str.endswith(("_malignant.png", "_benign.png")).all()
    for pa, pb in zip(a["path"], b["path"], strict=True):
        assert (cv2.imread(pa) == cv2.imread(pb)).all()
    c = mcgan.sample(gen, 3, seed=6, out_dir=tmp_path / "c")
    assert any(
        (cv2.imread(pa) != cv2.imread(pc)).any()
        for pa, pc in zip(a["path"], c["path"], strict=True)
    )


def _tiny_data(n=10):
    torch.manual_seed(0)
    return torch.rand(n, 1, 128, 128) * 2 - 1, torch.tensor([0, 1] * (n // 2))


def _state(path):
    return torch.load(path, weights_only=True)["generator"]


def test_resume_after_a_kill_ends_as_an_uninterrupted_run(tmp_path):
    import pytest

    images, labels = _tiny_data()
    spec = mcgan.GanSpec(epochs=4, width=4, checkpoint_every=1, seed=3)
    mcgan.train(images, labels, spec, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        mcgan.train(images, labels, spec, tmp_path / "b", stop_after=2)
    assert not (tmp_path / "b").exists()  # nothing partial is kept as output
    mcgan.train(images, labels, spec, tmp_path / "b")  # resumes after epoch 2
    a, b = _state(tmp_path / "a" / "generator.pt"), _state(tmp_path / "b" / "generator.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = pd.read_csv(tmp_path / "a" / "losses.csv")
    lb = pd.read_csv(tmp_path / "b" / "losses.csv")
    assert la.equals(lb) and (tmp_path / "b" / "losses.png").stat().st_size > 5000


def _same_run(a, b):
    """Two finished runs ended with the same generator and losses."""
    ga, gb = _state(a / "generator.pt"), _state(b / "generator.pt")
    return all(torch.equal(ga[k], gb[k]) for k in ga) and pd.read_csv(a / "losses.csv").equals(
        pd.read_csv(b / "losses.csv")
    )


def test_state_dir_is_removed_after_a_successful_run(tmp_path):
    import pytest

    images, labels = _tiny_data()
    spec = mcgan.GanSpec(epochs=3, width=4, checkpoint_every=1, seed=3)
    mcgan.train(images, labels, spec, tmp_path / "a")
    assert (tmp_path / "a" / "generator.pt").exists()
    assert not (tmp_path / ".a.state").exists()
    with pytest.raises(KeyboardInterrupt):  # a kill keeps the state ...
        mcgan.train(images, labels, spec, tmp_path / "b", stop_after=1)
    assert (tmp_path / ".b.state" / "state.pt").exists()
    mcgan.train(images, labels, spec, tmp_path / "b")  # ... until the resumed run completes
    assert not (tmp_path / ".b.state").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_state_for_other_training_data_is_not_resumed(tmp_path, caplog):
    import logging

    import pytest

    images, labels = _tiny_data()
    other = images.flip(-1)  # data B: as many images, same labels, other pixels
    spec = mcgan.GanSpec(epochs=2, width=4, checkpoint_every=1, seed=3)
    mcgan.train(other, labels, spec, tmp_path / "fresh")  # a fresh run on B
    with pytest.raises(KeyboardInterrupt):  # a state of data A after epoch 1
        mcgan.train(images, labels, spec, tmp_path / "m", stop_after=1)
    with caplog.at_level(logging.INFO, logger="mammodp.mcgan"):
        mcgan.train(other, labels, spec, tmp_path / "m")
    assert "for other training data" in caplog.text and "resuming" not in caplog.text
    assert _same_run(tmp_path / "fresh", tmp_path / "m")
    # Other labels on the same images are other data too.
    with pytest.raises(KeyboardInterrupt):
        mcgan.train(other, labels, spec, tmp_path / "n", stop_after=1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mammodp.mcgan"):
        mcgan.train(other, 1 - labels, spec, tmp_path / "n")
    assert "for other training data" in caplog.text and "resuming" not in caplog.text


def test_sampling_checkpoint_is_kept(tmp_path):
    import pytest

    from mammodp.errors import UserError

    images, labels = _tiny_data()
    spec = mcgan.GanSpec(epochs=4, width=4, checkpoint_every=2, sample_epoch=2, seed=1)
    mcgan.train(images, labels, spec, tmp_path / "m")
    early = torch.load(tmp_path / "m" / "generator_epoch00002.pt", weights_only=True)
    assert early["epochs_trained"] == 2
    assert not torch.equal(
        early["generator"]["net.0.weight"], _state(tmp_path / "m" / "generator.pt")["net.0.weight"]
    )
    bad = mcgan.GanSpec(epochs=4, width=4, checkpoint_every=2, sample_epoch=3, seed=1)
    with pytest.raises(UserError, match="sample_epoch = 3 is not a checkpoint epoch"):
        mcgan.train(images, labels, bad, tmp_path / "n")


def test_dp_mcgan_reports_its_privacy(tmp_path):
    import json

    from opacus.accountants import RDPAccountant

    images, labels = _tiny_data(16)
    spec = mcgan.GanSpec(epochs=2, width=4, checkpoint_every=1, seed=1)
    dp = mcgan.GanDPSpec(enabled=True, epsilon=10.0, delta=1e-5)
    mcgan.train(images, labels, spec, tmp_path / "m", dp=dp)
    privacy = json.loads((tmp_path / "m" / "privacy.json").read_text())
    assert privacy["dp"] and privacy["epsilon_final"] <= 10.0
    acc = RDPAccountant()
    acc.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert acc.get_epsilon(1e-5) == pytest_approx(privacy["epsilon_final"])
    assert privacy["steps"] == 2 * 2  # 2 epochs x 1 / sample rate (16 / 8)


def test_dp_mcgan_resumed_after_a_kill_ends_as_an_uninterrupted_run(tmp_path):
    """The DP noise generator's state is saved and restored with the training state."""
    import pytest

    images, labels = _tiny_data(16)
    spec = mcgan.GanSpec(epochs=3, width=4, checkpoint_every=1, seed=1)
    dp = mcgan.GanDPSpec(enabled=True, epsilon=10.0, delta=1e-5)
    mcgan.train(images, labels, spec, tmp_path / "a", dp=dp)
    with pytest.raises(KeyboardInterrupt):
        mcgan.train(images, labels, spec, tmp_path / "b", dp=dp, stop_after=2)
    mcgan.train(images, labels, spec, tmp_path / "b", dp=dp)  # resumes after epoch 2
    assert _same_run(tmp_path / "a", tmp_path / "b")
    pa, pb = (tmp_path / x / "privacy.json" for x in "ab")
    assert pa.read_bytes() == pb.read_bytes()


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-6)


def test_conditioning_classes_are_told_apart_by_a_real_data_classifier(tmp_path):
    """An MCGAN trained a few epochs on the phantom's real crops generates classes that a
    classifier trained on real phantom crops separates better than chance (benign = 1)."""
    import pytest
    from sklearn.metrics import roc_auc_score

    from mammodp import lesions, models
    from mammodp.crops import CropSpec, make_crops
    from mammodp.phantom import PhantomSpec, generate

    pytest.importorskip("sklearn")
    generate(
        tmp_path / "ph",
        PhantomSpec(seed=11, patients_train=150, patients_test=1, patients_external=0),
    )
    meta = tmp_path / "ph" / "metadata"
    table = lesions.drop_duplicates(
        lesions.cbis_lesions(
            {
                "train": meta / "mass_case_description_train_set.csv",
                "test": meta / "mass_case_description_test_set.csv",
            },
            tmp_path / "ph" / "CBIS-DDSM",
            workers=2,
        )
    )
    crops = make_crops(
        table[table["portion"] == "train"],
        tmp_path / "crops",
        CropSpec(),
        2,
        dicom_root=tmp_path / "ph" / "CBIS-DDSM",
    )
    images = models.load_images(crops["path"], mcgan.IMAGE_SIZE, strict=True)
    labels = torch.tensor(crops["label"].values)
    spec = mcgan.GanSpec(
        epochs=30, width=16, lr=2e-4, d_steps_per_g_step=1, checkpoint_every=30, seed=3
    )
    mcgan.train(images, labels, spec, tmp_path / "gan", threads=2)
    synthetic = mcgan.sample(tmp_path / "gan" / "generator.pt", 64, seed=1, out_dir=tmp_path / "s")

    # A small CNN trained on the real crops (max pooling: the lesion is local).
    torch.manual_seed(0)

    def block(i, o):
        return [
            torch.nn.Conv2d(i, o, 3, padding=1),
            torch.nn.BatchNorm2d(o),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        ]

    cnn = torch.nn.Sequential(
        *block(1, 16),
        *block(16, 32),
        *block(32, 64),
        *block(64, 64),
        torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 2),
    )
    x = models.load_images(crops["path"], 64)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-3)
    for _ in range(25):
        cnn.train()
        perm = torch.randperm(len(x))
        for s in range(0, len(x), 16):
            idx = perm[s : s + 16]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(cnn(x[idx]), labels[idx]).backward()
            opt.step()
    cnn.eval()
    with torch.no_grad():
        p = torch.softmax(cnn(models.load_images(synthetic["path"], 64)), 1)[:, 1].numpy()
    auroc = roc_auc_score(synthetic["label"], p)
    assert auroc > 0.65, f"synthetic classes told apart with AUROC {auroc:.3f} only"
