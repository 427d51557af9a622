"""The shipped recipes train exactly the weights they trained before the stages moved into
``MetaConfig.stages`` (``optizoo.meta.fit_stages``; issue 15, Deliver 5): short two-stage versions
of each recipe, bit for bit. The fixture was written by scripts/record_recipe_reference.py from the
code as it was before that change (commit 281d41c, one thread, torch 2.13.0 CPU, on a CPU whose
``torch.backends.cpu.get_cpu_capability()`` is ``"AVX512"``); regenerating it is never a fix for a
failure here.

Bit for bit holds on a CPU of the recording capability. On another (AVX2: oneDNN/MKL pick other
GEMM kernels and sum in another order) the rule's arithmetic differs in the last bits (see
tests/rules/test_reference_trajectory.py) and a few Adam meta-steps can amplify that, so there the
weights are compared to ``rtol=1e-3, atol=1e-5``: still far below what a changed recipe moves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from optizoo.meta import fit_stages
from optizoo.meta.recipe import Recipe
from tests.helpers import load_script_module

FIXTURE = Path(__file__).parent / "data" / "recipe_reference.safetensors"
record = load_script_module("record_recipe_reference")
SHORT = record.short_recipes()


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE))


def _expected(ref: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}/"
    return {k[len(prefix) :]: v for k, v in ref.items() if k.startswith(prefix)}


#: the CPU capability the fixture was recorded on
RECORDED_ON = "AVX512"


def assert_bitwise(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Bit for bit on the recording CPU capability, to float rounding elsewhere."""
    assert got.keys() == want.keys() and want
    same_cpu = torch.backends.cpu.get_cpu_capability() == RECORDED_ON
    for k in want:
        if same_cpu:
            assert torch.equal(got[k], want[k]), k
        else:
            torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-5, msg=k)


def test_the_fixture_holds_every_short_recipe(ref):
    assert {k.split("/")[0] for k in ref} == set(SHORT)
    assert set(record.RECIPES) <= set(SHORT)


@pytest.mark.parametrize("name", sorted(SHORT))
def test_train_recipe_reproduces_the_pre_change_weights(ref, name, tmp_path):
    assert_bitwise(record.train(SHORT[name], tmp_path / name), _expected(ref, name))


def test_fit_stages_on_the_recipes_meta_config_gives_the_same_weights(ref, tmp_path):
    """The library path without the recipe layer: the recipe's MetaConfig, its rule built after
    torch.manual_seed(rule_seed)."""
    name = "lstm-hierarchical"
    recipe = Recipe.from_dict(SHORT[name])
    config = recipe.meta_config()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fit_stages(recipe.build_rule(), config, tmp_path / "run", verbose=False)
    finally:
        torch.set_num_threads(threads)
    assert_bitwise(result.rule.cpu().state_dict(), _expected(ref, name))
