"""One resume state for every trainer: what is saved comes back, in place, and a state that
belongs to other settings, other data or another format is ignored with a log line."""

from __future__ import annotations

import logging

import pytest
import torch
from opacus.accountants import RDPAccountant

from mammodp import training_state
from mammodp.training_state import STATE_FORMAT, TrainingState, data_fingerprint


def _trainer(path, key="k", data="d"):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(7)
    state = TrainingState(path, key, data, modules={"net": net}, optimizers={"opt": opt})
    state.generators["noise"] = gen
    state.accountant = RDPAccountant()
    return state, net, opt, gen


def _step(net, opt, gen, accountant):
    opt.zero_grad()
    net(torch.randn(4, 3, generator=gen)).sum().backward()
    opt.step()
    accountant.step(noise_multiplier=1.0, sample_rate=0.1)


def test_a_restored_state_continues_exactly_as_an_uninterrupted_run(tmp_path):
    state, net, opt, gen = _trainer(tmp_path / "s.pt")
    _step(net, opt, gen, state.accountant)
    state.save(epoch=1, history=[0.5])
    _step(net, opt, gen, state.accountant)  # the uninterrupted run's second step
    expected = ([p.detach().clone() for p in net.parameters()], torch.rand(1))
    eps = state.accountant.get_epsilon(1e-5)

    resumed, net2, opt2, gen2 = _trainer(tmp_path / "s.pt")
    assert resumed.restore("crops") == {"epoch": 1, "history": [0.5]}
    _step(net2, opt2, gen2, resumed.accountant)
    for a, b in zip(expected[0], net2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(torch.rand(1), expected[1])  # the torch RNG came back too
    assert resumed.accountant.get_epsilon(1e-5) == pytest.approx(eps)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"key": "other"}, "for other settings"),
        ({"data": "other"}, "for other crops"),
        ({"format": STATE_FORMAT - 1}, "of an older version of this workflow"),
    ],
)
def test_a_state_that_does_not_belong_here_is_ignored(tmp_path, caplog, change, why):
    state, *_ = _trainer(tmp_path / "s.pt")
    state.save(epoch=3)
    saved = torch.load(tmp_path / "s.pt", weights_only=False)
    torch.save({**saved, **change}, tmp_path / "s.pt")
    with caplog.at_level(logging.INFO, logger="mammodp.training_state"):
        assert _trainer(tmp_path / "s.pt")[0].restore("crops") is None
    assert f"saved training state is {why}: starting afresh" in caplog.text


def test_an_unreadable_state_is_ignored_and_a_missing_one_is_none(tmp_path, caplog):
    assert _trainer(tmp_path / "none.pt")[0].restore("crops") is None
    (tmp_path / "s.pt").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="mammodp.training_state"):
        assert _trainer(tmp_path / "s.pt")[0].restore("crops") is None
    assert "cannot read training state" in caplog.text


def test_the_data_fingerprint_sees_values_dtype_shape_and_source():
    x = torch.arange(6.0)
    base = data_fingerprint(x)
    assert data_fingerprint(x.clone()) == base
    assert data_fingerprint(x + 1e-3) != base
    assert data_fingerprint(x.double()) != base
    assert data_fingerprint(x.reshape(2, 3)) != base
    assert data_fingerprint(x, source_sha256="abc") != base


def test_data_fingerprint_is_deterministic_and_sensitive():
    x, y = torch.arange(12.0).reshape(3, 4), torch.tensor([0, 1, 0])
    fp = training_state.data_fingerprint(x, y)
    assert fp == training_state.data_fingerprint(x.clone(), y.clone())
    assert fp == training_state.data_fingerprint(
        x.t().contiguous().t(), y
    )  # layout does not matter
    assert fp != training_state.data_fingerprint(x, torch.tensor([0, 1, 1]))
    assert fp != training_state.data_fingerprint(x.reshape(4, 3), y)
    assert fp != training_state.data_fingerprint(x.double(), y)
    assert fp != training_state.data_fingerprint(x, y, source_sha256="0" * 64)
    assert training_state.data_fingerprint(x.bfloat16(), torch.tensor([True, False]))  # any dtype
