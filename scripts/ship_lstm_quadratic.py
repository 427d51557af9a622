"""Ship the ``lstm-quadratic`` optimizer: evaluate a meta-training run against tuned baselines,
write the weights (with the training record and the metrics) into the package, update the
manifest, and write the reproduction table and figure into docs/.

    optizoo train --config configs/recipes/lstm-quadratic.json --out runs/lstm-quadratic
    python scripts/ship_lstm_quadratic.py runs/lstm-quadratic

The run folder is the recipe's (``lstm-quadratic.safetensors``, whose training record names the
recipe file and holds its contents, which the shipped file keeps).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import optizoo
from optizoo.compare import compare
from optizoo.compare.evaluate import evaluate
from optizoo.zoo.format import read_metadata, rule_from_file
from optizoo.zoo.manifest import add_to_shipped

ROOT = Path(__file__).resolve().parent.parent
NAME = "lstm-quadratic"
BASELINES = ["adam", "rmsprop", "sgd"]


def metrics(comparison, at: int) -> dict:
    out = {}
    for label, s in comparison.summary(at=at).items():
        r = comparison[label]
        out[label] = {
            "lr": r.lr,
            "tuned": r.tuning is not None,
            "final_loss": s["final"].to_dict(),
            "sum_of_losses": s["sum"].to_dict(),
        }
    return out


def evaluate_suite(spec: str, horizon: int = 100):
    """The held-out neural-network suite at the settings every shipped card reports: 5 seeds,
    Adam's lr tuned on 3 separate seeds over a 7-point log grid, at 1x, 2x, 10x of the
    optimizer's training ``horizon``."""
    return evaluate(
        spec,
        horizon,
        seeds=5,
        tune_seeds=3,
        grid=[10**e for e in (-3, -2.5, -2, -1.5, -1, -0.5, 0)],
        verbose=False,
    )


def generalization_record(report) -> dict:
    """The held-out suite's results in the layout model cards read."""
    return {
        "suite": "default",
        "horizon": report.horizon,
        "multiples": list(report.multiples),
        "seeds": report.seeds_count,
        "quick": False,
        "tasks": {n: tr.task.description for n, tr in report.results.items()},
        "rows": report.rows(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--problems", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run_dir)
    weights = run / f"{NAME}.safetensors"  # the recipe's final rule (stage0's best)
    record = read_metadata(weights)["optizoo.training"]
    if record.get("recipe_file") is None:
        raise SystemExit(f"{weights} was not made by a recipe (no recipe_file in its record)")
    rule = rule_from_file(weights)

    results = {}
    for criterion in ("final", "sum"):
        c = compare(
            "quadratic",
            {"lstm": f"lstm={weights}", **{b: b for b in BASELINES}},
            steps=200,
            tune_steps=100,
            problems=args.problems,
            tune_problems=20,
            task_args={"batch": 1},
            criterion=criterion,
            verbose=False,
        )
        results[criterion] = c
    c = results["final"]
    evaluation = {
        "task": "quadratic",
        "task_args": {"batch": 1},
        "held_out_problems": args.problems,
        "baselines": "learning rate tuned by a 13-point log grid on 20 separate problems",
        "at_100_steps_tuned_for_final": metrics(results["final"], 100),
        "at_200_steps_tuned_for_final": metrics(results["final"], 200),
        "at_100_steps_tuned_for_sum": metrics(results["sum"], 100),
        "at_200_steps_tuned_for_sum": metrics(results["sum"], 200),
    }
    # the held-out neural-network suite: where this optimizer is NOT meant to be used
    report = evaluate_suite(f"lstm-quadratic={weights}")
    training = {
        **record,
        "tasks": ["quadratic"],
        "evaluation": evaluation,
        "generalization": generalization_record(report),
    }  # record keeps recipe_file and recipe
    staged = run / "ship" / f"{NAME}.safetensors"
    optizoo.save_rule(
        rule,
        staged,
        training=training,
        description=(
            "Coordinate-wise 2x20 LSTM (log-and-sign inputs) meta-trained on 10-dim quadratics "
            "||W theta - y||^2 (Andrychowicz et al. 2016); beats tuned Adam/RMSprop/SGD on "
            "held-out quadratics, loses clearly to tuned Adam on neural networks"
        ),
        license="MIT",
    )
    out = add_to_shipped(staged, NAME, overwrite=True)  # copies + updates MANIFEST.json atomically

    docs = ROOT / "docs"
    (docs / "figures").mkdir(parents=True, exist_ok=True)
    results["final"].plot(docs / "figures" / "quadratic-reproduction.png")
    tables = [
        "## Tuned for final loss\n\nAt the training horizon (100 steps):\n\n"
        + results["final"].table(at=100)
        + "\nPast the horizon (200 steps):\n\n"
        + results["final"].table(),
        "## Tuned for sum of losses\n\nAt 100 steps:\n\n"
        + results["sum"].table(at=100)
        + "\nAt 200 steps:\n\n"
        + results["sum"].table(),
    ]
    (docs / "_quadratic_tables.md").write_text(
        "\n\n".join(tables)
    )  # pasted into docs/learning-to-learn.md
    print(f"wrote {out} and docs/_quadratic_tables.md; now run scripts/build_zoo_docs.py")


if __name__ == "__main__":
    main()
