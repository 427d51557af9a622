"""Conformance checks for the clients a drop-in optimizer meets in the wild.

Each check takes an optimizer factory ``(params, **overrides) -> torch.optim.Optimizer`` (as in
:mod:`optizoo.testing`) and raises :class:`~optizoo.testing.ConformanceError` on failure. They
pass for ``torch.optim.AdamW`` and for optizoo's optimizers:

- :func:`check_dcp_round_trip`: ``torch.distributed.checkpoint`` ``get_state_dict`` →
  ``dcp.save`` → ``dcp.load`` → ``set_state_dict`` continues bit-identically (nested and with
  ``flatten_optimizer_state_dict=True``).
- :func:`check_hooks`: all six ``torch.optim.Optimizer`` hooks are called as for ``AdamW``, see
  what they see there, and their return values are honoured.
- :func:`check_compiled_step`: ``torch.compile(opt.step)`` has no graph break in steady state
  and does not recompile across steps or when a tensor ``lr`` changes.
- :func:`check_fsdp2_step`: two gloo processes train an MLP with unevenly sharded ``fully_shard``
  parameters; the result matches an unsharded run and a DCP checkpoint resumes bit-identically
  (the factory must be picklable: a module-level function).

>>> from optizoo.testing import check_clients
>>> def adamw(params, **kw):  # module level: the FSDP2 check pickles it into its processes
...     return torch.optim.AdamW(params, **{"lr": 1e-2, **kw})
>>> check_clients(adamw)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from optizoo.testing.optimizers import Factory
from optizoo.testing.report import ConformanceError, ConformanceReport, run_checks

__all__ = [
    "CLIENT_CHECKS",
    "check_clients",
    "check_compiled_step",
    "check_dcp_round_trip",
    "check_fsdp2_step",
    "check_fsdp2_steps",
    "check_hooks",
]

#: agreement of the sharded and the unsharded run (float32): the forward and backward of the
#: sharded run reduce in another order, so a few ulps per step are expected, not more
FSDP_RTOL = 1e-5
FSDP_ATOL = 1e-6


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConformanceError(message)


def _mlp(seed: int = 0) -> nn.Module:
    # uneven on purpose: 7 and 3 rows do not split evenly over 2 ranks
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(16, 5, generator=g), torch.randn(16, 3, generator=g)


def _train(m: nn.Module, opt: torch.optim.Optimizer, steps: range, step_fn=None) -> None:
    for i in steps:
        x, y = _batch(i)
        opt.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        (step_fn or opt.step)()


def _params(m: nn.Module) -> list[torch.Tensor]:
    out = []
    for p in m.parameters():
        t = p.detach()
        out.append(t.to_local() if hasattr(t, "to_local") else t)
    return [t.clone() for t in out]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------ DCP round trip
def check_dcp_round_trip(factory: Factory, steps: int = 3, **_: Any) -> None:
    """``get_state_dict`` → ``dcp.save`` → (fresh model and optimizer) ``dcp.load`` →
    ``set_state_dict`` continues bit-identically to an uninterrupted run, with the nested and
    the flattened (``flatten_optimizer_state_dict=True``) optimizer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_state_dict,
        set_state_dict,
    )

    ref = _mlp()
    _train(ref, factory(ref.parameters()), range(2 * steps))
    for flatten in (False, True):
        options = StateDictOptions(flatten_optimizer_state_dict=flatten)
        m = _mlp()
        opt = factory(m.parameters())
        _train(m, opt, range(steps))
        msd, osd = get_state_dict(m, opt, options=options)
        with tempfile.TemporaryDirectory() as tmp:
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=tmp)
            m2 = _mlp(seed=99)
            opt2 = factory(m2.parameters())
            msd2, osd2 = get_state_dict(m2, opt2, options=options)
            loaded = {"model": msd2, "optim": osd2}
            dcp.load(loaded, checkpoint_id=tmp)
        set_state_dict(
            m2,
            opt2,
            model_state_dict=loaded["model"],
            optim_state_dict=loaded["optim"],
            options=options,
        )
        _train(m2, opt2, range(steps, 2 * steps))
        _require(
            _same(_params(ref), _params(m2)),
            f"DCP round trip (flatten_optimizer_state_dict={flatten}) did not continue "
            "bit-identically",
        )


