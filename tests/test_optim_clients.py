"""LearnedOptimizer in torch's own clients: state-dict format, DCP, hooks, compile, FSDP2, options.

The client checks of :mod:`optizoo.testing.clients` run on ``torch.optim.AdamW`` (proof that
they are right) and on optizoo's optimizers.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from collections import defaultdict

import pytest
import torch
import torch.distributed as dist
from torch import nn

from optizoo.errors import StateMismatchError
from optizoo.optim import LearnedOptimizer, LSTMOptimizer
from optizoo.rules import Adam, HierarchicalRule, LSTMRule
from optizoo.testing import (
    ConformanceError,
    check_compiled_step,
    check_dcp_round_trip,
    check_fsdp2_steps,
    check_hooks,
)


def adamw_factory(params, **kw):
    return torch.optim.AdamW(params, **{"lr": 1e-2, **kw})


def lstm_factory(params, **kw):
    """The shipped default optimizer."""
    return LSTMOptimizer(params, **kw)


def lstm_mlp_factory(params, **kw):
    """The shipped coordinate-wise LSTM (features, nominal step, learned weight decay)."""
    return LSTMOptimizer(params, weights="lstm-mlp", **kw)


def paper_lstm_factory(params, **kw):
    torch.manual_seed(0)
    return LSTMOptimizer(params, weights=None, max_chunk=40, **kw)


def learned_adam_factory(params, **kw):
    return LearnedOptimizer(params, Adam(lr=1e-2), **kw)


FACTORIES = [
    adamw_factory,
    lstm_factory,
    lstm_mlp_factory,
    paper_lstm_factory,
    learned_adam_factory,
]


def _model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).to(dtype)


def _train(m, opt, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g).to(next(m.parameters()).dtype)
        opt.zero_grad()
        m(x).float().pow(2).mean().backward()
        opt.step()


def _flat(m):
    return torch.cat([p.detach().reshape(-1).float() for p in m.parameters()])


# --------------------------------------------------------------------------- state_dict format


def test_state_dict_has_torchs_format_with_identity_in_each_group():
    m = _model()
    groups = [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": 0.5}]
    opt = LSTMOptimizer(groups, weights="lstm-mlp")
    _train(m, opt, 2)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    for group in sd["param_groups"]:
        assert group["optizoo"]["weights"] == "lstm-mlp"
        assert len(group["optizoo"]["sha256"]) == 64
    for i, p in enumerate(m.parameters()):
        st = sd["state"][i]
        step = st["step"]  # as torch's optimizers: a float32 CPU scalar tensor
        assert torch.is_tensor(step) and step.dtype == torch.float32 and step.shape == ()
        assert step.device.type == "cpu" and float(step) == 2.0
        assert st["h"].shape == (*p.shape, 2, 20)  # the parameter's shape + (layers, hidden)


def test_state_dict_identity_follows_changed_weights():
    torch.manual_seed(0)
    rule = LSTMRule(hidden_size=4)
    m = _model()
    opt = LearnedOptimizer(m.parameters(), rule)
    _train(m, opt, 1)
    before = opt.state_dict()["param_groups"][0]["optizoo"]["sha256"]
    with torch.no_grad():
        rule.head_bias.add_(1.0)  # e.g. meta-trained further
    after = opt.state_dict()["param_groups"][0]["optizoo"]["sha256"]
    assert before != after


def _legacy(sd, params):
    """The optizoo 0.1 format, by hand: top-level identity, int step, flat [n, ...] state."""
    groups = []
    for g in sd["param_groups"]:
        g = dict(g)
        identity = g.pop("optizoo")
        groups.append(g)
    state = {}
    for i, p in enumerate(params):
        st = {}
        for k, v in sd["state"][i].items():
            st[k] = int(v) if k == "step" else v.reshape(p.numel(), *v.shape[p.dim() :]).clone()
        state[i] = st
    return {"state": state, "param_groups": groups, "optizoo": identity}


@pytest.mark.parametrize("factory", [lstm_mlp_factory, paper_lstm_factory])  # 0.1's rules
def test_legacy_format_loads_and_resumes_bit_identically(factory):
    ref = _model()
    ref_opt = factory(ref.parameters())
    _train(ref, ref_opt, 3)
    legacy = _legacy(ref_opt.state_dict(), list(ref.parameters()))
    m = copy.deepcopy(ref)
    opt = factory(m.parameters())
    opt.load_state_dict(legacy)
    assert torch.is_tensor(opt.state[next(m.parameters())]["step"])
    _train(ref, ref_opt, 3, seed=1)
    _train(m, opt, 3, seed=1)
    assert torch.equal(_flat(ref), _flat(m))


def test_scalar_parameters_step_save_and_load_in_both_formats():
    # 0-d parameters: the state has no parameter dims (the shipped rule's "v" is then 0-d too)
    def params():
        return [nn.Parameter(torch.tensor(1.0)), nn.Parameter(torch.tensor(0.0))]

    def train(ps, opt, steps, seed=0):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            x = torch.randn(5, generator=g)
            opt.zero_grad()
            ((ps[0] * x + ps[1] - 2 * x) ** 2).mean().backward()
            opt.step()

    ref = params()
    ref_opt = LSTMOptimizer(ref, weights="lstm-mlp")
    train(ref, ref_opt, 3)
    assert ref_opt.state[ref[0]]["v"].shape == () and ref_opt.state[ref[0]]["h"].shape == (2, 20)
    for sd in (ref_opt.state_dict(), _legacy(ref_opt.state_dict(), ref)):
        ps = [nn.Parameter(p.detach().clone()) for p in ref]
        opt = LSTMOptimizer(ps, weights="lstm-mlp")
        opt.load_state_dict(copy.deepcopy(sd))
        mine, theirs = copy.deepcopy((ref, ref_opt))
        train(mine, theirs, 2, seed=1)
        train(ps, opt, 2, seed=1)
        assert all(torch.equal(a, b) for a, b in zip(ps, mine))


def test_legacy_format_with_other_weights_is_refused():
    m = _model()
    opt = LSTMOptimizer(m.parameters(), weights="lstm-mlp")
    _train(m, opt, 1)
    legacy = _legacy(opt.state_dict(), list(m.parameters()))
    legacy["optizoo"] = {**legacy["optizoo"], "sha256": "0" * 64}
    with pytest.raises(StateMismatchError, match="same weights"):
        LSTMOptimizer(_model().parameters(), weights="lstm-mlp").load_state_dict(legacy)
    with pytest.raises(StateMismatchError, match="not made by an optizoo"):
        LSTMOptimizer(m.parameters()).load_state_dict(
            torch.optim.AdamW(m.parameters()).state_dict()
        )
    with pytest.raises(ValueError, match="not an optimizer state_dict"):
        LSTMOptimizer(m.parameters()).load_state_dict({"state": {}})


def test_bf16_parameters_resume_bit_identically_with_float32_state():
    # torch's loader casts state to the parameter dtype (bf16): the policy hook must restore the
    # saved float32 values exactly, or the resumed run drifts
    ref = _model(dtype=torch.bfloat16)
    ref_opt = paper_lstm_factory(ref.parameters())
    _train(ref, ref_opt, 3)
    buf = io.BytesIO()
    torch.save(ref_opt.state_dict(), buf)
    buf.seek(0)
    m = copy.deepcopy(ref)
    opt = paper_lstm_factory(m.parameters())
    opt.load_state_dict(torch.load(buf, weights_only=True))
    for p, q in zip(m.parameters(), ref.parameters()):
        assert opt.state[p]["h"].dtype == torch.float32
        assert torch.equal(opt.state[p]["h"], ref_opt.state[q]["h"])
    _train(ref, ref_opt, 3, seed=1)
    _train(m, opt, 3, seed=1)
    assert torch.equal(_flat(ref), _flat(m))


def test_policy_hooks_survive_copy_and_pickle_user_hooks_do_not_as_in_torch():
    m = _model(dtype=torch.bfloat16)
    opt = paper_lstm_factory(m.parameters())
    ref = torch.optim.AdamW(_model().parameters())
    for o in (opt, ref):
        o.register_step_pre_hook(lambda *a: None)
    _train(m, opt, 1)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert len(clone._optimizer_step_pre_hooks) == len(
            copy.deepcopy(ref)._optimizer_step_pre_hooks
        )
        clone.load_state_dict(opt.state_dict())
        assert all(st["h"].dtype == torch.float32 for st in clone.state.values())


# --------------------------------------------------------------------------- client checks


@pytest.mark.parametrize("factory", FACTORIES)
def test_hooks_behave_as_for_adamw(factory):
    check_hooks(factory)


@pytest.mark.parametrize("factory", FACTORIES)
def test_dcp_round_trip(factory):
    check_dcp_round_trip(factory)


def test_compiled_step_check_passes_for_adamw():
    check_compiled_step(adamw_factory)


@pytest.mark.parametrize("weights", ["default", "lstm-mlp"])
def test_compiled_lstm_step_no_graph_breaks_and_torch_logs_shows_no_recompiles(weights):
    # the shipped optimizers (the per-tensor default and the coordinate-wise lstm-mlp) through
    # check_compiled_step (no graph break in steady state, no new frame while a tensor lr
    # changes) in a subprocess with TORCH_LOGS=recompiles, which prints every recompilation:
    # warm-up recompiles (state is created at step 1), steady state must not
    script = textwrap.dedent(
        f"""
        import sys, torch
        from optizoo.optim import LSTMOptimizer
        from optizoo.testing.clients import check_compiled_step
        check_compiled_step(
            lambda params, **kw: LSTMOptimizer(params, weights={weights!r}, **kw),
            on_steady=lambda: print("STEADY", file=sys.stderr, flush=True),
        )
        print("DONE", file=sys.stderr, flush=True)
        """
    )
    env = {**os.environ, "TORCH_LOGS": "recompiles"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    warmup, _, steady = out.stderr.partition("STEADY")
    assert "DONE" in steady
    assert "Recompiling function" in warmup  # the log is live: state creation recompiles
    assert "Recompiling function" not in steady, steady[-3000:]


def test_compiled_default_step_matches_eager():
    """torch.compile(opt.step) (inductor) of the default (per-tensor) rule gives the eager run's
    parameters to float32 rounding (rtol 1e-5, atol 1e-6; the eager step computes the bias
    corrections and progress features in double precision, the compiled one in float32)."""
    a, b = _model(), _model()
    eager, compiled = LSTMOptimizer(a.parameters()), LSTMOptimizer(b.parameters())
    step = torch.compile(compiled.step)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(8, 4, generator=g)
        for m, opt, fn in ((a, eager, eager.step), (b, compiled, step)):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            fn()
    assert torch.allclose(_flat(a), _flat(b), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_fsdp2_two_gloo_processes_match_unsharded_and_resume():
    # AdamW proves the check; the default (per-tensor: statistics all-reduced over the shards),
    # the coordinate-wise lstm-mlp and the paper's LSTM are ours (one process pair)
    check_fsdp2_steps([adamw_factory, lstm_factory, lstm_mlp_factory, paper_lstm_factory])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_sharded_parameters_with_per_tensor_and_coordinate_wise_rules(tmp_path):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        p = nn.Parameter(distribute_tensor(torch.randn(4, 3), mesh, [Shard(0)]))
        with pytest.raises(ValueError, match=r"per-tensor parts.*whole tensors.*sharded"):
            LearnedOptimizer([p], HierarchicalRule(orthogonalize=True))  # Newton-Schulz
        # the per-tensor LSTM steps shards (statistics all-reduced over the shard group: here
        # one process) as the unsharded optimizer steps whole tensors (float32: rtol 1e-6, the
        # flat path against the in-place one), its per-tensor state replicated on the mesh
        rule = HierarchicalRule(nominal_lr=0.1)
        plain = [nn.Parameter(p.detach().full_tensor().clone()), nn.Parameter(torch.randn(5))]
        q = nn.Parameter(distribute_tensor(plain[1].detach().clone(), mesh, [Shard(0)]))
        sharded_opt = LearnedOptimizer([p, q], copy.deepcopy(rule))
        plain_opt = LearnedOptimizer(plain, copy.deepcopy(rule))
        g = torch.Generator().manual_seed(3)
        for _ in range(3):
            grads = [torch.randn(4, 3, generator=g), torch.randn(5, generator=g)]
            for a, b, gr in zip((p, q), plain, grads):
                a.grad = distribute_tensor(gr.clone(), mesh, [Shard(0)])
                b.grad = gr.clone()
            sharded_opt.step()
            plain_opt.step()
        for a, b in zip((p, q), plain):
            torch.testing.assert_close(a.detach().full_tensor(), b.detach(), rtol=1e-6, atol=1e-7)
        h = sharded_opt.state[p]["tensor_h"]
        assert type(h) is type(p) and list(h.placements) == [Replicate()]
        torch.testing.assert_close(h.to_local(), plain_opt.state[plain[0]]["tensor_h"])
        p = nn.Parameter(distribute_tensor(torch.randn(4, 3), mesh, [Shard(0)]))
        opt = LearnedOptimizer([p], Adam(lr=0.1))  # coordinate-wise: steps the local shard
        p.grad = distribute_tensor(torch.ones(4, 3), mesh, [Shard(0)])
        before = p.detach().to_local().clone()
        opt.step()
        assert type(opt.state[p]["exp_avg"]) is type(p)
        assert not torch.equal(before, p.detach().to_local())
    finally:
        dist.destroy_process_group()


class _BypassesLoadHooks(torch.optim.AdamW):
    def load_state_dict(self, state_dict):  # what optizoo 0.1 did: no torch loader, no hooks
        self.state = defaultdict(dict)


class _ExtraTopLevelKey(torch.optim.AdamW):
    def state_dict(self):
        return {**super().state_dict(), "identity": "x"}

    def load_state_dict(self, state_dict):
        if "identity" not in state_dict:
            raise ValueError("no identity")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "identity"})


class _HostSyncInStep(torch.optim.SGD):
    def step(self, closure=None):
        if float(self.param_groups[0]["params"][0].grad.abs().sum()) >= 0:  # graph break
            return super().step(closure)
        return None


def test_client_checks_catch_broken_optimizers():
    with pytest.raises(ConformanceError, match="hooks saw"):
        check_hooks(lambda ps, **kw: _BypassesLoadHooks(ps, lr=1e-2, **kw))
    with pytest.raises(Exception, match="identity"):  # DCP drops the extra top-level key
        check_dcp_round_trip(lambda ps, **kw: _ExtraTopLevelKey(ps, lr=1e-2, **kw))
    with pytest.raises(ConformanceError, match="graph breaks in steady state"):
        check_compiled_step(lambda ps, **kw: _HostSyncInStep(ps, **{"lr": 1e-2, **kw}))


# --------------------------------------------------------------------------- group options


def test_weight_decay_with_adam_rule_is_adamw_per_group():
    # HF Trainer's grouping: decay for weights, none for biases; the reference is torch's AdamW
    # (the rule's lr is exp(log(1e-2)), so agreement is to float rounding: rtol 1e-5)
    def groups(m):
        return [
            {"params": [m[0].weight, m[2].weight], "weight_decay": 0.1},
            {"params": [m[0].bias, m[2].bias], "weight_decay": 0.0},
        ]

    ref, m = _model(), _model()
    _train(ref, torch.optim.AdamW(groups(ref), lr=1e-2), 5)
    opt = LearnedOptimizer(groups(m), Adam(lr=1e-2))
    _train(m, opt, 5)
    torch.testing.assert_close(_flat(m), _flat(ref), rtol=1e-5, atol=1e-7)
    no_decay = _model()
    _train(no_decay, LearnedOptimizer(no_decay.parameters(), Adam(lr=1e-2)), 5)
    assert not torch.allclose(_flat(no_decay), _flat(ref), rtol=1e-5, atol=1e-7)


def test_weight_decay_with_shipped_weights_is_decoupled_and_scaled_by_the_nominal_lr():
    torch.manual_seed(0)
    p_a, p_b = nn.Parameter(torch.randn(50)), None
    p_b = nn.Parameter(p_a.detach().clone())
    wd, lr = 0.1, 0.5
    a = LSTMOptimizer([p_a], lr=lr, weight_decay=wd)
    b = LSTMOptimizer([p_b], lr=lr)
    start = p_a.detach().clone()
    g = torch.randn(50)
    p_a.grad, p_b.grad = g.clone(), g.clone()
    a.step()
    b.step()
    nominal = float(a.rule.log_lr.detach().exp())
    # same rule update on both; only the decoupled decay differs: lr * wd * nominal_lr * p
    torch.testing.assert_close(p_a - p_b, -lr * wd * nominal * start, rtol=1e-4, atol=1e-7)


def test_weight_decay_is_refused_by_rules_without_a_step_size():
    with pytest.raises(ValueError, match=r"weight_decay=0\.01 needs a rule"):
        LSTMOptimizer(_model().parameters(), weights=None, weight_decay=0.01)
    with pytest.raises(ValueError, match=r"weight_decay=0\.01 needs a rule"):
        LSTMOptimizer([{"params": _model().parameters(), "weight_decay": 0.01}], weights=None)
    LSTMOptimizer(
        [{"params": _model().parameters(), "weight_decay": 0.0}], weights=None
    )  # HF's no-decay group is fine
    for bad in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="weight_decay must be"):
            LSTMOptimizer(_model().parameters(), weight_decay=bad)


def test_unused_group_options_are_warned_about_once():
    m = _model()
    with pytest.warns(UserWarning, match=r"ignores the param-group option.*betas"):
        opt = LSTMOptimizer([{"params": m[0].parameters(), "betas": (0.9, 0.95)}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.add_param_group({"params": m[2].parameters(), "betas": (0.9, 0.95)})  # once
        LSTMOptimizer([{"params": _model().parameters(), "initial_lr": 1.0}])  # bookkeeping


@pytest.mark.parametrize("weights", ["default", "lstm-mlp"])
def test_shipped_weights_with_bfloat16_state(weights):
    m = _model()
    opt = LSTMOptimizer(m.parameters(), weights=weights, state_dtype="bfloat16")
    default = LSTMOptimizer(_model().parameters(), weights=weights)
    ref = _model()
    _train(ref, LSTMOptimizer(ref.parameters(), weights=weights), 3)
    _train(m, opt, 3)
    assert torch.isfinite(_flat(m)).all()
    # bf16 state rounds the moments; the run stays close to the float32-state one
    assert torch.allclose(_flat(m), _flat(ref), atol=2e-2)
    for st in opt.state.values():
        floating = [v for k, v in st.items() if k != "step"]
        assert floating and all(v.dtype == torch.bfloat16 for v in floating)
    # the same weights, so the same identity as the float32-state optimizer
    assert (
        opt.state_dict()["param_groups"][0]["optizoo"]["sha256"]
        == default.state_dict()["param_groups"][0]["optizoo"]["sha256"]
    )
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        LSTMOptimizer(_model().parameters(), state_dtype="fp8")
