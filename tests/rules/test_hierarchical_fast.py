"""HierarchicalRule's fast paths against a plain reference implementation of the same math.

The reference below is written from the documented formulas (module docstring of
optizoo.rules.hierarchical, TensorStats, the LSTM gate order) with per-tensor Python loops and no
optizoo code but the rule's weights; every path must match it: ``step_foreach`` (the optimizer's
in-place path) and ``forward`` with and without autograd. Tolerances: 1e-6 relative in float32
(a few roundings of the reordered sums), 1e-12 in float64.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import optizoo
from optizoo.rules import HierarchicalRule
from optizoo.rules.parts import Segments

SHAPES = [(6, 5), (6,), (3, 6), (3,), (1,)]
TINY = 1e-30


def _rule(normalize: bool, dtype: torch.dtype, seed: int = 0) -> HierarchicalRule:
    rule = HierarchicalRule(normalize=normalize, nominal_lr=0.01, weight_decay=0.05).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a non-trivial learned part (the zero head would hide it)
        for p in rule.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
    return rule


def _reference_step(rule, thetas, grads, st, t):
    """One step, per tensor, from the formulas. ``st``: per tensor dicts m (list), v, h, c, lg.
    Returns the updates (one per tensor); mutates ``st``."""
    betas, b2, eps = rule.moments.betas, rule.moments.beta2, rule.moments.eps
    w_ih = rule.cell.weights[0].detach()
    b_ih = rule.cell.biases[0].detach()
    hw, hb = rule.head.weight.detach(), rule.head.bias.detach()
    s, hidden = rule.max_log_scale, rule.cell.hidden_size
    updates = []
    for theta, g, z, shape in zip(thetas, grads, st, SHAPES):
        n = g.numel()
        z["v"] = b2 * z["v"] + (1 - b2) * g * g
        z["m"] = [b * m + (1 - b) * g for b, m in zip(betas, z["m"])]
        denom = z["v"].sqrt() / math.sqrt(1 - b2**t) + eps
        d = [m / (1 - b**t) / denom for b, m in zip(betas, z["m"])] + [g / denom]
        m0 = z["m"][0]
        gg, mm = (g * g).sum(), (m0 * m0).sum()
        cos = (g * m0).sum() / torch.clamp(gg * mm, min=TINY).sqrt()
        log_d = torch.clamp((d[0] ** 2).mean(), min=TINY).log() / 10
        log_p = torch.clamp((theta**2).mean(), min=TINY).log() / 10
        lg = torch.clamp(gg / n, min=TINY).log() / 2
        trend = torch.clamp(lg - z["lg"], -5, 5) if t > 1 else torch.zeros_like(lg)
        fan_in = n / shape[0] if len(shape) >= 2 else 1.0
        x = torch.stack(
            [cos, log_d.clamp(-4, 2), log_p.clamp(-4, 2), trend]
            + [torch.tensor(math.tanh(t / tau), dtype=g.dtype) for tau in rule.stats.progress]
            + [
                torch.tensor(math.log10(n) / 7, dtype=g.dtype),
                torch.tensor(1.0 if len(shape) >= 2 else 0.0, dtype=g.dtype),
                torch.tensor(math.log10(max(fan_in, 1.0)) / 4, dtype=g.dtype),
            ]
        )
        z["lg"] = lg
        gates = w_ih @ torch.cat([x, z["h"]]) + b_ih  # input, forget, output, candidate
        i, f, o = (torch.sigmoid(gates[k * hidden : (k + 1) * hidden]) for k in range(3))
        cand = torch.tanh(gates[3 * hidden :])
        z["c"] = f * z["c"] + i * cand
        z["h"] = o * torch.tanh(z["c"])
        out = hw @ z["h"] + hb
        lr = torch.exp(rule.log_lr.detach() + s * torch.tanh(out[0]))
        wd = torch.exp(rule.log_wd.detach() + s * torch.tanh(out[1]))
        w = rule.mix_scale * torch.tanh(out[2:])
        w[0] += 1.0
        if rule.normalize:  # each raw direction m_k / denom divided by its RMS (+ 1e-12)
            raw = [dk * (1 - b**t) for dk, b in zip(d, betas)] + [d[-1]]
            d = [r / ((r**2).mean().sqrt() + rule.rms.eps) for r in raw]
        updates.append(-lr * (sum(wk * dk for wk, dk in zip(w, d)) + wd * theta))
    return updates


def _problem(dtype, steps=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    thetas = [torch.randn(s, generator=g, dtype=dtype).reshape(-1) * 0.3 for s in SHAPES]
    grads = [
        [
            torch.randn(s, generator=g, dtype=dtype).reshape(-1) * 10.0 ** (-k)
            for k, s in enumerate(SHAPES)
        ]
        for _ in range(steps)
    ]
    return thetas, grads


def _fresh_reference_state(rule, dtype):
    k, h = len(rule.moments.betas), rule.cell.hidden_size
    return [
        {
            "m": [torch.zeros(math.prod(s), dtype=dtype) for _ in range(k)],
            "v": torch.zeros(math.prod(s), dtype=dtype),
            "h": torch.zeros(h, dtype=dtype),
            "c": torch.zeros(h, dtype=dtype),
            "lg": torch.zeros((), dtype=dtype),
        }
        for s in SHAPES
    ]


def _tol(dtype):
    return 1e-6 if dtype == torch.float32 else 1e-12


def _assert_updates(got, want, dtype):
    for a, b in zip(got, want):
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=_tol(dtype), atol=_tol(dtype) * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(
    "path", ["foreach", "forward_no_grad", "forward_autograd", "tensor_step", "compiled"]
)
def test_fast_and_differentiable_paths_match_the_reference(path, normalize, dtype):
    """Every path against the reference; ``tensor_step`` passes the step as a 0-d float32
    tensor (what a compiled optimizer step does), ``compiled`` also runs ``forward`` through
    ``torch.compile(fullgraph=True)`` (graph capture only: a graph break fails)."""
    rule = _rule(normalize, dtype)
    forward = rule
    if path == "compiled":
        torch._dynamo.reset()
        forward = torch.compile(rule, backend="eager", fullgraph=True)
    seg = Segments(SHAPES)
    thetas, grads = _problem(dtype)
    ref_state = _fresh_reference_state(rule, dtype)
    flat = torch.cat(thetas)
    state = rule.init_state(flat, segments=seg)
    keys = rule.moments.state_keys
    for t, g in enumerate(grads, start=1):
        want = _reference_step(rule, thetas, g, ref_state, t)
        if path == "foreach":
            lists = {k: seg.split(state[k]) for k in keys}  # views: updated in place
            with torch.no_grad():
                got, tensor_state = rule.step_foreach(
                    list(g), thetas, {**state, **lists}, step=t, segments=seg
                )
            state.update(tensor_state)
        else:
            step = torch.tensor(float(t)) if path in ("tensor_step", "compiled") else t
            with torch.set_grad_enabled(path == "forward_autograd"):
                u, state = forward(torch.cat(g), state, param=flat, step=step, segments=seg)
            got = seg.split(u.detach())
            state = {k: v.detach() for k, v in state.items()}
        _assert_updates(got, want, dtype)
        # the state carries on: the next step checks it too (and directly here)
        for i, z in enumerate(ref_state):
            torch.testing.assert_close(seg.split(state["v"])[i], z["v"], rtol=_tol(dtype), atol=0.0)
            torch.testing.assert_close(
                state["tensor_h"][i, 0], z["h"], rtol=_tol(dtype), atol=_tol(dtype)
            )


@pytest.mark.parametrize("maximize", [False, True])
def test_optimizer_takes_the_fast_path_and_matches_the_reference(maximize, monkeypatch):
    """LearnedOptimizer (float64) with lr ≠ 1 (and maximize) through step_foreach, against the
    reference plus the adapter's documented arithmetic ``p += lr · update``."""
    dtype = torch.float64
    rule = _rule(True, dtype)
    calls = []
    original = rule.step_foreach
    monkeypatch.setattr(rule, "step_foreach", lambda *a, **k: calls.append(1) or original(*a, **k))
    thetas, grads = _problem(dtype)
    params = [torch.nn.Parameter(t.clone().reshape(s)) for t, s in zip(thetas, SHAPES)]
    lr = 0.5
    opt = optizoo.LearnedOptimizer(params, rule=rule, lr=lr, maximize=maximize)
    ref_rule = copy.deepcopy(rule)
    ref_state = _fresh_reference_state(ref_rule, dtype)
    ref = [t.clone() for t in thetas]
    for t, g in enumerate(grads, start=1):
        for p, gi in zip(params, g):
            p.grad = gi.reshape(p.shape).clone()
        opt.step()
        seen = [-gi for gi in g] if maximize else g
        ups = _reference_step(ref_rule, ref, seen, ref_state, t)
        ref = [r + lr * u for r, u in zip(ref, ups)]
    assert len(calls) == len(grads)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach().reshape(-1), r, rtol=1e-12, atol=1e-13)