# ------------------------------------------------------------------------------ hooks
def _hook_log(opt: torch.optim.Optimizer) -> list[tuple]:
    """Register all six hooks on ``opt``; each appends what it saw to the returned log. The
    state_dict post-hook adds a key and the load pre-hook removes it (return values used)."""
    log: list[tuple] = []

    def step_pre(o, args, kwargs):
        log.append(("step_pre", o is opt, len(args), sorted(kwargs)))

    def step_post(o, args, kwargs):
        log.append(("step_post", o is opt, len(args), sorted(kwargs), len(o.state) > 0))

    def sd_pre(o):
        log.append(("state_dict_pre", o is opt))

    def sd_post(o, sd):
        log.append(("state_dict_post", o is opt, sorted(sd)))
        sd = dict(sd)
        sd["hooked"] = True
        return sd

    def load_pre(o, sd):
        log.append(("load_pre", o is opt, sorted(sd), sd.get("hooked")))
        sd = dict(sd)
        sd.pop("hooked", None)
        return sd

    def load_post(o):
        floating = {
            v.dtype
            for st in o.state.values()
            for k, v in st.items()
            if k != "step" and torch.is_tensor(v) and v.is_floating_point()
        }
        log.append(("load_post", o is opt, len(o.state) > 0, sorted(map(str, floating))))

    opt.register_step_pre_hook(step_pre)
    opt.register_step_post_hook(step_post)
    opt.register_state_dict_pre_hook(sd_pre)
    opt.register_state_dict_post_hook(sd_post)
    opt.register_load_state_dict_pre_hook(load_pre)
    opt.register_load_state_dict_post_hook(load_post)
    return log


def _hook_run(factory: Factory) -> tuple[list[tuple], dict[str, Any]]:
    m = _mlp()
    opt = factory(m.parameters())
    log = _hook_log(opt)
    _train(m, opt, range(2))
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    _train(m, opt, range(2, 3))
    return log, sd


def check_hooks(factory: Factory, **_: Any) -> None:
    """Each of the six hooks (step pre/post, state_dict pre/post, load_state_dict pre/post) is
    called exactly where it is for ``torch.optim.AdamW``, sees the same kinds of arguments, and
    its return value is used (a post-hook's key reaches the caller, a pre-hook's edit the
    loader)."""
    expected, _sd = _hook_run(lambda ps, **kw: torch.optim.AdamW(ps, lr=1e-2, **kw))
    got, sd = _hook_run(factory)
    _require(
        got == expected,
        f"hooks saw {got}, but torch.optim.AdamW's saw {expected}",
    )
    _require(sd.get("hooked") is True, "the state_dict post-hook's return value was ignored")


