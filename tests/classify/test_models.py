"""Backbones, heads and checkpoints."""

from __future__ import annotations

import shutil

import pytest
import torch

from mammodp import images
from mammodp.classify import models
from mammodp.errors import UserError
from mammodp.images import load_images

from ..helpers.models import REDUCED, TIMM_SWIN, TINY, TV_TINY, drop_rates


def test_study_swin_t_and_heads():
    backbone = models.create_backbone(models.ModelSpec(pretrained="none"))
    assert models.ModelSpec().arch == "swin_t"  # the study's torchvision Swin-T by default
    assert backbone.num_features == 768
    assert sum(p.numel() for p in backbone.parameters()) == 27_519_354  # swin_t without head
    mlp = models.make_head("mlp", 768)
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [384, 2]
    assert isinstance(mlp[1], torch.nn.LeakyReLU) and mlp[1].negative_slope == 0.2
    assert sum(p.numel() for p in mlp.parameters()) == 768 * 384 + 384 + 384 * 2 + 2
    with torch.no_grad():  # any input size works; a small one keeps the test fast
        out = models.Classifier(backbone, mlp).eval()(torch.zeros(2, 1, 64, 64))
    assert out.shape == (2, 2)


def test_imagenet_weights_offline_give_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(
        UserError, match="ImageNet weights for swin_tiny.*weights_file.*pretrained: none"
    ):
        models.create_backbone(models.ModelSpec(arch=TIMM_SWIN, pretrained="imagenet"))
    for arch in (TIMM_SWIN, "swin_t"):
        with pytest.raises(UserError, match="weights_file: /nope.safetensors not found"):
            models.create_backbone(
                models.ModelSpec(arch=arch, pretrained="imagenet", weights_file="/nope.safetensors")
            )


def test_torchvision_weights_offline_give_a_clear_error(monkeypatch, tmp_path):
    """swin_t with pretrained: imagenet, no weights_file and no network: one error naming the
    file to fetch and the two ways out."""
    import urllib.error

    import torchvision.models._api as tv_api

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as e:
        models.create_backbone(models.ModelSpec(arch="swin_t", pretrained="imagenet"))
    msg = str(e.value)
    assert "https://download.pytorch.org/models/swin_t-704ceda3.pth" in msg
    assert "URLError" in msg and "classifier.model.weights_file" in msg
    assert "classifier.model.pretrained: none" in msg


def test_bad_architecture_settings_give_clear_errors(tmp_path):
    import dataclasses

    with pytest.raises(UserError, match=r"overrides: \['global_pool'\] are not arguments of "):
        models.create_backbone(dataclasses.replace(TV_TINY, overrides={"global_pool": "max"}))
    with pytest.raises(UserError, match="set stochastic depth with classifier.model.drop_path"):
        models.create_backbone(dataclasses.replace(TINY, overrides={"drop_path_rate": 0.3}))
    with pytest.raises(UserError, match="arch: unknown model 'swin_q'"):
        models.create_backbone(dataclasses.replace(TINY, arch="swin_q"))
    from torchvision.models.swin_transformer import SwinTransformer

    small = tmp_path / "small.pth"
    torch.save(SwinTransformer(**models.swin_t_kwargs(TV_TINY)).state_dict(), small)
    other = dataclasses.replace(TV_TINY, pretrained="imagenet", weights_file=str(small))
    assert models.create_backbone(other).num_features == 32  # its own shapes: loads
    with pytest.raises(UserError, match=r"small.pth: not the weights of torchvision's swin_t"):
        models.create_backbone(dataclasses.replace(other, overrides={**REDUCED, "embed_dim": 24}))
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError, match="list.pth is not a state_dict"):
        models.create_backbone(
            dataclasses.replace(
                TV_TINY, pretrained="imagenet", weights_file=str(tmp_path / "list.pth")
            )
        )


