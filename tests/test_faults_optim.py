"""``LearnedOptimizer.load_state_dict`` validates every state tensor against the rule's
``init_state``: a tampered state is refused when loaded, not deep in a later
``step``, and never silently converted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optizoo.optim import LearnedOptimizer
from optizoo.rules import LSTMRule


def stepped() -> tuple[nn.Parameter, LearnedOptimizer]:
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(6))
    opt = LearnedOptimizer([p], LSTMRule(hidden_size=4))
    p.grad = torch.randn(6)
    opt.step()
    return p, opt


def tampered(change) -> dict:
    _, opt = stepped()
    sd = opt.state_dict()
    change(sd["state"][0])
    return sd


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda s: s.update(h=torch.zeros(6, 2, 5)), "shape"),  # trailing dimension
        (lambda s: s.update(c=torch.zeros(6, 3, 4)), "shape"),
        (lambda s: s.update(h=(s["h"] * 100).to(torch.int64)), "int64"),  # would truncate to 0
        (lambda s: s.update(h=s["h"].to(torch.complex64)), "complex64"),
        (lambda s: s.pop("c"), "keys"),
        (lambda s: s.update(extra=torch.zeros(6)), "keys"),
        (lambda s: s.update(h=[0.0] * 6), "tensor"),
        (lambda s: s.update(step=-1), "step"),
    ],
    ids=["h-trailing", "c-layers", "int64", "complex", "missing", "extra", "not-tensor", "step"],
)
def test_tampered_state_is_refused_at_load(change, needle):
    sd = tampered(change)
    _, fresh = stepped()
    with pytest.raises(ValueError, match=needle):
        fresh.load_state_dict(sd)


def test_a_valid_state_still_loads_and_steps_identically():
    p, opt = stepped()
    sd = opt.state_dict()
    q, other = stepped()
    other.load_state_dict(sd)
    for x, o in ((p, opt), (q, other)):
        x.grad = torch.ones(6)
        o.step()
    assert torch.equal(p, q)
    # float64 state from a float64 model is cast to the rule's state dtype, as before
    sd["state"][0]["h"] = sd["state"][0]["h"].double()
    other.load_state_dict(sd)
    assert other.state[q]["h"].dtype == torch.float32
