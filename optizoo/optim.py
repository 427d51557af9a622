"""``torch.optim`` adapters: run any :class:`~optizoo.rules.UpdateRule` as a drop-in optimizer.

:class:`LearnedOptimizer` owns param groups and per-parameter state like every torch optimizer.
In :meth:`~LearnedOptimizer.step` it gathers the gradients of a whole param group into one flat
batch, calls the rule once per chunk of at most ``max_chunk`` coordinates under ``no_grad``,
writes the new state back on each parameter's device and applies ``p.add_(update, alpha=lr)``.
``lr`` scales the whole update, so ``lr=0`` changes nothing and every
``torch.optim.lr_scheduler`` works.

Non-finite gradients: coordinates whose gradient is ``inf`` or ``nan`` get a zero update and keep
their previous state for that step (the rule's hidden state is never polluted); all other
coordinates step normally and training continues. This runs on-device, without host
synchronisation. Pass ``skip_nonfinite=False`` to save the masking cost when gradients are known
to be finite (e.g. under ``torch.amp.GradScaler``, which already skips such steps).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Any

import torch
from torch import Tensor

from optizoo._validate import learning_rate
from optizoo.errors import StateMismatchError
from optizoo.rules.base import UpdateRule, rule_kwargs, weights_sha256

__all__ = ["LSTMOptimizer", "LearnedOptimizer"]

_META_KEY = "optizoo"
#: default chunk sizes: cache-sized on the CPU (measured in benchmarks/step.py), large on GPUs
_CPU_CHUNK = 1 << 14
_ACCELERATOR_CHUNK = 1 << 20


def _flat(t: Tensor) -> Tensor:
    """A 1-D real view (or copy, if non-contiguous) of ``t``; complex becomes (re, im) pairs."""
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.reshape(-1)


def _real_numel(p: Tensor) -> int:
    return p.numel() * (2 if p.is_complex() else 1)


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
            trained. Schedulers change it per group.
        maximize: ascend instead of descend (the rule sees ``-grad``).
        max_chunk: most coordinates handed to the rule in one call (bounds temporary memory);
            ``None`` picks 16384 on the CPU (cache-sized) and 2^20 on accelerators.
        skip_nonfinite: mask non-finite gradient coordinates (see module docstring).
        weights_name: a name recorded in ``state_dict`` to identify the rule's weights.
        compile: run the rule through ``torch.compile`` (fuses the per-coordinate elementwise
            work; the first steps pay the compilation, tens of seconds on a small CPU). Results
            agree with eager execution to float rounding, not bit for bit.

    Example:
        >>> opt = LearnedOptimizer(model.parameters(), rule=optizoo.rules.Adam(lr=1e-3))
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        rule: UpdateRule,
        lr: float = 1.0,
        *,
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
        super().__init__(params, {"lr": lr, "maximize": bool(maximize)})

    # ------------------------------------------------------------------ groups and validation
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "lr" in param_group:
            _check_lr(param_group["lr"])
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not (p.is_floating_point() or p.is_complex()):
                raise TypeError(
                    f"cannot optimize a parameter of dtype {p.dtype}: parameters must be "
                    "floating point or complex"
                )
        super().add_param_group(param_group)

    # ------------------------------------------------------------------ the step
    def _rule_on(self, device: torch.device) -> Callable[..., Any]:
        """The rule with its meta-parameters on ``device`` (a cached copy when it lives elsewhere),
        compiled if requested."""
        tensors = list(self.rule.parameters()) + list(self.rule.buffers())
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
        # Bucket the group's parameters so that one rule call sees a homogeneous batch.
        buckets: dict[tuple, list[Tensor]] = defaultdict(list)
        fresh: dict[tuple, list[Tensor]] = defaultdict(list)
        for p in group["params"]:
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
            buckets[(p.device, p.dtype, sdtype, state.get("step", 0))].append(p)
        for (_device, _pdtype, sdtype), params in fresh.items():
            self._init_state(params, sdtype)
        for (device, _pdtype, sdtype, step), params in buckets.items():
            self._step_bucket(params, device, sdtype, step + 1, group["lr"], group["maximize"])

    def _init_state(self, params: list[Tensor], sdtype: torch.dtype) -> None:
        """Fresh state for ``params``, allocated as one packed buffer per state key."""
        flat = torch.cat([_flat(p.detach()) for p in params]).to(sdtype)
        packed = self.rule.init_state(
            flat, **rule_kwargs(self.rule, [_real_shape(p) for p in params])
        )
        sizes = [_real_numel(p) for p in params]
        ones = [1] * len(params)
        tensor_keys = set(self.rule.tensor_state_keys)
        for p in params:
            self.state[p]["step"] = 0
        for key, buf in packed.items():
            split = ones if key in tensor_keys else sizes
            for p, view in zip(params, torch.split(buf, split)):
                self.state[p][key] = view

    def _packed(self, params: list[Tensor], key: str, total: int) -> Tensor:
        """All ``params``' state ``key`` as one ``[total, ...]`` tensor whose rows are the
        per-parameter state tensors (views of one buffer). Re-packs (one copy) when the
        per-parameter tensors are not adjacent, e.g. after ``load_state_dict``."""
        tensors = [self.state[p][key] for p in params]
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
            self.state[p][key] = view
        return packed

    def _step_bucket(
        self,
        params: list[Tensor],
        device: torch.device,
        sdtype: torch.dtype,
        step: int,
        lr: float,
        maximize: bool,
    ) -> None:
        rule = self._rule_on(device)
        sizes = [_real_numel(p) for p in params]
        total = sum(sizes)
        grads = torch.cat([_flat(p.grad) for p in params]).to(sdtype)
        if maximize:
            grads = grads.neg_()
        flat_params = (
            torch.cat([_flat(p.detach()) for p in params]).to(sdtype)
            if self.rule.needs_param
            else None
        )
        if total == 0:  # only empty parameters: nothing to update
            for p in params:
                self.state[p]["step"] = step
            return
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
            calls = [
                (offsets[i], offsets[j], i, j, rule_kwargs(self.rule, shapes[i:j]))
                for i, j in _tensor_chunks(sizes, chunk)
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
            # CPU a check costs nothing, so the masking passes run only when needed.
            # (a sum is finite iff every term is, barring overflow: one pass instead of four)
            mask = self.skip_nonfinite
            if mask and g.device.type == "cpu" and bool(torch.isfinite(g.sum())):
                mask = False
            if mask:
                finite = torch.isfinite(g)
                if g.device.type == "cpu" and bool(finite.all()):
                    mask = False
                else:
                    g = torch.where(finite, g, torch.zeros((), dtype=g.dtype, device=g.device))
            param = flat_params[lo:hi] if flat_params is not None else None
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
        views = [torch.view_as_real(p) if p.is_complex() else p for p in params]
        update = update.to(views[0].dtype)
        pieces = [u.view(v.shape) for u, v in zip(torch.split(update, sizes), views)]
        if lr != 1.0:
            torch._foreach_add_(views, pieces, alpha=lr)
        else:
            torch._foreach_add_(views, pieces)
        for p in params:
            self.state[p]["step"] = step

    # ------------------------------------------------------------------ state_dict
    def _identity(self) -> dict[str, str]:
        return {
            "rule": self.rule.rule_name,
            "weights": self.weights_name,
            "sha256": weights_sha256(self.rule),
        }

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state plus ``"optizoo"``: the rule name and weights (name, sha256)."""
        sd = super().state_dict()
        sd[_META_KEY] = self._identity()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state made by :meth:`state_dict` of an optimizer with the *same* rule weights.

        Refuses (``StateMismatchError``) a state from another optimizer class or made with other
        weights. Per-coordinate state keeps the rule's state dtype (float32 for bf16 params).
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict:
            raise ValueError(
                "not an optimizer state_dict: expected a dict with 'state' and 'param_groups'"
            )
        meta = state_dict.get(_META_KEY)
        if meta is None:
            raise StateMismatchError(
                "this state_dict was not made by an optizoo LearnedOptimizer (no 'optizoo' "
                "entry); a torch optimizer's state cannot be loaded into a learned optimizer"
            )
        mine = self._identity()
        if meta.get("rule") != mine["rule"] or meta.get("sha256") != mine["sha256"]:
            raise StateMismatchError(
                f"optimizer state was made with rule {meta.get('rule')!r} weights "
                f"{meta.get('weights')!r} (sha256 {str(meta.get('sha256'))[:12]}…), but this "
                f"optimizer has rule {mine['rule']!r} weights {mine['weights']!r} (sha256 "
                f"{mine['sha256'][:12]}…); construct the optimizer with the same weights"
            )
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} param groups, optimizer has {len(self.param_groups)}"
            )
        id_map: dict[Any, Tensor] = {}
        for saved, group in zip(saved_groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    "a param group in the state_dict has a different number of parameters "
                    f"({len(saved['params'])}) than the optimizer's ({len(group['params'])})"
                )
            id_map.update(zip(saved["params"], group["params"]))
        new_state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        templates: dict[torch.dtype, dict[str, Tensor]] = {}
        for pid, pstate in state_dict["state"].items():
            if pid not in id_map:
                raise ValueError(f"state_dict has state for unknown parameter id {pid!r}")
            p = id_map[pid]
            sdtype = self.rule.state_dtype(p.real.dtype if p.is_complex() else p.dtype)
            if sdtype not in templates:  # what init_state makes: key -> [1, ...] of its dtype
                with torch.no_grad():
                    templates[sdtype] = self.rule.init_state(
                        torch.zeros(1, dtype=sdtype), **rule_kwargs(self.rule, [(1,)])
                    )
            template = templates[sdtype]
            if not isinstance(pstate, dict):
                raise ValueError(f"state of parameter {pid!r} must be a dict, got {pstate!r}")
            tensors = {k for k in pstate if k != "step"}
            if pstate and tensors != set(template):
                raise ValueError(
                    f"state of parameter {pid!r} has keys {sorted(tensors)}, but rule "
                    f"{self.rule.rule_name!r} keeps {sorted(template)}"
                )
            for k, v in pstate.items():
                if k == "step":
                    if isinstance(v, Tensor):
                        v = v.item() if v.numel() == 1 else v
                    if (
                        isinstance(v, bool)
                        or not isinstance(v, (int, float))
                        or v < 0
                        or v != int(v)
                    ):
                        raise ValueError(
                            f"state 'step' of parameter {pid!r} must be an int >= 0, got {v!r}"
                        )
                    new_state[p][k] = int(v)
                    continue
                want = template[k]
                # per-tensor state has one row per tensor, the rest one per coordinate
                n = 1 if k in self.rule.tensor_state_keys else _real_numel(p)
                if not isinstance(v, Tensor):
                    raise ValueError(
                        f"state {k!r} of parameter {pid!r} must be a tensor, got {v!r}"
                    )
                if tuple(v.shape) != (n, *want.shape[1:]):
                    raise ValueError(
                        f"state {k!r} of shape {tuple(v.shape)} does not match a parameter with "
                        f"{n} coordinates (rule {self.rule.rule_name!r} keeps {k!r} of shape "
                        f"{(n, *want.shape[1:])})"
                    )
                if v.is_floating_point() != want.is_floating_point() or (
                    not want.is_floating_point() and v.dtype != want.dtype
                ):
                    raise ValueError(
                        f"state {k!r} of parameter {pid!r} is {v.dtype}, rule "
                        f"{self.rule.rule_name!r} keeps it as {want.dtype}"
                    )
                new_state[p][k] = v.detach().to(device=p.device, dtype=want.dtype).clone()
        groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            g = {k: deepcopy(v) for k, v in saved.items() if k != "params"}
            if "lr" in g:
                _check_lr(g["lr"])
            g["params"] = group["params"]
            groups.append(g)
        self.state = new_state
        self.param_groups = groups

    # ------------------------------------------------------------------ copy / pickle
    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer.__getstate__ keeps only defaults/state/param_groups: keep the rule too.
        state = dict(self.__dict__)
        state["_rule_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._rule_cache = {}

    def __repr__(self) -> str:
        head = f"{type(self).__name__}(rule={self.rule.rule_name}, weights={self.weights_name!r}"
        groups = ", ".join(
            f"group {i}: lr={g['lr']}, {len(g['params'])} params"
            for i, g in enumerate(self.param_groups)
        )
        return f"{head}; {groups})"


class LSTMOptimizer(LearnedOptimizer):
    """The coordinate-wise LSTM optimizer as a drop-in ``torch.optim`` replacement.

    Args:
        params: parameters or param groups.
        lr: multiplies the learned update (``1.0`` = as meta-trained).
        weights: ``"default"`` (the shipped default optimizer), a pretrained name from
            :func:`optizoo.list_pretrained`, a path to a ``.safetensors`` weight file, or ``None``
            for a freshly initialized LSTM (the starting point for meta-training; it does not
            optimize anything well until trained).
        rule_kwargs: with ``weights=None``, keyword arguments of :class:`optizoo.rules.LSTMRule`.
        maximize, max_chunk, skip_nonfinite, compile: as in :class:`LearnedOptimizer`.

    Example:
        >>> opt = optizoo.LSTMOptimizer(model.parameters())
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        *,
        weights: str | None = "default",
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
            rule = rule_from_file(path, expect_rule="lstm")
        super().__init__(
            params,
            rule,
            lr,
            maximize=maximize,
            max_chunk=max_chunk,
            skip_nonfinite=skip_nonfinite,
            weights_name=name,
            compile=compile,
        )


def _check_lr(lr: Any) -> None:
    learning_rate(lr)