def test_random_backbone_is_shared_across_runs():
    a = models.create_backbone(TINY).state_dict()
    torch.manual_seed(123)  # the run's seed must not change the backbone
    b = models.create_backbone(TINY).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_follow_backbone_references(tmp_path):
    # A fully trained source model stores its backbone ...
    source = models.Classifier(models.create_backbone(TINY), models.make_head("linear", 32))
    with torch.no_grad():
        for p in source.backbone.parameters():
            p.add_(0.01)  # "trained": differs from the random init
    models.save_checkpoint(
        tmp_path / "src.pt",
        spec=TINY,
        head_type="linear",
        model=source,
        backbone_trained=True,
        backbone_source={"kind": "pretrained"},
    )
    # ... a frozen model started from it stores only its head and a reference.
    from mammodp.fileio import sha256_file

    frozen = models.Classifier(
        models.load_backbone(tmp_path / "src.pt"), models.make_head("linear", 32)
    )
    ref = {
        "kind": "model",
        "path": str(tmp_path / "src.pt"),
        "sha256": sha256_file(tmp_path / "src.pt"),
    }
    models.save_checkpoint(
        tmp_path / "frozen.pt",
        spec=TINY,
        head_type="linear",
        model=frozen,
        backbone_trained=False,
        backbone_source=ref,
    )
    assert models.load_checkpoint(tmp_path / "frozen.pt")["backbone"] is None
    loaded, _ = models.load_model(tmp_path / "frozen.pt")
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[k], v), k
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(loaded.eval()(x), frozen.eval()(x))
    # A changed source is detected instead of silently loading other weights.
    models.save_checkpoint(
        tmp_path / "src.pt",
        spec=TINY,
        head_type="mlp",
        model=models.Classifier(source.backbone, models.make_head("mlp", 32)),
        backbone_trained=True,
        backbone_source={"kind": "pretrained"},
    )
    with pytest.raises(UserError, match="changed since training"):
        models.load_model(tmp_path / "frozen.pt")


def test_flip_variants():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert images.flip(x, "h")[0, 0].tolist() == [[1, 0], [3, 2]]
    assert images.flip(x, "v")[0, 0].tolist() == [[2, 3], [0, 1]]
    assert images.flip(x, "hv")[0, 0].tolist() == [[3, 2], [1, 0]]


def test_random_flips_give_both_flips_to_a_sample_drawn_for_both():
    x = torch.arange(64 * 9, dtype=torch.float32).reshape(64, 1, 3, 3)
    gen = torch.Generator().manual_seed(0)
    out = images.random_flips(x, gen)
    replay = torch.Generator().manual_seed(0)
    flip_h = torch.rand(64, generator=replay) < 0.5
    flip_v = torch.rand(64, generator=replay) < 0.5
    assert (flip_h & flip_v).any() and (flip_h & ~flip_v).any() and (~flip_h & ~flip_v).any()
    for i in range(64):
        want = x[i]
        if flip_h[i]:
            want = want.flip(-1)
        if flip_v[i]:
            want = want.flip(-2)
        assert torch.equal(out[i], want), i
    assert torch.equal(x, torch.arange(64 * 9, dtype=torch.float32).reshape(64, 1, 3, 3))


def test_strict_image_loading_refuses_other_sizes(tmp_path):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 64), np.uint8))
    assert images.load_images([tmp_path / "a.png"], 128).shape == (1, 1, 128, 128)
    with pytest.raises(UserError, match=r"a.png: expected a 128x128 grayscale PNG, got 64x64"):
        images.load_images([tmp_path / "a.png"], 128, strict=True)


# ----------------------------------------------------------------------------- torchvision swin_t


