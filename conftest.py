"""Test-session settings shared by tests/ and the plugin packages' tests.

Tests use tiny tensors: one intra-op thread is as fast and avoids OpenMP spin-wait contention on
small shared CI machines. Benchmarks (benchmarks/) do not import this.
"""

import torch

torch.set_num_threads(1)
