"""Test-session settings shared by tests/ and the plugin packages' tests.

Tests use tiny tensors: one intra-op thread is as fast and avoids OpenMP spin-wait contention on
small shared CI machines. Benchmarks (benchmarks/) do not import this.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch):
    """A fresh plugin host with no blocked plugins, before and after the test."""
    from optizoo import plugins

    monkeypatch.delenv(plugins.DISABLE_ENV, raising=False)
    plugins.reset()
    yield
    plugins.reset()
