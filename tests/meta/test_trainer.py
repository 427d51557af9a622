"""MetaTrainer: resume, held-out selection, files, linear memory, and meta-learned hyper-parameters.

References used here:
- exact equality (``torch.equal``) between an uninterrupted run and a run split by a checkpoint;
- the held-out objective recomputed independently with ``torch.optim`` on the held-out problems;
- a graph-size meter (saved-tensor hooks) whose negative control — a truncation chained without
  detaching, as the learning-to-learn re-implementation does — shows the growth the trainer must not have;
- for the hand-designed rule, the meta-learned (lr, momentum) re-run in plain ``torch.optim.SGD``
  on fresh problems.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import optizoo
from optizoo.meta import MetaConfig, MetaTrainer, problem_seeds, unroll
from optizoo.meta.checkpoint import CheckpointError, read_metrics
from optizoo.meta.memory import GraphMeter
from optizoo.rules import LSTMRule, Momentum
from optizoo.tasks.base import Task
from tests.meta.toys import ToyRegression

SMALL = {"dim": 5, "batch": 4}


def lstm(seed: int = 0) -> LSTMRule:
    torch.manual_seed(seed)
    return LSTMRule()


def small_trainer(out_dir=None, rule=None, **kw) -> MetaTrainer:
    options = dict(
        unroll=5, horizon=15, eval_problems=2, eval_every=3, checkpoint_every=2,
        meta_lr=1e-2, verbose=False,
    )  # fmt: skip
    options.update(kw)
    return MetaTrainer(rule or lstm(), "quadratic", task_args=SMALL, out_dir=out_dir, **options)


def test_resume_continues_bit_identically(tmp_path):
    # uninterrupted: 8 meta-steps (3 truncations per episode, so step 4 is mid-episode)
    full = small_trainer(tmp_path / "full")
    full.fit(8, restore_best=False)

    first = small_trainer(tmp_path / "split")
    first.fit(4)  # leaves the best weights loaded: resume must not care
    del first
    resumed = MetaTrainer.resume(tmp_path / "split", verbose=False)
    assert resumed.meta_step == 4 and resumed._inner is not None and resumed._inner[2] == 5
    resumed.fit(4, restore_best=False)

    a, b = full.rule.state_dict(), resumed.rule.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = full.meta_opt.state_dict()["state"], resumed.meta_opt.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(sa[i][k], sb[i][k])
    losses = lambda d: [r["meta_loss"] for r in read_metrics(d) if r["kind"] == "train"]  # noqa: E731
    assert losses(tmp_path / "full") == losses(tmp_path / "split")
    assert len(losses(tmp_path / "split")) == 8
    # the run really trained
    assert not torch.equal(a["weights.0"], lstm().state_dict()["weights.0"])


def test_checkpoint_is_weights_only_and_metrics_after_it_are_dropped(tmp_path):
    tr = small_trainer(tmp_path, checkpoint_every=0)
    tr.fit(2)
    data = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # no unpickling needed
    assert data["meta_step"] == 2 and json.loads(data["config"])["unroll"] == 5
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a crashed run logged past its checkpoint
        f.write(json.dumps({"kind": "train", "meta_step": 3, "meta_loss": 1.0}) + "\n")
    resumed = MetaTrainer.resume(tmp_path, verbose=False)
    assert max(r["meta_step"] for r in read_metrics(tmp_path)) == 2
    resumed.fit(1)
    steps = [r["meta_step"] for r in read_metrics(tmp_path) if r["kind"] == "train"]
    assert steps == [1, 2, 3]
    with pytest.raises(CheckpointError, match="no meta-training checkpoint"):
        MetaTrainer.resume(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        MetaTrainer.resume(tmp_path / "bad")


def test_best_rule_is_selected_on_held_out_problems_and_saved(tmp_path):
    tr = small_trainer(tmp_path, eval_every=2, horizon=10)
    summary = tr.fit(6)
    evals = [r for r in read_metrics(tmp_path) if r["kind"] == "eval"]
    assert [r["meta_step"] for r in evals] == [0, 2, 4, 6]
    best = min(evals, key=lambda r: r["objective"])
    assert summary["best_objective"] == best["objective"]
    assert summary["best_meta_step"] == best["meta_step"]
    for name in ("best_rule.safetensors", "final_rule.safetensors", "learning_curve.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from optizoo.zoo.format import read_metadata, rule_from_file

    meta = read_metadata(tmp_path / "best_rule.safetensors")
    assert meta["optizoo.rule"] == "lstm" and meta["optizoo.config"] == tr.rule.config()
    assert meta["optizoo.training"]["selection"]["best_meta_step"] == best["meta_step"]
    loaded = rule_from_file(tmp_path / "best_rule.safetensors")
    for k, v in loaded.state_dict().items():  # fit(restore_best=True) left the best in tr.rule
        assert torch.equal(v, tr.rule.state_dict()[k])

    # independent recomputation of the held-out objective: the learned optimizer driven through
    # the torch.optim adapter on the held-out problems (real Parameters, .backward())
    from optizoo.optim import LearnedOptimizer

    seeds = problem_seeds(0, 2, "validation")
    task = optizoo.tasks.build("quadratic", **SMALL)
    total = 0.0
    for s in seeds:
        problem = task.sample(torch.Generator().manual_seed(s))
        theta = torch.nn.Parameter(problem.params()["theta"])
        opt = LearnedOptimizer([theta], rule=loaded)
        for t in range(10):
            opt.zero_grad()
            problem.loss({"theta": theta}, t).backward()
            opt.step()
            total += problem.loss({"theta": theta}, t + 1).item() / problem.num_instances
    assert total / len(seeds) == pytest.approx(best["objective"], rel=1e-5)  # float32 sums

    train_seeds = {s for e in range(3) for s in problem_seeds(0, 1, "train", episode=e)}
    assert not train_seeds & set(seeds)


def test_graph_memory_and_work_per_meta_step_do_not_grow_with_the_horizon():
    results = {}
    for horizon in (10, 100):
        tr = MetaTrainer(
            lstm(), "quadratic", task_args=SMALL, unroll=5, horizon=horizon, eval_every=0,
            eval_problems=1, checkpoint_every=0, verbose=False,
        )  # fmt: skip
        peaks, saved = [], []
        with GraphMeter() as m:
            for _ in range(12):  # horizon 10: 6 episodes; horizon 100: 12 truncations of one
                m.peak, before = m.live, m.saved
                tr.step()
                peaks.append(m.peak)
                saved.append(m.saved - before)
                assert m.live == 0  # nothing of the graph survives a meta-step
        results[horizon] = (peaks, saved)
    # the same graph, truncation after truncation, whatever the horizon: exactly equal
    assert len(set(results[10][0] + results[100][0])) == 1
    assert len(set(results[10][1] + results[100][1])) == 1

    # negative control: chaining truncations WITHOUT detaching (the PyTorch re-implementation of Andrychowicz et al. 2016) keeps the graph alive
    rule = lstm()
    problem = optizoo.tasks.build("quadratic", **SMALL).sample(torch.Generator().manual_seed(0))
    with GraphMeter() as m:
        r1 = unroll(rule, problem, 5)
        one = m.live
        r2 = unroll(rule, problem, 5, params=r1.params, state=r1.state, start=5)
        assert m.live > 1.9 * one
        del r1, r2


# ---------------------------------------------------------------- meta-learning hyper-parameters


class ToyTask(Task):
    name = "toy-regression"

    def sample(self, generator, device=None):
        x = torch.rand(100, 1, generator=generator, dtype=torch.float64)
        w0 = torch.rand(1, 1, generator=generator, dtype=torch.float64) * 2 - 1
        return ToyRegression(x, w0)


def _sgd_final_loss(lr: float, momentum: float, seeds: list[int]) -> float:
    """Mean loss after 5 steps of torch.optim.SGD on fresh toy problems (independent runner)."""
    total = 0.0
    for s in seeds:
        problem = ToyTask().sample(torch.Generator().manual_seed(s))
        w = torch.nn.Parameter(problem.params()["weight"])
        opt = torch.optim.SGD([w], lr=lr, momentum=momentum)
        for t in range(5):
            opt.zero_grad()
            problem.loss({"weight": w}, t).backward()
            opt.step()
        total += problem.loss({"weight": w}, 5).item()
    return total / len(seeds)


def test_meta_training_learning_rate_and_momentum_lowers_the_loss():
    rule = Momentum(lr=0.05, momentum=0.5)
    tr = MetaTrainer(
        rule, ToyTask(), unroll=5, horizon=5, loss_weights=[0, 0, 0, 0, 1],  # loss after unroll
        second_order=True, meta_lr=0.1, problems_per_step=4, eval_problems=16, eval_every=10,
        verbose=False,
    )  # fmt: skip
    tr.fit(40)
    lr, mom = rule.lr.item(), rule.momentum.item()
    assert lr > 0.1 and mom != pytest.approx(0.5, abs=0.05)  # the meta-parameters moved
    fresh = list(range(1000, 1032))  # problems neither trained nor selected on
    before, after = _sgd_final_loss(0.05, 0.5, fresh), _sgd_final_loss(lr, mom, fresh)
    assert after < before / 10


def test_scalar_meta_lr_gives_scalar_meta_parameters_their_own_step():
    # one meta-step of Adam moves every parameter by about its group's lr (sign-like first step)
    rules = {}
    for scalar_lr in (None, 0.3):
        torch.manual_seed(0)
        rule = LSTMRule(parameterization="nominal", hidden_size=3, weight_decay=0.01)
        tr = MetaTrainer(
            rule, ToyTask(), unroll=4, horizon=4, meta_lr=1e-3, scalar_meta_lr=scalar_lr,
            eval_every=0, eval_problems=1, checkpoint_every=0, clip=None, verbose=False,
        )  # fmt: skip
        groups = tr.meta_opt.param_groups
        if scalar_lr is None:
            assert len(groups) == 1
        else:
            assert [g["lr"] for g in groups] == [1e-3, 0.3]
            assert {p.ndim for p in groups[1]["params"]} == {0}  # log_lr and log_wd
        start = (rule.log_lr.item(), rule.head_bias.detach().clone())
        tr.step()
        rules[scalar_lr] = (abs(rule.log_lr.item() - start[0]), rule.head_bias - start[1])
        assert tr.training_record()["meta_optimizer"]["scalar_lr"] == scalar_lr
    assert rules[None][0] == pytest.approx(1e-3, rel=0.05)
    assert rules[0.3][0] == pytest.approx(0.3, rel=0.05)
    # the network's weights take the same step either way
    torch.testing.assert_close(rules[None][1], rules[0.3][1])
    with pytest.raises(ValueError, match="scalar_meta_lr"):
        MetaConfig(scalar_meta_lr=0.0)


def test_config_validation_and_round_trip():
    cfg = MetaConfig(unroll=4, horizon=10, loss_weights=[1, 1, 1, 2])
    assert cfg.truncations == 3
    assert MetaConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown meta-training option"):
        MetaConfig.from_dict({"unrol": 5})
    with pytest.raises(ValueError, match="cannot exceed horizon"):
        MetaConfig(unroll=20, horizon=10)
    with pytest.raises(ValueError, match="loss_weights has 3 entries"):
        MetaConfig(unroll=4, horizon=10, loss_weights=[1, 1, 1])
    with pytest.raises(ValueError, match="meta_lr"):
        MetaConfig(meta_lr=-1)
    with pytest.raises(TypeError, match="UpdateRule"):
        MetaTrainer(torch.nn.Linear(1, 1), "quadratic")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="either config"):
        MetaTrainer(lstm(), "quadratic", config=cfg, unroll=3)


def test_last_truncation_may_be_shorter_and_weights_index_the_episode():
    tr = MetaTrainer(
        Momentum(lr=0.01, momentum=0.5), ToyTask(), unroll=3, horizon=7, eval_every=0,
        eval_problems=1, checkpoint_every=0, verbose=False,
        loss_weights=[0, 0, 0, 0, 0, 0, 1],
    )  # fmt: skip
    rows = [tr.step() for _ in range(4)]
    assert [r["truncation"] for r in rows] == [0, 1, 2, 0]
    # only the last (1-step) truncation of an episode carries weight
    assert rows[0]["meta_loss"] == 0 and rows[1]["meta_loss"] == 0 and rows[2]["meta_loss"] > 0
    assert math.isfinite(rows[3]["grad_norm"])


@pytest.mark.slow
def test_lstm_meta_trained_on_the_quadratic_beats_the_l2l_reimplementation_numbers():
    """The PyTorch re-implementation of Andrychowicz et al. (2016) prints, for the sum of 100 per-step losses on a 128-quadratic batch: Adam
    122–143, its trained LSTM 105–109, an untrained LSTM ≈ 5.6e5. 400 meta-steps (80 episodes)
    of the paper's recipe must reach below 105 on 8 × 128 held-out quadratics (~1 min)."""
    torch.manual_seed(0)
    tr = MetaTrainer(LSTMRule(), "quadratic", unroll=20, horizon=100, eval_every=100, verbose=False)
    summary = tr.fit(400)
    evals = [r["objective"] for r in tr.history if r["kind"] == "eval"]
    assert evals[0] > 1000  # untrained: diverges or nearly
    assert summary["best_objective"] < 105