@pytest.fixture(scope="module")
def swin_t_weights(tmp_path_factory):
    """A randomly initialised torchvision swin_t (1000-class head and all), in eval mode, and its
    state_dict saved as torchvision ships its ImageNet weights (a .pth)."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        ref = torchvision.models.swin_t().eval()
    path = tmp_path_factory.mktemp("torchvision") / "swin_t-random.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.fixture(scope="module")
def swin_t_ours(swin_t_weights):
    _, path = swin_t_weights
    spec = models.ModelSpec(arch="swin_t", pretrained="imagenet", weights_file=str(path))
    return models.create_backbone(spec)


def test_swin_t_loads_a_torchvision_weights_file(swin_t_weights, swin_t_ours, caplog):
    ref, path = swin_t_weights
    want, got = ref.state_dict(), swin_t_ours.state_dict()
    assert set(want) - set(got) == {"head.weight", "head.bias"} and set(got) <= set(want)
    for k, v in got.items():
        assert torch.equal(v, want[k]), k
    assert swin_t_ours.num_features == 768 and isinstance(swin_t_ours.head, torch.nn.Identity)
    with caplog.at_level("WARNING", logger="mammodp.classify.models"):
        models.create_backbone(
            models.ModelSpec(arch="swin_t", pretrained="imagenet", weights_file=str(path))
        )
    assert "is not torchvision's IMAGENET1K_V1 file (704ceda3)" in caplog.text


def test_swin_t_has_the_study_stochastic_depth(swin_t_ours):
    """torchvision's swin_t default: 0.2 at the last of its 12 blocks, rising linearly from 0
    (the study's constants.py took swin_t as it comes)."""
    rates = drop_rates(swin_t_ours)
    assert rates == pytest.approx([0.2 * i / 11 for i in range(12)]) and rates[-1] == 0.2
    timm_rates = drop_rates(
        models.create_backbone(models.ModelSpec(arch=TIMM_SWIN, pretrained="none"))
    )
    assert max(timm_rates) == pytest.approx(0.1)  # timm's own default for its Swin
    import dataclasses

    assert drop_rates(models.create_backbone(dataclasses.replace(TV_TINY, drop_path_rate=0.5))) == [
        0.0,
        0.5,
    ]


def test_swin_t_features_are_torchvisions_forward(swin_t_weights, swin_t_ours, tiny_manifest):
    """Cached features (eval mode, flips) equal torchvision's own eval-mode forward with
    head = Identity (features -> norm -> permute -> avgpool -> flatten) on crops as the workflow
    loads them (area-resized to 224, in [-1, 1])."""
    ref, _ = swin_t_weights
    swin_t_ours.train()  # backbone_features must switch to eval mode itself
    crops = load_images(sorted(tiny_manifest["path"])[:2], 224)
    assert crops.min() >= -1 and crops.max() <= 1 and crops.std() > 0.1
    feats = models.backbone_features(swin_t_ours, crops, ("none", "hv"))
    assert feats.shape == (2, 2, 768) and not swin_t_ours.training
    with torch.no_grad():
        for i, variant in enumerate(("none", "hv")):
            x = images.flip(crops, variant).expand(-1, 3, -1, -1)
            want = ref.flatten(ref.avgpool(ref.permute(ref.norm(ref.features(x)))))
            assert torch.allclose(feats[:, i], want, rtol=0, atol=1e-5), variant
    assert not torch.allclose(feats[:, 0], feats[:, 1])  # the flip reached the backbone


def test_load_backbone_passes_the_stochastic_depth_through(tmp_path):
    """Trained, frozen-reference and pretrained-reference checkpoints: the saved rate by default,
    or the rate asked for (None: the architecture's default, 0.2 for swin_t)."""
    import dataclasses

    from mammodp.fileio import sha256_file

    src = models.Classifier(models.create_backbone(TV_TINY), models.make_head("linear", 32))
    save = models.save_checkpoint
    save(
        tmp_path / "src.pt",
        spec=TV_TINY,
        head_type="linear",
        model=src,
        backbone_trained=True,
        backbone_source={"kind": "pretrained"},
    )
    ref = {
        "kind": "model",
        "path": str(tmp_path / "src.pt"),
        "sha256": sha256_file(tmp_path / "src.pt"),
    }
    spec3 = dataclasses.replace(TV_TINY, drop_path_rate=0.3)
    save(
        tmp_path / "frozen.pt",
        spec=spec3,
        head_type="mlp",
        model=models.Classifier(src.backbone, models.make_head("mlp", 32)),
        backbone_trained=False,
        backbone_source=ref,
    )
    save(
        tmp_path / "pre.pt",
        spec=spec3,
        head_type="mlp",
        model=models.Classifier(src.backbone, models.make_head("mlp", 32)),
        backbone_trained=False,
        backbone_source={"kind": "pretrained", "pretrained": "none"},
    )
    last = {}
    for name in ("src", "frozen", "pre"):
        for rate in (models.AS_SAVED, None, 0.5):
            last[name, rate] = drop_rates(models.load_backbone(tmp_path / f"{name}.pt", rate))[-1]
    assert last == {
        ("src", models.AS_SAVED): 0.2,
        ("frozen", models.AS_SAVED): 0.3,
        ("pre", models.AS_SAVED): 0.3,
        **{(n, None): 0.2 for n in ("src", "frozen", "pre")},
        **{(n, 0.5): 0.5 for n in ("src", "frozen", "pre")},
    }
    assert models.backbone_origin(tmp_path / "frozen.pt")[0] == tmp_path / "src.pt"
    assert models.backbone_origin(tmp_path / "pre.pt")[0] == tmp_path / "pre.pt"
    # Where the rule declares the source (a module prefix, a storage plugin's copy), not where
    # it was at training; its content must still be the one recorded.
    moved = tmp_path / "elsewhere" / "src.pt"
    moved.parent.mkdir()
    shutil.copy(tmp_path / "src.pt", moved)
    assert models.backbone_origin(tmp_path / "frozen.pt", origin=moved)[0] == moved
    with pytest.raises(UserError, match="changed since training"):
        models.backbone_origin(tmp_path / "frozen.pt", origin=tmp_path / "pre.pt")
    (tmp_path / "src.pt").rename(tmp_path / "gone.pt")
    with pytest.raises(UserError, match="its backbone source .*src.pt is missing"):
        models.load_backbone(tmp_path / "frozen.pt")
    assert models.load_backbone(tmp_path / "frozen.pt", origin=moved) is not None
    (tmp_path / "gone.pt").rename(tmp_path / "src.pt")
    loaded = models.load_backbone(tmp_path / "frozen.pt")
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_bf16_features_are_float32_close_to_fp32_and_trainable_on():
    """feature_precision bf16: autocast features, returned as plain float32 tensors (not
    inference-mode ones, which a head's autograd could not save) close to the fp32 ones."""
    backbone = models.create_backbone(TINY)
    images = torch.rand(6, 1, TINY.input_size, TINY.input_size) * 2 - 1
    fp32 = models.backbone_features(backbone, images, batch_size=4)
    bf16 = models.backbone_features(backbone, images, batch_size=4, precision="bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape == (6, 4, 32)
    assert not bf16.is_inference() and not torch.equal(bf16, fp32)
    cos = torch.nn.functional.cosine_similarity(bf16.flatten(1), fp32.flatten(1))
    assert cos.min() > 0.99
    head = models.make_head("mlp", 32)
    head(bf16[:, 0]).sum().backward()  # usable as training inputs
    with pytest.raises(UserError, match="feature_precision"):
        models.backbone_features(backbone, images, precision="fp16")


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_an_x86_cpu_without_bf16_hardware_warns_once(monkeypatch, caplog, native):
    """Without AVX-512 BF16 or AMX, oneDNN emulates bf16 (measured 2x slower than fp32 on an Ice
    Lake Xeon): the job says so, once, and names the fix; with either, it says nothing."""
    monkeypatch.setattr(models.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    models._warn_emulated_bf16.cache_clear()
    backbone = models.create_backbone(TINY)
    images = torch.rand(3, 1, TINY.input_size, TINY.input_size)
    with caplog.at_level("WARNING", logger=models.log.name):
        models.backbone_features(backbone, images, batch_size=2, precision="bf16")
        models.backbone_features(backbone, images, batch_size=2, precision="fp32")
    warned = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warned) == (0 if native else 1)
    assert native or "feature_precision: fp32" in warned[0]
    monkeypatch.setattr(models.platform, "machine", lambda: "arm64")
    assert models.cpu_has_native_bf16() is None  # other architectures: not ours to judge
