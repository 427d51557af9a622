"""``torch.optim`` adapters: run any :class:`~optizoo.rules.UpdateRule` as a drop-in optimizer.

:class:`LearnedOptimizer` owns param groups and per-parameter state like every torch optimizer.
In :meth:`~LearnedOptimizer.step` it gathers the gradients of a whole param group into one flat
batch, calls the rule once per chunk of at most ``max_chunk`` coordinates under ``no_grad``,
writes the new state back on each parameter's device and applies ``p.add_(update, alpha=lr)``.
``lr`` scales the whole update, so ``lr=0`` changes nothing and every
``torch.optim.lr_scheduler`` works.

State follows torch's conventions, so every client of ``torch.optim`` (``torch.save``,
``torch.distributed.checkpoint``, Hugging Face ``Trainer``, ``accelerate``, Lightning) handles it:

- ``state_dict()`` is exactly ``{"state", "param_groups"}``; each param group carries the weights'
  identity under ``"optizoo"`` (``{"rule", "weights", "sha256"}``), and loading a state made with
  other weights is refused. States written by optizoo ≤ 0.1 (identity as a top-level key, integer
  ``step``, flat state) still load.
- ``state[p]["step"]`` is a float32 CPU scalar tensor; every other state tensor has the
  parameter's shape followed by the rule's per-coordinate dimensions (``h``: ``[*p.shape, L, H]``),
  and is a ``DTensor`` with the parameter's placements when ``p`` is one (FSDP2); per-tensor
  state (``[1, ...]`` rows) is then a replicated ``DTensor`` on the parameter's mesh.
- All six optimizer hooks of ``torch.optim.Optimizer`` run as usual; float32 state for
  low-precision parameters survives ``load_state_dict`` (torch's loader would cast it to the
  parameter's dtype: an internal load hook restores the saved values in the rule's state dtype).

FSDP2 (``fully_shard``): a coordinate-wise rule steps each ``DTensor`` parameter on its local
shard, which needs no communication. A rule with per-tensor parts
(:attr:`~optizoo.rules.UpdateRule.per_tensor`, the default ``lstm-hierarchical-val``) steps the
local shards too when it :meth:`~optizoo.rules.UpdateRule.supports_sharding`: the per-tensor sums
its statistics need are all-reduced over each parameter's shard group (one small ``[T, 5]``
all-reduce per call), so every rank runs the same per-tensor LSTM on whole-tensor statistics;
its per-tensor state is a replicated ``DTensor``. Such a step is collective: every rank must
call ``step()`` (as FSDP2 training does). Other per-tensor rules (``orthogonalize=True``) are
refused for sharded parameters.

``torch.compile(opt.step)``: while compiling, each parameter is its own batch, the step count is
passed to the rule as a tensor and non-finite gradients are always masked, so the steady-state
step is one graph without recompiles across steps; pass ``lr`` as a 0-d tensor to change it
without recompiling.

Non-finite gradients: coordinates whose gradient is ``inf`` or ``nan`` get a zero update and keep
their previous state for that step (the rule's hidden state is never polluted); all other
coordinates step normally and training continues. This runs on-device, without host
synchronisation. Pass ``skip_nonfinite=False`` to save the masking cost when gradients are known
to be finite (e.g. under ``torch.amp.GradScaler``, which already skips such steps).

Weight decay: a group's ``weight_decay`` is a *decoupled* decay (Loshchilov & Hutter 2019)
``p ← p · (1 − lr · weight_decay · rule_lr)`` applied before the rule's update, where ``rule_lr``
is the rule's own step size (:meth:`~optizoo.rules.UpdateRule.decay_lr`); with
``optizoo.rules.Adam`` this is exactly ``torch.optim.AdamW``. Rules without a step size (the
paper's LSTM) refuse a non-zero ``weight_decay``. Other group options the adapter does not use
(``betas``, ``momentum``, ...) are warned about once.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from optizoo._validate import learning_rate, nonnegative_finite
from optizoo.errors import StateMismatchError
from optizoo.rules.base import UpdateRule, rule_kwargs, weights_sha256
from optizoo.rules.segments import Segments

try:  # torch.distributed may be unavailable (some macOS / mobile builds)
    from torch.distributed.tensor import DTensor, Replicate
except ImportError:  # pragma: no cover - depends on the torch build
    DTensor = None  # type: ignore[assignment,misc]
    Replicate = None  # type: ignore[assignment,misc]

__all__ = ["LSTMOptimizer", "LearnedOptimizer"]

#: the param-group key holding the weights' identity (and, before 0.2, the top-level key)
IDENTITY_KEY = "optizoo"
#: default chunk sizes: cache-sized on the CPU (measured in benchmarks/step.py), large on GPUs
_CPU_CHUNK = 1 << 14
_ACCELERATOR_CHUNK = 1 << 20
#: group keys the adapter uses, and keys that lr schedulers / SWA / frameworks add for their
#: own bookkeeping; any other key is an option this adapter would ignore, so it warns once
_OWN_GROUP_KEYS = frozenset({"params", "lr", "maximize", "weight_decay", IDENTITY_KEY})
_BOOKKEEPING_KEYS = frozenset(
    {"param_names", "name", "initial_lr", "max_lr", "min_lr", "base_lr", "swa_lr"}
)


def _is_dtensor(t: Any) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def _local(t: Tensor) -> Tensor:
    """The local shard of a ``DTensor`` (a view of its storage), or ``t`` itself."""
    return t.to_local() if _is_dtensor(t) else t


def _shard_key(p: Tensor) -> Any:
    """What a per-tensor rule's bucket must share for one reduction over the shards: the
    parameter's mesh and placements (``None`` for a plain tensor)."""
    return (p.device_mesh, tuple(p.placements)) if _is_dtensor(p) else None