def test_nonfinite_gradients_fall_back_to_masking():
    """A non-finite gradient takes the masking path (step_foreach would pollute the state)."""
    p = torch.nn.Parameter(torch.ones(4))
    q = torch.nn.Parameter(torch.ones(3))
    opt = optizoo.LearnedOptimizer([p, q], rule=HierarchicalRule(nominal_lr=0.1))
    p.grad = torch.tensor([1.0, float("nan"), -1.0, 2.0])
    q.grad = torch.ones(3)
    opt.step()
    assert torch.isfinite(opt.state[p]["v"]).all() and torch.isfinite(opt.state[p]["m0"]).all()
    assert p[1] == 1.0 and (q < 1.0).all()


def test_step_foreach_refuses_autograd_and_orthogonalize():
    rule = HierarchicalRule()
    seg = Segments([(3,)])
    state = rule.init_state(torch.zeros(3), segments=seg)
    lists = {k: [state[k]] for k in rule.moments.state_keys}
    with pytest.raises(RuntimeError, match="no_grad"):
        rule.step_foreach(
            [torch.ones(3)], [torch.zeros(3)], {**state, **lists}, step=1, segments=seg
        )
    assert not HierarchicalRule(orthogonalize=True).supports_foreach()


def _shards(t: torch.Tensor, cut: int) -> list[torch.Tensor]:
    """A flat tensor's two shards (the first ``cut`` coordinates and the rest), as FSDP2's
    row shards are (any cut: the sums are order-free); ``cut`` may leave one empty."""
    return [t[:cut], t[cut:]]


