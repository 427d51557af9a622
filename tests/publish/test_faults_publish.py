"""Publishing under faults and hostile metadata.

References: the sha256 of the weight file on disk (a card beside it must name exactly that);
the raw escape bytes planted in a file's metadata (none may reach the terminal or the card).
"""

from __future__ import annotations

import argparse
import io
import re

import pytest
import torch

import optizoo._io
from optizoo._io import folder_lock
from optizoo.cli.zoo import run_info, run_list
from optizoo.errors import WeightsError
from optizoo.publish.card import model_card
from optizoo.publish.publish import publish_rule
from optizoo.rules import LSTMRule
from optizoo.zoo.format import read_metadata, save_rule
from optizoo.zoo.registry import sha256_file


def rule(seed: int = 0) -> LSTMRule:
    torch.manual_seed(seed)
    return LSTMRule(hidden_size=4)


def publish(r, out, **kw):
    return publish_rule(r, "tiny", out, baselines=(), verbose=False, **kw)


def card_sha(card_path) -> str:
    found = re.findall(r"`([0-9a-f]{64})`", card_path.read_text())
    assert len(found) == 1
    return found[0]


def test_non_finite_weights_are_refused_before_anything_is_written(tmp_path):
    r = rule()
    with torch.no_grad():
        next(iter(r.parameters())).view(-1)[0] = float("nan")
    out = tmp_path / "dist"
    with pytest.raises(WeightsError, match="nan or inf"):
        publish(r, out)
    assert not out.exists() or not any(out.iterdir())


def test_an_existing_name_is_not_overwritten_unless_asked(tmp_path):
    first = publish(rule(0), tmp_path)
    before = first.weights.read_bytes()
    with pytest.raises(FileExistsError, match="already holds a publication named 'tiny'"):
        publish(rule(1), tmp_path)
    assert first.weights.read_bytes() == before
    second = publish(rule(1), tmp_path, overwrite=True)
    assert second.weights.read_bytes() != before
    assert card_sha(second.card) == sha256_file(second.weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.md", "tiny.safetensors"]


def test_a_failure_while_writing_never_leaves_a_card_naming_other_weights(tmp_path, monkeypatch):
    publish(rule(0), tmp_path)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(optizoo._io, "write_text_atomic", broken)
    with pytest.raises(OSError, match="disk full"):
        publish(rule(1), tmp_path, overwrite=True)
    card, weights = tmp_path / "tiny.md", tmp_path / "tiny.safetensors"
    if card.exists():  # whatever is left, the card names the weights beside it
        assert card_sha(card) == sha256_file(weights)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_concurrent_publication_of_the_same_name_is_refused(tmp_path):
    with (
        folder_lock(tmp_path / ".tiny.publish.lock"),
        pytest.raises(FileExistsError, match="another process is publishing"),
    ):
        publish(rule(), tmp_path)
    assert not (tmp_path / "tiny.safetensors").exists()


HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m <script>alert(1)</script> & <img src=x>"


def hostile_file(tmp_path):
    return save_rule(rule(), tmp_path / "hostile.safetensors", description=HOSTILE, license=HOSTILE)


def test_info_and_list_strip_terminal_escapes(tmp_path, capsys):
    path = hostile_file(tmp_path)
    out = io.StringIO()
    assert run_info(argparse.Namespace(target=str(path), json=False), out=out) == 0
    text = out.getvalue()
    assert "red" in text and "<script>" in text  # shown as text ...
    assert "\x1b" not in text and "\x07" not in text  # ... never as terminal commands
    out = io.StringIO()
    assert run_info(argparse.Namespace(target=str(path), json=True), out=out) == 0
    assert "\x1b" not in out.getvalue()
    # the listing shows plugin-provided descriptions too
    from optizoo import plugins

    class Plugin:
        @plugins.hookimpl
        def optizoo_pretrained(self):
            return {"hostile": path}

    with plugins.registered(Plugin(), "hostile-plugin"):
        out = io.StringIO()
        run_list(argparse.Namespace(kinds=["pretrained"], json=False), out=out)
    assert "hostile" in out.getvalue() and "\x1b" not in out.getvalue()


def test_cards_escape_html_from_metadata(tmp_path):
    card = model_card(read_metadata(hostile_file(tmp_path)), name="hostile")
    assert "<script>" not in card and "<img" not in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card
    published = publish_rule(
        rule(), "tiny", tmp_path / "d", baselines=(), verbose=False, description=HOSTILE
    )
    assert "<script>" not in published.card.read_text()
