"""The checkpoint payload (optizoo.meta.checkpoint.checkpoint_payload) and the episode gathering
(optizoo.meta.distributed.gather_episode) that meta/trainer.py calls: format 2 as before.

The expected key set and layout are written out here from the format-2 description in
docs/meta-training.md, not read from the code under test.
"""

from __future__ import annotations

import json
import math

import torch

from optizoo.meta import checkpoint as ckpt
from optizoo.meta import distributed as ddp
from tests.meta.test_trainer import small_trainer

FORMAT_2_KEYS = {
    "format", "sha256", "config", "rule_name", "rule_config", "meta_step", "world_size", "rule",
    "meta_opt", "inner", "best", "rng", "metrics_rows",
}  # fmt: skip


def test_a_trainer_checkpoint_has_the_format_2_layout(tmp_path):
    tr = small_trainer(tmp_path, checkpoint_every=0, eval_every=0)
    tr.fit(2, restore_best=False)  # ends mid-episode: horizon 15 = 3 truncations of 5
    data = torch.load(tmp_path / ckpt.CHECKPOINT_NAME, weights_only=True)
    assert set(data) == FORMAT_2_KEYS and data["format"] == 2
    assert json.loads(data["config"]) == tr.config.to_dict()
    assert json.loads(data["rule_config"]) == tr.rule.config() and data["rule_name"] == "lstm"
    assert data["meta_step"] == 2 and data["world_size"] == 1
    assert data["metrics_rows"] == len(tr.history)
    for k, v in tr.rule.state_dict().items():
        assert torch.equal(data["rule"][k], v)
    inner = data["inner"]
    assert inner["t"] == 10 and inner["episode"] == 0
    assert len(inner["flat"]) == 1 and inner["flat"][0].shape == (5 * 4,)  # dim 5, batch 4
    assert set(data["best"]) == {"metric", "meta_step", "rule"}
    assert data["best"]["meta_step"] >= 0 and math.isfinite(data["best"]["metric"])
    assert data["rng"]["torch"].dtype == torch.uint8
    assert ckpt.load_checkpoint(tmp_path) is not None  # checksum and schema verify


def test_checkpoint_payload_stores_sorted_json_and_cpu_copies():
    tr = small_trainer()
    weights = {
        k: v.clone().requires_grad_(v.is_floating_point()) for k, v in tr.rule.state_dict().items()
    }
    payload = ckpt.checkpoint_payload(
        config={"b": 1, "a": 2},
        rule=tr.rule,
        rule_state=weights,
        meta_step=3,
        world_size=1,
        meta_opt={},
        inner=None,
        best_metric=math.inf,
        best_step=None,
        best_state=None,
        rng_state=torch.get_rng_state(),
        metrics_rows=0,
    )
    assert payload["config"] == '{"a": 2, "b": 1}'
    assert payload["best"] == {"metric": math.inf, "meta_step": -1, "rule": None}
    assert all(not v.requires_grad and v.device.type == "cpu" for v in payload["rule"].values())
    assert set(payload) | {"format", "sha256"} == FORMAT_2_KEYS


def test_gather_episode_at_world_size_one():
    assert ddp.gather_episode(None, 4, torch.device("cpu")) is None
    flat = torch.arange(6.0)
    state = {"v": torch.ones(6, 2), "h": torch.zeros(6, 3)}
    got = ddp.gather_episode((flat, state, 7), 4, torch.device("cpu"))
    assert got is not None and (got["t"], got["episode"]) == (7, 4)
    assert len(got["flat"]) == 1 and torch.equal(got["flat"][0], flat)
    assert len(got["state"]) == 1 and list(got["state"][0]) == ["h", "v"]  # sorted names
    assert torch.equal(got["state"][0]["v"], state["v"])