# ------------------------------------------------------------------------------ compile
def check_compiled_step(
    factory: Factory,
    warmup: int = 3,
    steady: int = 3,
    on_steady: Callable[[], None] | None = None,
    **_: Any,
) -> None:
    """``torch.compile(opt.step)`` (dynamo with the ``eager`` backend: graph capture only):
    after ``warmup`` steps, ``steady`` more steps whose tensor ``lr`` changes every step compile
    nothing new, and a steady-state step has no graph break (besides the two that
    ``torch.optim.Optimizer`` inserts on purpose around every step).
    ``on_steady`` is called when the warm-up ends (e.g. to mark a ``TORCH_LOGS`` stream)."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    try:
        m = _mlp()
        lr = torch.tensor(0.01)
        opt = factory(m.parameters(), lr=lr)
        counter = CompileCounter()
        step = torch.compile(opt.step, backend=counter)
        _train(m, opt, range(warmup), step)
        compiled = counter.frame_count
        if on_steady is not None:
            on_steady()
        for i in range(warmup, warmup + steady):
            for g in opt.param_groups:
                g["lr"].fill_(0.01 / (i + 1))  # what a scheduler does to a tensor lr
            _train(m, opt, range(i, i + 1), step)
        _require(
            counter.frame_count == compiled,
            f"torch.compile(opt.step) recompiled in steady state ({compiled} frames after "
            f"warm-up, {counter.frame_count} after {steady} more steps with a changing lr)",
        )
        # one steady-state step traced afresh: every graph break but torch.optim's own
        # deliberate ``torch._dynamo.graph_break()`` around the step (it separates the optimizer
        # from the backward, see torch/optim/optimizer.py) is a failure
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        counters.clear()
        _train(
            m,
            opt,
            range(warmup + steady, warmup + steady + 1),
            torch.compile(opt.step, backend="eager"),
        )
        breaks = [
            reason.strip().splitlines()[0]
            for reason in counters["graph_break"]
            if "User-inserted graph break" not in reason
        ]
        _require(not breaks, f"opt.step has graph breaks in steady state: {breaks}")
    finally:
        torch._dynamo.reset()


# ------------------------------------------------------------------------------ FSDP2
def _fsdp_worker(
    rank: int, world: int, init: str, out: str, factories: list[Factory], steps: int
) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (world,))
        results = [_fsdp_run(mesh, factory, steps, out, i) for i, factory in enumerate(factories)]
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _fsdp_run(mesh: Any, factory: Factory, steps: int, out: str, index: int) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.fsdp import fully_shard

    def sharded(seed: int = 0) -> nn.Module:
        m = _mlp(seed)
        for layer in m:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        return fully_shard(m, mesh=mesh)

    # uninterrupted sharded run (the same full batch on every rank: the averaged gradient is
    # the unsharded one)
    ref = sharded()
    ref_opt = factory(ref.parameters())
    _train(ref, ref_opt, range(2 * steps))
    placed = all(
        type(v) is type(p)
        for p in ref.parameters()
        for k, v in ref_opt.state[p].items()
        if k != "step" and torch.is_tensor(v)
    )
    full = [p.detach().full_tensor() for p in ref.parameters()]
    # stop at `steps`, checkpoint with DCP, resume in a fresh model and optimizer
    m = sharded()
    opt = factory(m.parameters())
    _train(m, opt, range(steps))
    msd, osd = get_state_dict(m, opt)
    ckpt = os.path.join(out, f"ckpt{index}")
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=ckpt)
    m2 = sharded(seed=99)
    opt2 = factory(m2.parameters())
    msd2, osd2 = get_state_dict(m2, opt2)  # may take DCP's zero-gradient step
    loaded = {"model": msd2, "optim": osd2}
    dcp.load(loaded, checkpoint_id=ckpt)
    set_state_dict(m2, opt2, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    _train(m2, opt2, range(steps, 2 * steps))
    return {"full": full, "placed": placed, "resumed": _same(_params(ref), _params(m2))}


def check_fsdp2_step(factory: Factory, steps: int = 3, world_size: int = 2, **_: Any) -> None:
    """Two gloo processes train an MLP whose ``fully_shard`` parameters split unevenly (7 and 3
    rows over 2 ranks): the gathered parameters match an unsharded run (``FSDP_RTOL``,
    ``FSDP_ATOL``), state tensors are placed like their parameters (DTensors), and a DCP
    checkpoint at step ``steps`` resumes bit-identically on every rank. The factory must be
    picklable (a module-level function)."""
    check_fsdp2_steps([factory], steps=steps, world_size=world_size)


def check_fsdp2_steps(factories: list[Factory], steps: int = 3, world_size: int = 2) -> None:
    """:func:`check_fsdp2_step` for several factories in one pair of processes (the process
    start-up, seconds per process, is paid once)."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        raise ConformanceError("torch.distributed is not available in this torch build")
    expected = []
    for factory in factories:
        unsharded = _mlp()
        _train(unsharded, factory(unsharded.parameters()), range(2 * steps))
        expected.append([p.detach() for p in unsharded.parameters()])
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(
            _fsdp_worker,
            args=(world_size, os.path.join(tmp, "init"), tmp, list(factories), steps),
            nprocs=world_size,
            join=True,
        )
        per_rank = [
            torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True)
            for r in range(world_size)
        ]
    for i, want in enumerate(expected):
        name = getattr(factories[i], "__name__", f"factory {i}")
        for r, results in enumerate(per_rank):
            res = results[i]
            where = f"{name}, rank {r}"
            _require(res["placed"], f"{where}: optimizer state is not placed like its DTensor")
            _require(res["resumed"], f"{where}: the DCP checkpoint did not resume bit-identically")
            for a, b in zip(res["full"], want):
                _require(
                    torch.allclose(a, b, rtol=FSDP_RTOL, atol=FSDP_ATOL),
                    f"{where}: sharded run differs from the unsharded one by "
                    f"{(a - b).abs().max().item():.3g} (rtol {FSDP_RTOL}, atol {FSDP_ATOL})",
                )


#: Client checks by name (each a callable taking the factory).
CLIENT_CHECKS: dict[str, Callable[..., None]] = {
    "dcp_round_trip": check_dcp_round_trip,
    "hooks": check_hooks,
    "compiled_step": check_compiled_step,
    "fsdp2_step": check_fsdp2_step,
}


def check_clients(
    factory: Factory, *, skip: tuple[str, ...] = (), **options: Any
) -> ConformanceReport:
    """Run every client check (except ``skip``) on ``factory``; raise
    :class:`~optizoo.testing.ConformanceError` listing the failures."""
    report = run_checks(CLIENT_CHECKS, factory, skip, options)
    if not report.ok:
        raise ConformanceError(str(report))
    return report