@pytest.mark.parametrize("normalize", [False, True])
def test_shards_with_reduced_statistics_step_as_whole_tensors(normalize):
    """Two shards of every tensor (one of them empty for the last tensor), each stepped with
    ``Segments(shapes, sizes=..., reduce=...)`` whose reduce adds the other shard's partial sums
    (what an all-reduce over 2 ranks returns): the shards' updates and per-tensor state equal
    the whole tensors' (float64, 1e-12), and one reduce per step carries the statistics (plus
    one per direction with ``normalize``)."""
    dtype = torch.float64
    rule = _rule(normalize, dtype)
    thetas, grads = _problem(dtype)
    cuts = [math.prod(s) // 2 for s in SHAPES[:-1]] + [0]
    flat = torch.cat(thetas)
    whole = Segments(SHAPES)
    state = rule.init_state(flat, segments=whole)
    local = [[_shards(t, c)[r] for t, c in zip(thetas, cuts)] for r in range(2)]
    sizes = [[x.numel() for x in local[r]] for r in range(2)]
    shard_state = [
        rule.init_state(torch.cat(local[r]), segments=Segments(SHAPES, sizes=sizes[r]))
        for r in range(2)
    ]
    for t, g in enumerate(grads, start=1):
        with torch.no_grad():
            want, state = rule(torch.cat(g), state, param=flat, step=t, segments=whole)
        g_local = [[_shards(x, c)[r] for x, c in zip(g, cuts)] for r in range(2)]
        partials: list[list[torch.Tensor]] = [[], []]
        for rank in (0, 1):  # record each shard's partial sums (the values its rank sends)
            rec = Segments(
                SHAPES, sizes=sizes[rank], reduce=lambda x, p=partials[rank]: p.append(x) or x
            )
            with torch.no_grad():
                rule(
                    torch.cat(g_local[rank]),
                    shard_state[rank],
                    param=torch.cat(local[rank]),
                    step=t,
                    segments=rec,
                )
        assert len(partials[0]) == (1 + (len(rule.moments.betas) + 1 if normalize else 0))
        got, new_states = [], []
        for rank in (0, 1):  # step each shard with the summed statistics
            other = iter(partials[1 - rank])
            seg = Segments(SHAPES, sizes=sizes[rank], reduce=lambda x, o=other: x + next(o))
            with torch.no_grad():
                u, st = rule(
                    torch.cat(g_local[rank]),
                    shard_state[rank],
                    param=torch.cat(local[rank]),
                    step=t,
                    segments=seg,
                )
            got.append(seg.split(u))
            new_states.append(st)
        shard_state = new_states
        for i, w in enumerate(whole.split(want)):
            torch.testing.assert_close(torch.cat([got[0][i], got[1][i]]), w, rtol=1e-12, atol=1e-15)
        for key in rule.tensor_state_keys:
            for rank in (0, 1):
                torch.testing.assert_close(
                    shard_state[rank][key], state[key], rtol=1e-12, atol=1e-15
                )


def test_sharded_segments_validate_and_newton_schulz_refuses_shards():
    with pytest.raises(ValueError, match="sizes must give"):
        Segments([(4, 3)], sizes=[13], reduce=lambda x: x)
    with pytest.raises(ValueError, match="needs sizes"):
        Segments([(4, 3)], reduce=lambda x: x)
    seg = Segments([(4, 3), (2,)], sizes=[6, 0], reduce=lambda x: 2 * x)
    assert seg.sharded and seg.numel == 6 and seg.full_sizes == [12, 2]
    x = torch.arange(6.0)
    torch.testing.assert_close(seg.mean_square(x), torch.tensor([2 * 55.0 / 12, 0.0]))
    rule = HierarchicalRule(orthogonalize=True)
    assert not rule.supports_sharding() and HierarchicalRule().supports_sharding()
    state = rule.init_state(torch.zeros(6), segments=seg)
    with pytest.raises(ValueError, match="whole matrices"):
        rule(torch.ones(6), state, param=torch.zeros(6), step=1, segments=seg)
