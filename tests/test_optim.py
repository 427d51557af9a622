"""LearnedOptimizer / LSTMOptimizer: the torch.optim contract (via optizoo.testing) and extras."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import optizoo
from optizoo.errors import StateMismatchError, WeightsError
from optizoo.optim import LearnedOptimizer, LSTMOptimizer
from optizoo.rules import SGD, Adam, LSTMRule
from optizoo.testing import CHECKS, ConformanceError, check_optimizer, run_conformance


def adam_factory(params, **kw):
    return torch.optim.Adam(params, **{"lr": 1e-2, **kw})


def learned_adam_factory(params, **kw):
    return LearnedOptimizer(params, Adam(lr=1e-2), **kw)


torch.manual_seed(0)
_FRESH_LSTM = LSTMRule()


def lstm_factory(params, **kw):
    return LearnedOptimizer(params, _FRESH_LSTM, max_chunk=50, **kw)


# --------------------------------------------------------------------------- conformance


def test_conformance_suite_passes_for_torch_adam():
    # proof that the checks are right: torch's own optimizer passes every core check
    check_optimizer(adam_factory)


@pytest.mark.parametrize("name", list(CHECKS))
def test_conformance_learned_adam(name):
    CHECKS[name](learned_adam_factory)


@pytest.mark.parametrize("name", [n for n in CHECKS if n != "descent"])
def test_conformance_fresh_lstm(name):
    # an untrained LSTM need not descend; every other guarantee holds (chunked at 50 coordinates)
    CHECKS[name](lstm_factory)


class _IgnoresLR(torch.optim.SGD):
    def step(self, closure=None):
        for g in self.param_groups:
            g["lr"] = 0.1
        return super().step(closure)


class _ForgetsState(torch.optim.Adam):
    def load_state_dict(self, state_dict):
        pass


class _TouchesEverything(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                p.mul_(0.999)
        return super().step(closure)


@pytest.mark.parametrize(
    "cls,kwargs,must_fail",
    [
        (_IgnoresLR, {"lr": 0.1}, {"lr_zero", "schedulers", "param_groups"}),
        (_ForgetsState, {"lr": 1e-2}, {"state_dict_resume"}),
        (_TouchesEverything, {"lr": 1e-2}, {"skips_params_without_grad", "lr_zero"}),
    ],
)
def test_conformance_suite_catches_broken_optimizers(cls, kwargs, must_fail):
    report = run_conformance(lambda params, **kw: cls(params, **{**kwargs, **kw}))
    assert must_fail <= set(report.failed), report
    with pytest.raises(ConformanceError):
        check_optimizer(lambda params, **kw: cls(params, **{**kwargs, **kw}))


# --------------------------------------------------------------------------- batching


class _CountingSGD(SGD):
    calls: list[int]

    def forward(self, grad, state, *, param=None, step):
        self.calls.append(grad.numel())
        return super().forward(grad, state, param=param, step=step)


def _many_tensors(k=300):
    return [nn.Parameter(torch.randn(3, 2)) for _ in range(k)]


def test_rule_is_called_once_per_group_not_per_parameter():
    params = _many_tensors(300)
    rule = _CountingSGD(lr=0.1)
    rule.calls = []
    opt = LearnedOptimizer([{"params": params[:100]}, {"params": params[100:]}], rule)
    sum(p.sum() for p in params).backward()
    opt.step()
    assert rule.calls == [600, 1200]


def test_chunking_bounds_each_call_and_matches_unchunked():
    params = _many_tensors(50)  # 300 coordinates
    twin = [nn.Parameter(p.detach().clone()) for p in params]
    rule = _CountingSGD(lr=0.1)
    rule.calls = []
    chunked = LearnedOptimizer(params, rule, max_chunk=128)
    whole = LearnedOptimizer(twin, Adam(lr=0.1))
    chunked_adam = LearnedOptimizer(
        [nn.Parameter(p.detach().clone()) for p in params], Adam(lr=0.1), max_chunk=7
    )
    sum(p.pow(2).sum() for p in params).backward()
    chunked.step()
    assert rule.calls == [128, 128, 44]
    # elementwise rules give bit-identical results with or without chunks
    for opt in (whole, chunked_adam):
        ps = [p for g in opt.param_groups for p in g["params"]]
        for _ in range(3):
            opt.zero_grad()
            sum((p - 1).pow(2).sum() for p in ps).backward()
            opt.step()
    for a, b in zip(whole.param_groups[0]["params"], chunked_adam.param_groups[0]["params"]):
        assert torch.equal(a, b)


def test_lstm_chunked_matches_unchunked():
    torch.manual_seed(0)
    rule = LSTMRule()
    a = [nn.Parameter(torch.randn(40, 30)), nn.Parameter(torch.randn(17))]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    oa = LearnedOptimizer(a, rule)
    ob = LearnedOptimizer(b, rule, max_chunk=100)
    for ps, opt in ((a, oa), (b, ob)):
        for _ in range(3):
            opt.zero_grad()
            sum(p.pow(2).sum() for p in ps).backward()
            opt.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- dtypes and devices


def test_bfloat16_parameters_keep_float32_state_and_dtype():
    p = nn.Parameter(torch.randn(10, dtype=torch.bfloat16))
    opt = LSTMOptimizer([p], weights=None)
    p.sum().backward()
    opt.step()
    assert p.dtype == torch.bfloat16
    assert opt.state[p]["h"].dtype == torch.float32
    # survives a state_dict round trip without being cast to bf16
    sd = opt.state_dict()
    opt2 = LearnedOptimizer([p], opt.rule)
    opt2.load_state_dict(sd)
    assert opt2.state[p]["h"].dtype == torch.float32


def test_complex_parameters_are_optimized_as_real_pairs():
    torch.manual_seed(0)
    z = nn.Parameter(torch.randn(6, dtype=torch.complex64))
    r = nn.Parameter(torch.view_as_real(z.detach()).clone())
    oz = LearnedOptimizer([z], Adam(lr=0.1))
    orr = LearnedOptimizer([r], Adam(lr=0.1))
    target = torch.randn(6, dtype=torch.complex64)
    for _ in range(5):
        oz.zero_grad()
        orr.zero_grad()
        (z - target).abs().pow(2).sum().backward()
        (torch.view_as_complex(r) - target).abs().pow(2).sum().backward()
        oz.step()
        orr.step()
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())


@pytest.mark.parametrize("lr", [-1.0, float("nan"), float("inf")])
def test_bad_lr_is_refused(lr):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="learning rate"):
        LSTMOptimizer([p], lr=lr, weights=None)
    opt = LSTMOptimizer([p], weights=None)
    with pytest.raises(ValueError, match="learning rate"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": lr})


def test_integer_parameters_and_non_rules_are_refused():
    with pytest.raises(TypeError, match="floating point"):
        LearnedOptimizer([torch.zeros(3, dtype=torch.long)], Adam())
    with pytest.raises(TypeError, match="UpdateRule"):
        LearnedOptimizer([nn.Parameter(torch.zeros(3))], torch.optim.Adam)


def test_nonfinite_policy_keeps_lstm_state_clean():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(4))
    opt = LSTMOptimizer([p], weights=None)
    p.grad = torch.tensor([1.0, float("nan"), float("-inf"), 2.0])
    opt.step()
    h = opt.state[p]["h"]
    assert torch.isfinite(h).all()
    assert not h[1].any() and not h[2].any()  # untouched: still the initial zeros
    assert h[0].any() and h[3].any()


# --------------------------------------------------------------------------- weights and state


def _step(opt, params, n=3):
    for _ in range(n):
        opt.zero_grad()
        sum(p.pow(2).sum() for p in params).backward()
        opt.step()


def test_state_dict_records_weights_and_refuses_other_weights():
    torch.manual_seed(0)
    p = [nn.Parameter(torch.randn(5))]
    opt = LSTMOptimizer(p, weights=None)
    _step(opt, p)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}  # as torch's optimizers (DCP keeps only these)
    meta = sd["param_groups"][0]["optizoo"]
    assert meta["rule"] == "lstm" and len(meta["sha256"]) == 64
    other = LSTMOptimizer([nn.Parameter(torch.randn(5))], weights=None)  # other random weights
    with pytest.raises(StateMismatchError, match="same weights"):
        other.load_state_dict(sd)
    with pytest.raises(StateMismatchError, match="not made by an optizoo"):
        other.load_state_dict(torch.optim.Adam(p).state_dict())
    same = LearnedOptimizer([nn.Parameter(torch.randn(5))], opt.rule)
    same.load_state_dict(sd)  # same weights: accepted


def test_weights_none_is_a_fresh_rule_and_rule_kwargs_apply():
    opt = LSTMOptimizer(
        [nn.Parameter(torch.zeros(2))], weights=None, rule_kwargs={"hidden_size": 8}
    )
    assert isinstance(opt.rule, LSTMRule) and opt.rule.hidden_size == 8
    assert opt.weights_name == "init"
    with pytest.raises(ValueError, match="rule_kwargs"):
        LSTMOptimizer(
            [nn.Parameter(torch.zeros(2))], weights="x.safetensors", rule_kwargs={"hidden_size": 8}
        )


def test_weight_file_round_trip(tmp_path):
    torch.manual_seed(0)
    rule = LSTMRule(hidden_size=6, preprocessor="identity")
    path = optizoo.save_rule(rule, tmp_path / "mine.safetensors", description="test")
    p = [nn.Parameter(torch.randn(4))]
    opt = LSTMOptimizer(p, weights=str(path))
    assert opt.weights_name == "mine"
    for (k, a), (_, b) in zip(rule.state_dict().items(), opt.rule.state_dict().items()):
        assert torch.equal(a, b), k
    assert opt.rule.config() == rule.config()


def test_wrong_weight_files_are_refused(tmp_path):
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(WeightsError, match="no pretrained optimizer named"):
        LSTMOptimizer(p, weights=str(tmp_path / "missing.safetensors"))
    # a foreign safetensors file (no optizoo metadata)
    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(WeightsError, match="not an optizoo weight file"):
        LSTMOptimizer(p, weights=str(tmp_path / "foreign.safetensors"))
    # not safetensors at all / truncated
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        LSTMOptimizer(p, weights=str(tmp_path / "junk.safetensors"))
    good = optizoo.save_rule(LSTMRule(), tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError):
        LSTMOptimizer(p, weights=str(tmp_path / "cut.safetensors"))
    # an Adam file where an LSTM is expected
    optizoo.save_rule(Adam(), tmp_path / "adam.safetensors")
    with pytest.raises(WeightsError, match="'adam' rule"):
        LSTMOptimizer(p, weights=str(tmp_path / "adam.safetensors"))
    # tensors that do not match the config
    rule = LSTMRule()
    bad_config = {
        "optizoo.format": "1",
        "optizoo.rule": "lstm",
        "optizoo.config": json.dumps({"hidden_size": 7}),
    }
    save_file(
        {k: v.contiguous() for k, v in rule.state_dict().items()},
        str(tmp_path / "mismatch.safetensors"),
        metadata=bad_config,
    )
    with pytest.raises(WeightsError, match=r"the config needs"):
        LSTMOptimizer(p, weights=str(tmp_path / "mismatch.safetensors"))
    # a future format version
    future = {**bad_config, "optizoo.format": "99", "optizoo.config": json.dumps(rule.config())}
    save_file(
        {k: v.contiguous() for k, v in rule.state_dict().items()},
        str(tmp_path / "future.safetensors"),
        metadata=future,
    )
    with pytest.raises(WeightsError, match="format '99'"):
        LSTMOptimizer(p, weights=str(tmp_path / "future.safetensors"))
    # non-finite weights
    nan_rule = LSTMRule()
    with torch.no_grad():
        nan_rule.head_bias.fill_(math.nan)
    optizoo.save_rule(nan_rule, tmp_path / "nan.safetensors")
    with pytest.raises(WeightsError, match="non-finite"):
        LSTMOptimizer(p, weights=str(tmp_path / "nan.safetensors"))


def test_save_rule_is_atomic(tmp_path, monkeypatch):
    path = optizoo.save_rule(LSTMRule(), tmp_path / "w.safetensors")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("optizoo.zoo.format.save", boom)
    with pytest.raises(OSError, match="disk full"):
        optizoo.save_rule(LSTMRule(), path)
    assert path.read_bytes() == before  # the old file is intact
    assert [f.name for f in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left


def test_repr_and_public_api():
    opt = optizoo.LSTMOptimizer([nn.Parameter(torch.zeros(2))], weights=None)
    assert "lstm" in repr(opt)
    assert isinstance(opt, torch.optim.Optimizer)


@pytest.mark.slow
def test_compiled_rule_matches_eager():
    # torch.compile fuses the elementwise work; results agree to float32 rounding
    torch.manual_seed(0)
    rule = LSTMRule()
    a = [nn.Parameter(torch.randn(300, 7))]
    b = [nn.Parameter(a[0].detach().clone())]
    oa, ob = LearnedOptimizer(a, rule), LearnedOptimizer(b, rule, compile=True)
    for ps, o in ((a, oa), (b, ob)):
        for _ in range(3):
            o.zero_grad()
            ps[0].pow(2).sum().backward()
            o.step()
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)


def test_empty_parameters_are_fine():
    ps = [
        nn.Parameter(torch.zeros(0)),
        nn.Parameter(torch.randn(3)),
        nn.Parameter(torch.zeros(0, 4)),
    ]
    solo = [nn.Parameter(torch.zeros(0))]
    start = ps[1].detach().clone()
    for params in (ps, solo):
        opt = LearnedOptimizer(params, Adam(lr=0.1))
        for _ in range(2):
            opt.zero_grad()
            sum(p.sum() for p in params).backward()
            opt.step()
        assert all(opt.state[p]["step"] == 2 for p in params)
    assert not torch.equal(start, ps[1])  # the non-empty parameter moved


def test_state_stays_packed_across_steps_with_mixed_dtypes():
    # bf16 and float32 parameters share a state dtype but step in separate buckets; each bucket's
    # state is one buffer (per-parameter views) that later steps update in place, never
    # re-packing (copying) it
    ps = [
        nn.Parameter(torch.randn(5)),
        nn.Parameter(torch.randn(4, dtype=torch.bfloat16)),
        nn.Parameter(torch.randn(3)),
    ]
    opt = LSTMOptimizer(ps, weights=None)
    ptrs = []
    for _ in range(3):
        opt.zero_grad()
        sum(p.float().sum() for p in ps).backward()
        opt.step()
        ptrs.append([opt.state[p]["h"].data_ptr() for p in ps])
    assert ptrs[0] == ptrs[1] == ptrs[2]  # no re-packing after the first step
    h0, h2 = opt.state[ps[0]]["h"], opt.state[ps[2]]["h"]
    assert h0.untyped_storage().data_ptr() == h2.untyped_storage().data_ptr()  # one buffer
