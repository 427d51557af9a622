"""Hostile weight-file metadata gets a ``WeightsError`` that names the file, cheaply:
nothing is built before the shapes a config implies are checked against
the file's own tensor shapes, under a size cap.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import optizoo
from optizoo.errors import WeightsError
from optizoo.rules import LSTMRule
from optizoo.zoo import format as fmt
from optizoo.zoo import registry
from optizoo.zoo.format import read_metadata, save_rule


def good_file(tmp_path):
    torch.manual_seed(0)
    return save_rule(LSTMRule(hidden_size=4), tmp_path / "good.safetensors")


def forged(tmp_path, **changes) -> str:
    """The good file's tensors with its metadata changed (``None`` removes a key)."""
    src = good_file(tmp_path)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in read_metadata(src).items()}
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    tensors = optizoo.load_rule(src).state_dict()
    path = tmp_path / "forged.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return str(path)


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"optizoo__rule": None}, "optizoo.rule"),
        ({"optizoo__config": "[" * 20000 + "]" * 20000}, "deeper"),
        ({"optizoo__training": '{"a":' * 5000 + "1" + "}" * 5000}, "deeper"),
        ({"optizoo__config": "[1, 2]"}, "JSON object"),
        ({"optizoo__training": "[1]"}, "JSON object"),
        ({"optizoo__versions": "3"}, "JSON object"),
        ({"optizoo__config": json.dumps({"hidden_size": 4, "preprocessor": "nosuch"})}, "nosuch"),
    ],
    ids=["no-rule", "deep-config", "deep-training", "config-list", "training-list",
         "versions-int", "unknown-preprocessor"],
)  # fmt: skip
def test_hostile_metadata_is_a_weights_error_naming_the_file(tmp_path, changes, needle):
    path = forged(tmp_path, **changes)
    with pytest.raises(WeightsError) as info:
        optizoo.load_rule(path)
    assert path in str(info.value) and needle in str(info.value)


def test_listing_survives_a_hostile_training_record(tmp_path):
    path = forged(tmp_path, optizoo__training="[1]")
    from optizoo import plugins

    class Plugin:
        @plugins.hookimpl
        def optizoo_pretrained(self):
            return {"forged": path}

    with plugins.registered(Plugin(), "forged-plugin"):
        rows = {r["name"]: r for r in optizoo.list_pretrained()}
    assert "JSON object" in rows["forged"]["error"]


def _recording_builds(monkeypatch) -> list[str]:
    devices: list[str] = []
    real = LSTMRule.__init__

    def init(self, *args, **kwargs):
        devices.append(str(torch.get_default_device()))
        real(self, *args, **kwargs)

    monkeypatch.setattr(LSTMRule, "__init__", init)
    return devices


def test_shapes_are_checked_before_any_module_is_built(tmp_path, monkeypatch):
    # a 10 kB file whose config claims a hidden size of 2000 (~130 MB of weights)
    path = forged(tmp_path, optizoo__config=json.dumps({"hidden_size": 2000}))
    devices = _recording_builds(monkeypatch)
    with pytest.raises(WeightsError, match="shape") as info:
        optizoo.load_rule(path)
    assert path in str(info.value)
    assert devices and all(d == "meta" for d in devices), devices  # never built for real


def test_a_config_implying_gigabytes_is_refused_by_the_cap(tmp_path, monkeypatch):
    path = forged(tmp_path, optizoo__config=json.dumps({"hidden_size": 100_000}))
    devices = _recording_builds(monkeypatch)
    with pytest.raises(WeightsError, match="cap"):
        optizoo.load_rule(path)
    assert all(d == "meta" for d in devices)
    assert fmt.MAX_ELEMENTS < 4 * 100_000**2


def test_a_corrupt_manifest_is_a_weights_error_naming_it(tmp_path, monkeypatch):
    folder = tmp_path / "pretrained"
    folder.mkdir()
    for text in ("{not json", '["a"]', '{"../../evil.safetensors": "00"}'):
        (folder / "MANIFEST.json").write_text(text)
        monkeypatch.setattr(registry, "PRETRAINED_DIR", folder)
        monkeypatch.setattr(registry, "MANIFEST", folder / "MANIFEST.json")
        with pytest.raises(WeightsError) as info:
            registry.shipped()
        assert "MANIFEST.json" in str(info.value)