def _shard_reduce(p: Tensor) -> Callable[[Tensor], Tensor] | None:
    """For a ``DTensor`` parameter sharded along some mesh dimensions, a function summing a
    per-tensor tensor over those dimensions' process groups (an in-place all-reduce, on every
    rank); ``None`` when ``p`` is not sharded (a plain tensor, or replicated)."""
    if not _is_dtensor(p):
        return None
    mesh = p.device_mesh
    dims = [i for i, placement in enumerate(p.placements) if placement.is_shard()]
    if not dims:
        return None

    def reduce(partial: Tensor) -> Tensor:
        out = partial.contiguous().clone()
        for dim in dims:
            dist.all_reduce(out, group=mesh.get_group(dim))
        return out

    return reduce


def _replicated_like(p: Tensor, local: Tensor) -> Tensor:
    """Per-tensor state ``local`` (``[1, ...]``, the same on every rank) of parameter ``p``: a
    replicated ``DTensor`` on ``p``'s mesh for a ``DTensor`` parameter, else ``local`` itself."""
    if not _is_dtensor(p):
        return local
    placements = [Replicate()] * p.device_mesh.ndim
    return DTensor.from_local(local, p.device_mesh, placements, run_check=False)


def _real(t: Tensor) -> Tensor:
    """``t`` as a real tensor: complex becomes (re, im) pairs in a trailing dimension."""
    return torch.view_as_real(t) if t.is_complex() else t


def _coords(p: Tensor) -> Tensor:
    """The real local coordinates of parameter (or gradient) ``p``, with ``p``'s local shape
    (plus a trailing 2 for complex)."""
    return _real(_local(p.detach()))


def _real_numel(p: Tensor) -> int:
    return _local(p).numel() * (2 if p.is_complex() else 1)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _real_shape(p: Tensor) -> torch.Size:
    return torch.view_as_real(p).shape if p.is_complex() else p.shape


def _tensor_chunks(sizes: list[int], chunk: int) -> list[tuple[int, int]]:
    """Consecutive runs ``[i, j)`` of whole tensors with at most ``chunk`` coordinates each (a
    larger tensor is a run of its own): how a per-tensor rule's batch is cut."""
    runs, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if total and total + size > chunk:
            runs.append((start, i))
            start, total = i, 0
        total += size
    runs.append((start, len(sizes)))
    return runs


class LearnedOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` that runs an :class:`~optizoo.rules.UpdateRule`.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        rule: the update rule (its meta-parameters are not trained by this optimizer).
        lr: multiplies the rule's whole update (``p += lr * update``); ``1.0`` uses the rule as
            trained. Schedulers change it per group. A 0-d tensor is accepted (no recompiles
            under ``torch.compile`` when a scheduler changes it).
        weight_decay: decoupled weight decay per step, in units of the rule's own step size
            (see the module docstring; ``0`` disables it). Per group, as in ``AdamW``.
        maximize: ascend instead of descend (the rule sees ``-grad``).
        max_chunk: most coordinates handed to the rule in one call (bounds temporary memory);
            ``None`` picks 16384 on the CPU (cache-sized) and 2^20 on accelerators.
        skip_nonfinite: mask non-finite gradient coordinates (see module docstring).
        weights_name: a name recorded in ``state_dict`` to identify the rule's weights.
        compile: run the rule through ``torch.compile`` (fuses the per-coordinate elementwise
            work; the first steps pay the compilation, tens of seconds on a small CPU, cached on
            disk by inductor for later processes). Results agree with eager execution to float
            rounding, not bit for bit. Optional: with no C++ compiler on the CPU, or if
            compilation fails, the optimizer warns once and runs eagerly.

    Example:
        >>> opt = LearnedOptimizer(model.parameters(), rule=optizoo.rules.Adam(lr=1e-3))
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        rule: UpdateRule,
        lr: float | Tensor = 1.0,
        *,
        weight_decay: float = 0.0,
        maximize: bool = False,
        max_chunk: int | None = None,
        skip_nonfinite: bool = True,
        weights_name: str = "custom",
        compile: bool = False,
    ) -> None:
        if not isinstance(rule, UpdateRule):
            raise TypeError(
                f"rule must be an optizoo.rules.UpdateRule instance, got {type(rule).__name__}; "
                "build one with e.g. optizoo.rules.LSTMRule() or optizoo.rules.Adam(lr=1e-3)"
            )
        _check_lr(lr)
        if max_chunk is not None and not (isinstance(max_chunk, int) and max_chunk > 0):
            raise ValueError(f"max_chunk must be a positive int or None, got {max_chunk!r}")
        self.rule = rule
        self.max_chunk = max_chunk
        self.skip_nonfinite = bool(skip_nonfinite)
        self.weights_name = str(weights_name)
        self.compile = bool(compile)
        self._rule_cache: dict[torch.device, tuple[tuple, Any]] = {}
        self._warned_keys: set[str] = set()
        self._identity_cache = self._identity()
        defaults = {"lr": lr, "weight_decay": weight_decay, "maximize": bool(maximize)}
        super().__init__(params, defaults)
        self._register_policy_hooks()

    def _register_policy_hooks(self) -> None:
        """Register the adapter's own state-dict hooks through torch's machinery (first, so
        that hooks a user registers later see the state as torch's optimizers present it)."""
        self._loading: list[tuple[Tensor, dict[str, Tensor]]] = []
        self.register_state_dict_pre_hook(_refresh_identity)
        self.register_load_state_dict_pre_hook(_upgrade_and_check)
        self.register_load_state_dict_post_hook(_restore_state_dtype)

    # ------------------------------------------------------------------ groups and validation
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "lr" in param_group:
            _check_lr(param_group["lr"])
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif not isinstance(params, set):  # (torch refuses sets: unordered)
            params = list(params)  # a generator would be consumed by the checks below
        param_group["params"] = params
        for p in params:
            if not (p.is_floating_point() or p.is_complex()):
                raise TypeError(
                    f"cannot optimize a parameter of dtype {p.dtype}: parameters must be "
                    "floating point or complex"
                )
            if _is_dtensor(p) and not self.rule.supports_sharding():
                raise ValueError(
                    f"rule {self.rule.rule_name!r} has per-tensor parts that need whole tensors "
                    "(e.g. Newton-Schulz orthogonalization) and cannot step a sharded (DTensor) "
                    "parameter on its local shard; use a rule that supports sharding (the "
                    "default LSTMOptimizer(params), or weights='lstm-mlp') or do not shard "
                    "these parameters (e.g. leave them out of fully_shard)"
                )
        wd = param_group.get("weight_decay", self.defaults.get("weight_decay", 0.0))
        self._check_weight_decay(wd)
        self._warn_unused_keys(param_group)
        param_group.setdefault(IDENTITY_KEY, dict(self._identity_cache))
        super().add_param_group(param_group)

    def _check_weight_decay(self, wd: Any) -> None:
        wd = nonnegative_finite(wd, "weight_decay")
        if wd != 0 and self.rule.decay_lr() is None:
            raise ValueError(
                f"weight_decay={wd!r} needs a rule with its own step size to scale the decay "
                f"(AdamW's lr * weight_decay), but rule {self.rule.rule_name!r} has none; set "
                "weight_decay=0 for this group (a learned rule may decay by itself, e.g. "
                "LSTMRule(parameterization='nominal', weight_decay=...))"
            )

    def _warn_unused_keys(self, group: dict[str, Any]) -> None:
        unused = set(group) - _OWN_GROUP_KEYS - _BOOKKEEPING_KEYS - self._warned_keys
        if unused:
            self._warned_keys |= unused
            warnings.warn(
                f"{type(self).__name__} ignores the param-group option(s) "
                f"{', '.join(sorted(unused))}: the rule {self.rule.rule_name!r} defines its own "
                "update; only lr, weight_decay and maximize are used per group",
                UserWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ the step
    def _rule_on(self, device: torch.device) -> Callable[..., Any]:
        """The rule with its meta-parameters on ``device`` (a cached copy when it lives elsewhere),
        compiled if requested."""
        tensors = list(self.rule.parameters()) + list(self.rule.buffers())
        if self.compile and device.type == "cpu" and not _have_cpp_compiler():
            self._compile_fallback("no C++ compiler was found (set CXX or install g++/clang++)")
        if all(t.device == device for t in tensors) and not self.compile:
            return self.rule
        version = tuple((id(t), t._version) for t in tensors)
        cached = self._rule_cache.get(device)
        if cached is None or cached[0] != version:
            rule = (
                self.rule
                if all(t.device == device for t in tensors)
                else deepcopy(self.rule).to(device)
            )
            cached = (version, torch.compile(rule) if self.compile else rule)
            self._rule_cache[device] = cached
        return cached[1]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        # Bucket the group's parameters so that one rule call sees a homogeneous batch. Eager:
        # by (device, dtype, state dtype, step count); compiled: one parameter per bucket, so
        # that no step count is read on the host and no state needs re-packing.
        compiling = _compiling()
        buckets: dict[tuple, list[Tensor]] = defaultdict(list)
        fresh: dict[tuple, list[Tensor]] = defaultdict(list)
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise TypeError(
                    "LearnedOptimizer does not support sparse gradients; use dense gradients "
                    "(e.g. nn.Embedding(sparse=False))"
                )
            sdtype = self.rule.state_dtype(p.real.dtype if p.is_complex() else p.dtype)
            state = self.state[p]
            if not state:  # packed with exactly the parameters it will step with
                fresh[(p.device, p.dtype, sdtype)].append(p)
                count: Any = 0
            else:
                count = i if compiling else int(state["step"])
            shard = _shard_key(p) if self.rule.per_tensor else None  # one reduction per call
            buckets[(p.device, p.dtype, sdtype, count, shard)].append(p)
        for (_device, _pdtype, sdtype), params in fresh.items():
            self._init_state(params, sdtype)
        for (device, _pdtype, sdtype, count, _shard), params in buckets.items():
            if compiling:
                # one parameter per bucket: its step tensor goes to the rule as it is
                for p in params:
                    step_t = self.state[p]["step"]
                    step_t.add_(1)
                    self._step_bucket([p], device, sdtype, step_t, group)
            else:
                self._step_bucket(params, device, sdtype, count + 1, group)
                torch._foreach_add_([self.state[p]["step"] for p in params], 1.0)

    def _init_state(self, params: list[Tensor], sdtype: torch.dtype) -> None:
        """Fresh state for ``params``, allocated as one packed buffer per state key; each
        parameter's per-coordinate state is a view with the parameter's (local) shape, wrapped
        as a DTensor with the parameter's placements for a DTensor parameter; per-tensor state
        (:attr:`~optizoo.rules.UpdateRule.tensor_state_keys`) is one ``[1, ...]`` row each."""
        coords = [_coords(p) for p in params]
        flat = torch.cat([c.reshape(-1) for c in coords]).to(sdtype)
        packed = self.rule.init_state(
            flat, **rule_kwargs(self.rule, lambda: [c.shape for c in coords])
        )
        sizes = [c.numel() for c in coords]
        tensor_keys = set(self.rule.tensor_state_keys)
        for p in params:
            self.state[p]["step"] = torch.zeros((), dtype=torch.float32)
        for key, buf in packed.items():
            if key in tensor_keys:
                for p, view in zip(params, torch.split(buf, 1)):
                    self.state[p][key] = _replicated_like(p, view)
                continue
            for p, c, view in zip(params, coords, torch.split(buf, sizes)):
                self.state[p][key] = _like_param(p, view.view((*c.shape, *buf.shape[1:])))

    def _coordinate_state(self, p: Tensor, key: str) -> Tensor:
        """State ``key`` of ``p`` as a ``[n, ...]`` view of its local storage (``[1, ...]`` for
        per-tensor state)."""
        t = _local(self.state[p][key])
        if key in self.rule.tensor_state_keys:
            return t
        return t.view((_real_numel(p), *t.shape[_coords(p).dim() :]))

    def _packed(self, params: list[Tensor], key: str, total: int) -> Tensor:
        """All ``params``' state ``key`` as one ``[total, ...]`` tensor whose rows are the
        per-parameter state tensors (views of one buffer). Re-packs (one copy) when the
        per-parameter tensors are not adjacent, e.g. after ``load_state_dict``."""
        if len(params) == 1:
            return self._coordinate_state(params[0], key)
        tensors = [self._coordinate_state(p, key) for p in params]
        first = tensors[0]
        expected = first.data_ptr()
        storage = first.untyped_storage().data_ptr()
        adjacent = True
        for t in tensors:
            if (
                t.data_ptr() != expected
                or not t.is_contiguous()
                or t.untyped_storage().data_ptr() != storage
            ):
                adjacent = False
                break
            expected += t.numel() * t.element_size()
        if adjacent:
            return first.as_strided(
                (total, *first.shape[1:]), first.stride(), first.storage_offset()
            )
        packed = torch.cat(tensors)
        for p, view in zip(params, torch.split(packed, [t.shape[0] for t in tensors])):
            if key in self.rule.tensor_state_keys:
                self.state[p][key] = _replicated_like(p, view)
                continue
            shape = _coords(p).shape
            self.state[p][key] = _like_param(p, view.view((*shape, *view.shape[1:])))
        return packed

    def _step_bucket(
        self,
        params: list[Tensor],
        device: torch.device,
        sdtype: torch.dtype,
        step: int | Tensor,
        group: dict[str, Any],
    ) -> None:
        maximize = group["maximize"]
        rule = self._rule_on(device)
        compiling = _compiling()
        sizes = [_real_numel(p) for p in params]
        total = sum(sizes)
        # shards of a per-tensor rule: every rank reduces the statistics, even with nothing local
        reduce = _shard_reduce(params[0]) if self.rule.per_tensor else None
        if total == 0 and reduce is None:  # only empty parameters or shards: nothing to update
            return
        if self._foreach_applies(rule, params, sdtype, step) and self._step_foreach(
            rule, params, sizes, step, group
        ):
            return
        grads = torch.cat([_coords(p.grad).reshape(-1) for p in params]).to(sdtype)
        if maximize:
            grads = grads.neg_()
        flat_params = (
            torch.cat([_coords(p).reshape(-1) for p in params]).to(sdtype)
            if self.rule.needs_param
            else None
        )
        keys = [k for k in self.state[params[0]] if k != "step"]
        tensor_keys = set(self.rule.tensor_state_keys)
        state = {
            k: self._packed(params, k, len(params) if k in tensor_keys else total) for k in keys
        }

        chunk = (
            self.max_chunk
            or self.rule.preferred_chunk
            or (_CPU_CHUNK if device.type == "cpu" else _ACCELERATOR_CHUNK)
        )
        if self.rule.per_tensor:  # whole tensors per call, with their shapes
            offsets = [0]
            for size in sizes:
                offsets.append(offsets[-1] + size)
            shapes = [_real_shape(p) for p in params]
            if reduce is None:
                calls = [
                    (offsets[i], offsets[j], i, j, rule_kwargs(self.rule, shapes[i:j]))
                    for i, j in _tensor_chunks(sizes, chunk)
                ]
            else:  # shards: runs cut by whole-tensor sizes, the same calls on every rank
                whole = [math.prod(s) for s in shapes]
                calls = [
                    (
                        offsets[i],
                        offsets[j],
                        i,
                        j,
                        {"segments": Segments(shapes[i:j], sizes=sizes[i:j], reduce=reduce)},
                    )
                    for i, j in _tensor_chunks(whole, chunk)
                ]
        else:
            calls = [(lo, min(total, lo + chunk), 0, 0, {}) for lo in range(0, total, chunk)]
        updates = []
        for lo, hi, ti, tj, kw in calls:
            g = grads[lo:hi]
            old = {  # views: no copy
                k: v[ti:tj] if k in tensor_keys else v[lo:hi] for k, v in state.items()
            }
            # Non-finite gradients: mask on-device without a host sync on accelerators; on the
            # CPU (eager) a check costs nothing, so the masking passes run only when needed
            # (a sum is finite iff every term is, barring overflow: one pass instead of four).
            mask = self.skip_nonfinite
            if mask and not compiling and g.device.type == "cpu" and bool(torch.isfinite(g.sum())):
                mask = False
            if mask:
                finite = torch.isfinite(g)
                if not compiling and g.device.type == "cpu" and bool(finite.all()):
                    mask = False
                else:
                    g = torch.where(finite, g, torch.zeros((), dtype=g.dtype, device=g.device))
            param = flat_params[lo:hi] if flat_params is not None else None
            try:
                update, new = rule(g, old, param=param, step=step, **kw)
            except Exception as exc:
                if not self.compile:
                    raise
                self._compile_fallback(f"compilation failed ({type(exc).__name__}: {exc})")
                rule = self._rule_on(device)
                update, new = rule(g, old, param=param, step=step, **kw)
            if mask:
                zero = torch.zeros((), dtype=update.dtype, device=device)
                update = torch.where(finite, update, zero)
                new = {  # per-tensor state saw the zeroed gradient: keep it
                    k: v
                    if k in tensor_keys
                    else torch.where(finite.view(-1, *([1] * (v.dim() - 1))), v, old[k])
                    for k, v in new.items()
                }
            for k in keys:
                old[k].copy_(new[k])  # write back in place, into every parameter's state
            updates.append(update)

        update = updates[0] if len(updates) == 1 else torch.cat(updates)
        views = [_coords(p) for p in params]
        update = update.to(views[0].dtype)
        self._apply(views, list(torch.split(update, sizes)), group)

    def _foreach_applies(
        self, rule: Any, params: list[Tensor], sdtype: torch.dtype, step: int | Tensor
    ) -> bool:
        """Whether this bucket can take the rule's in-place per-tensor path
        (:meth:`~optizoo.rules.HierarchicalRule.step_foreach`): an eager step of a rule that
        has one, on parameters (and gradients) already in the state dtype."""
        supports = getattr(rule, "supports_foreach", None)
        if self.compile or _compiling() or torch.is_grad_enabled() or isinstance(step, Tensor):
            return False
        if not (isinstance(rule, UpdateRule) and callable(supports) and supports()):
            return False
        return all(
            not _is_dtensor(p)
            and _coords(p).dtype == sdtype
            and _coords(p.grad).dtype == sdtype
            and p.grad.shape == p.shape
            for p in params
        )

    def _step_foreach(
        self, rule: Any, params: list[Tensor], sizes: list[int], step: int, group: dict[str, Any]
    ) -> bool:
        """One bucket through the rule's in-place per-tensor path: no flat concatenation of
        gradients, parameters or updates, state updated where it lives. Runs of whole tensors
        of at most ``max_chunk`` coordinates (the rule's ``preferred_chunk`` by default) bound
        the temporaries. Returns ``False``, before touching any state, when a gradient is
        non-finite and ``skip_nonfinite`` is set: the masking path then takes the bucket."""
        grads = [_coords(p.grad).reshape(-1) for p in params]
        norms = torch._foreach_norm(grads)  # the statistics need them; finite iff g is
        if self.skip_nonfinite and not bool(torch.isfinite(torch.stack(norms)).all()):
            return False
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        flat = [_coords(p).reshape(-1) for p in params]
        keys = [k for k in self.state[params[0]] if k != "step"]
        tensor_keys = set(self.rule.tensor_state_keys)
        chunk = self.max_chunk or self.rule.preferred_chunk or _CPU_CHUNK
        updates: list[Tensor] = []
        for i, j in _tensor_chunks(sizes, chunk):
            run = params[i:j]
            state: dict[str, Any] = {}
            for k in keys:
                if k in tensor_keys:
                    state[k] = self._packed(run, k, len(run))
                else:
                    state[k] = [self._coordinate_state(p, k).view(-1) for p in run]
            kw = rule_kwargs(self.rule, [_real_shape(p) for p in run])
            out, new = rule.step_foreach(
                grads[i:j], flat[i:j], state, step=step, grad_norms=norms[i:j], **kw
            )
            for k in tensor_keys:
                state[k].copy_(new[k])
            updates += out
        self._apply([_coords(p) for p in params], updates, group)
        return True

    def _apply(self, views: list[Tensor], updates: list[Tensor], group: dict[str, Any]) -> None:
        """``p ← p · (1 − lr · wd · rule_lr) + lr · update`` for every parameter view (the
        decoupled decay first, as AdamW); ``updates`` are flat, one per view."""
        lr, wd = group["lr"], group.get("weight_decay", 0.0)
        if wd != 0:  # decoupled weight decay, before the update (as AdamW)
            self._decay(views, lr, wd)
        pieces = [u.view(v.shape) for u, v in zip(updates, views)]
        if isinstance(lr, Tensor):
            torch._foreach_mul_(pieces, lr.to(device=pieces[0].device, dtype=pieces[0].dtype))
            torch._foreach_add_(views, pieces)
        elif lr != 1.0:
            torch._foreach_add_(views, pieces, alpha=lr)
        else:
            torch._foreach_add_(views, pieces)

    def _decay(self, views: list[Tensor], lr: float | Tensor, wd: float) -> None:
        rule_lr = self.rule.decay_lr()
        assert rule_lr is not None  # refused in add_param_group
        if _compiling() or isinstance(lr, Tensor) or views[0].device.type != "cpu":
            factor = 1 - (lr * wd) * rule_lr.detach().to(views[0].device)
            torch._foreach_mul_(views, factor.to(views[0].dtype))
        else:  # AdamW's arithmetic: a Python float factor
            torch._foreach_mul_(views, 1.0 - lr * wd * float(rule_lr))

    def _compile_fallback(self, why: str) -> None:
        """Give up ``compile=True`` for this optimizer: warn once, run the rule eagerly."""
        warnings.warn(
            f"LearnedOptimizer(compile=True): {why}; running the rule eagerly (same results "
            "to float rounding, slower)",
            RuntimeWarning,
            stacklevel=3,
        )
        self.compile = False
        self._rule_cache.clear()

    # ------------------------------------------------------------------ state_dict
    def _identity(self) -> dict[str, str]:
        return {
            "rule": self.rule.rule_name,
            "weights": self.weights_name,
            "sha256": weights_sha256(self.rule),
        }

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state: ``{"state", "param_groups"}``; each group records the rule
        and its weights (name, sha256) under ``"optizoo"``."""
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state made by :meth:`state_dict` of an optimizer with the *same* rule weights.

        Runs torch's loader (and every registered load hook). Refuses (``StateMismatchError``)
        a state from another optimizer class or made with other weights; accepts the format of
        optizoo ≤ 0.1 (top-level ``"optizoo"``, integer ``step``, flat ``[n, ...]`` state).
        Per-coordinate state keeps the rule's state dtype (float32 for bf16 params).
        """
        super().load_state_dict(state_dict)

    # ------------------------------------------------------------------ copy / pickle
    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer.__getstate__ keeps only defaults/state/param_groups (dropping the
        # hooks): keep the rule and settings too, drop the hooks as torch does.
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}
        state["_rule_cache"] = {}
        state.pop("_loading", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._rule_cache = {}
        self.__dict__.setdefault("_warned_keys", set())
        if "_loading" not in self.__dict__:  # unpickled / copied (torch's loader calls this too)
            self._register_policy_hooks()

    def __repr__(self) -> str:
        head = f"{type(self).__name__}(rule={self.rule.rule_name}, weights={self.weights_name!r}"
        groups = ", ".join(
            f"group {i}: lr={g['lr']}, {len(g['params'])} params"
            for i, g in enumerate(self.param_groups)
        )
        return f"{head}; {groups})"


def _like_param(p: Tensor, local: Tensor) -> Tensor:
    """``local`` (state with ``p``'s local shape plus trailing dims) placed like ``p``: a DTensor
    with ``p``'s mesh and placements for a DTensor parameter, else ``local`` itself."""
    if not _is_dtensor(p):
        return local
    trailing = local.shape[_coords(p).dim() :]
    shape = torch.Size((*p.shape, *((2,) if p.is_complex() else ()), *trailing))
    stride = _contiguous_stride(shape)
    return DTensor.from_local(local, p.device_mesh, p.placements, shape=shape, stride=stride)


def _contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    stride, acc = [], 1
    for size in reversed(shape):
        stride.append(acc)
        acc *= max(size, 1)
    return tuple(reversed(stride))


# ---------------------------------------------------------------------- state-dict hooks
def _refresh_identity(opt: LearnedOptimizer) -> None:
    """state_dict pre-hook: record the rule's *current* weights (they may have been trained
    since construction) in every param group."""
    opt._identity_cache = opt._identity()
    for group in opt.param_groups:
        group[IDENTITY_KEY] = dict(opt._identity_cache)


def _upgrade_and_check(opt: LearnedOptimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """load_state_dict pre-hook: upgrade the optizoo ≤ 0.1 format, refuse other weights, and
    keep the saved floating state so that :func:`_restore_state_dtype` can restore it."""
    if (
        not isinstance(state_dict, dict)
        or "state" not in state_dict
        or "param_groups" not in state_dict
    ):
        raise ValueError(
            "not an optimizer state_dict: expected a dict with 'state' and 'param_groups'"
        )
    groups = [dict(g) for g in state_dict["param_groups"]]
    legacy = state_dict.get(IDENTITY_KEY)
    if legacy is not None:  # optizoo <= 0.1: one identity at the top level
        for g in groups:
            g.setdefault(IDENTITY_KEY, legacy)
    mine = opt._identity()
    for g in groups:
        meta = g.get(IDENTITY_KEY)
        if not isinstance(meta, dict):
            raise StateMismatchError(
                "this state_dict was not made by an optizoo LearnedOptimizer (no 'optizoo' "
                "entry in its param groups); a torch optimizer's state cannot be loaded into "
                "a learned optimizer"
            )
        if meta.get("rule") != mine["rule"] or meta.get("sha256") != mine["sha256"]:
            raise StateMismatchError(
                f"optimizer state was made with rule {meta.get('rule')!r} weights "
                f"{meta.get('weights')!r} (sha256 {str(meta.get('sha256'))[:12]}…), but this "
                f"optimizer has rule {mine['rule']!r} weights {mine['weights']!r} (sha256 "
                f"{mine['sha256'][:12]}…); construct the optimizer with the same weights"
            )
        if "lr" in g:
            _check_lr(g["lr"])
        g[IDENTITY_KEY] = dict(mine)
    if len(groups) != len(opt.param_groups):
        raise ValueError(
            f"state_dict has {len(groups)} param groups, optimizer has {len(opt.param_groups)}"
        )
    id_map: dict[Any, Tensor] = {}
    for saved, group in zip(groups, opt.param_groups):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(
                "a param group in the state_dict has a different number of parameters "
                f"({len(saved['params'])}) than the optimizer's ({len(group['params'])})"
            )
        id_map.update(zip(saved["params"], group["params"]))
    new_state: dict[Any, dict[str, Any]] = {}
    opt._loading = []
    for pid, pstate in state_dict["state"].items():
        if pid not in id_map:
            raise ValueError(f"state_dict has state for unknown parameter id {pid!r}")
        p = id_map[pid]
        shape = tuple(_coords(p).shape) if not _is_dtensor(p) else None
        n = _real_numel(p) if not _is_dtensor(p) else None
        out: dict[str, Any] = {}
        keep: dict[str, Tensor] = {}
        template = _state_template(opt, p) if shape is not None else None
        if template is not None and set(pstate) - {"step"} != set(template):
            raise ValueError(
                f"state of parameter {pid!r} has keys {sorted(set(pstate) - {'step'})}, but rule "
                f"{opt.rule.rule_name!r} keeps {sorted(template)}: not this rule's state"
            )
        for k, v in pstate.items():
            if k == "step":
                step = float(v) if isinstance(v, (int, float, Tensor)) else math.nan
                if not (math.isfinite(step) and step >= 0):
                    raise ValueError(f"state 'step' of parameter {pid!r} must be >= 0, got {v!r}")
                out[k] = torch.as_tensor(step, dtype=torch.float32)
                continue
            if template is not None and not isinstance(v, Tensor):
                raise ValueError(
                    f"state {k!r} of parameter {pid!r} must be a tensor, got {type(v).__name__}"
                )
            per_tensor = k in opt.rule.tensor_state_keys  # one [1, ...] row per tensor
            if isinstance(v, Tensor) and shape is not None and not _is_dtensor(v) and per_tensor:
                want_shape = None if template is None else (1, *template[k].shape[1:])
                if want_shape is not None and tuple(v.shape) != want_shape:
                    raise ValueError(
                        f"per-tensor state {k!r} of shape {tuple(v.shape)} does not match the "
                        f"rule's per-tensor state shape {want_shape}"
                    )
            elif isinstance(v, Tensor) and shape is not None and not _is_dtensor(v):
                if legacy is not None:  # optizoo <= 0.1: flat [n, ...] state
                    if v.dim() == 0 or v.shape[0] != n:
                        raise ValueError(
                            f"state {k!r} of shape {tuple(v.shape)} does not match a parameter "
                            f"with {n} coordinates (expected [{n}, ...])"
                        )
                    v = v.reshape((*shape, *v.shape[1:]))
                elif tuple(v.shape[: len(shape)]) != shape:
                    raise ValueError(
                        f"state {k!r} of shape {tuple(v.shape)} does not match a parameter of "
                        f"shape {shape} (expected {shape} + per-coordinate dimensions)"
                    )
            if template is not None:
                want = template[k]
                if not per_tensor and tuple(v.shape[len(shape) :]) != tuple(want.shape[1:]):
                    raise ValueError(
                        f"state {k!r} of shape {tuple(v.shape)} does not match the rule's state "
                        f"shape {(*shape, *want.shape[1:])}"
                    )
                if v.is_floating_point() != want.is_floating_point() or v.is_complex():
                    raise ValueError(
                        f"state {k!r} has dtype {v.dtype}, but the rule keeps {want.dtype}: "
                        "refusing a conversion that would change its values"
                    )
            if isinstance(v, Tensor) and v.is_floating_point():
                keep[k] = v
            out[k] = v
        opt._loading.append((p, keep))
        new_state[pid] = out
    return {**state_dict, "state": new_state, "param_groups": groups}


def _state_template(opt: LearnedOptimizer, p: Tensor) -> dict[str, Tensor]:
    """What the rule's ``init_state`` makes for one coordinate of ``p``: key -> ``[1, ...]``."""
    sdtype = opt.rule.state_dtype(p.real.dtype if p.is_complex() else p.dtype)
    with torch.no_grad():
        return opt.rule.init_state(torch.zeros(1, dtype=sdtype), **rule_kwargs(opt.rule, [(1,)]))


def _restore_state_dtype(opt: LearnedOptimizer) -> None:
    """load_state_dict post-hook: torch's loader casts floating state to the parameter's dtype
    (bf16 for bf16 parameters); put back the saved values in the rule's state dtype."""
    loading, opt._loading = opt._loading, []
    for p, keep in loading:
        sdtype = opt.rule.state_dtype(p.real.dtype if p.is_complex() else p.dtype)
        for k, v in keep.items():
            opt.state[p][k] = v.detach().to(device=p.device, dtype=sdtype).clone()
    for p, st in opt.state.items():  # a state whose step was a Python int before the hooks
        if isinstance(p, Tensor) and "step" in st and not isinstance(st["step"], Tensor):
            st["step"] = torch.as_tensor(float(st["step"]), dtype=torch.float32)


#: the rules :class:`LSTMOptimizer` runs: the coordinate-wise LSTM (:class:`~optizoo.rules.LSTMRule`)
#: and the per-tensor LSTM steering a coordinate-wise update (:class:`~optizoo.rules.HierarchicalRule`)
LSTM_RULES = ("lstm", "hierarchical")


class LSTMOptimizer(LearnedOptimizer):
    """The LSTM optimizers of the zoo (per-tensor or coordinate-wise) as a drop-in ``torch.optim``
    replacement.

    Args:
        params: parameters or param groups.
        lr: multiplies the learned update (``1.0`` = as meta-trained).
        weights: ``"default"`` (the shipped default, ``lstm-hierarchical-val``: a per-tensor LSTM
            steering an AdamW-like update; FSDP2-sharded parameters work, its per-tensor
            statistics all-reduced over the shards; ``"lstm-mlp"`` is a coordinate-wise LSTM
            that needs no communication), a pretrained name from
            :func:`optizoo.list_pretrained`, a path to a ``.safetensors`` weight file, or ``None``
            for a freshly initialized LSTM (the starting point for meta-training; it does not
            optimize anything well until trained).
        state_dtype: ``None`` (the weights' own setting), ``"auto"`` (float32 state for
            low-precision parameters) or ``"bfloat16"`` (halves the state's memory; the
            arithmetic stays float32). Works with shipped weights: it does not change them.
        rule_kwargs: with ``weights=None``, keyword arguments of :class:`optizoo.rules.LSTMRule`.
        weight_decay, maximize, max_chunk, skip_nonfinite, compile: as in
            :class:`LearnedOptimizer` (``weight_decay`` needs a rule with a nominal step, as the
            shipped default has).

    Example:
        >>> opt = optizoo.LSTMOptimizer(model.parameters())
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1.0,
        *,
        weights: str | None = "default",
        state_dtype: str | None = None,
        weight_decay: float = 0.0,
        maximize: bool = False,
        max_chunk: int | None = None,
        skip_nonfinite: bool = True,
        compile: bool = False,
        rule_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from optizoo.rules.lstm import LSTMRule

        if weights is None:
            rule: UpdateRule = LSTMRule(**(rule_kwargs or {}))
            name = "init"
        else:
            if rule_kwargs:
                raise ValueError("rule_kwargs only applies with weights=None (a fresh LSTM)")
            from optizoo.zoo.format import rule_from_file
            from optizoo.zoo.registry import resolve

            path, name = resolve(weights)
            rule = rule_from_file(path, expect_rule=LSTM_RULES)
        if state_dtype is not None:
            rule.set_state_dtype(state_dtype)
        super().__init__(
            params,
            rule,
            lr,
            weight_decay=weight_decay,
            maximize=maximize,
            max_chunk=max_chunk,
            skip_nonfinite=skip_nonfinite,
            weights_name=name,
            compile=compile,
        )


def _have_cpp_compiler() -> bool:
    """Whether inductor's CPU backend can find a C++ compiler (``$CXX``, g++, c++ or clang++)."""
    names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    return any(n and shutil.which(n) for n in names)


def _check_lr(lr: Any) -> None:
    learning_rate(lr)
