"""Model cards: a markdown page for a weight file, generated from its metadata alone.

>>> from optizoo.publish.card import card_for_file
>>> print(card_for_file("dist/my-lstm.safetensors", figure="my-lstm.png"))

A card has: the one-line description, how to load the optimizer, the file (sha256, format,
licence, versions), the architecture (rule and its config), the meta-training record, the
comparison tables against baselines recorded in ``optizoo.training["evaluation"]`` (and the
held-out generalization suite in ``optizoo.training["generalization"]``, when recorded), the
loss-curve figure, and a **Where it loses** section written from the numbers: every recorded
case where a baseline's mean is lower than the learned optimizer's is stated in words with both
numbers and the paired difference, and what the record does *not* cover (tasks never evaluated,
steps past the training horizon) is said too.

The comparison is read as an :class:`optizoo.compare.records.EvaluationRecord` (its
``from_dict`` refuses a foreign or malformed record with a ``ValueError``). Its stored layout
(written by :func:`optizoo.publish.publish.publish_rule`; the shipped ``lstm-quadratic`` file
uses the same keys)::

    "evaluation": {
        "task": "quadratic", "task_args": {...}, "held_out_problems": 100,
        "baselines": "learning rate tuned by ...", "learned": "my-lstm",
        "at_200_steps_tuned_for_final": {             # one block per (steps, tuning criterion)
            "my-lstm": {"lr": 1.0, "tuned": false, "final_loss": INTERVAL,
                        "sum_of_losses": INTERVAL, "test_loss": INTERVAL (optional)},
            "adam": {"lr": 0.237, "tuned": true, ...,
                     "learned_minus_this": {"final_loss": INTERVAL, ...}},   # optional, paired
        },
    }

where ``INTERVAL`` is :meth:`optizoo.compare.stats.Interval.to_dict` (mean, half_width, n, confidence,
n_nonfinite; non-finite values as ``null``).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optizoo._io import write_text_atomic
from optizoo.compare.records import EvaluationBlock, EvaluationEntry, EvaluationRecord
from optizoo.compare.stats import Interval, format_interval

__all__ = [
    "card_for_file",
    "evaluation_record",
    "model_card",
    "summary_phrase",
    "where_it_loses",
    "write_text_atomic",
]

#: metric key in a recorded entry -> words
METRICS: dict[str, str] = {
    "final_loss": "final loss",
    "sum_of_losses": "sum of losses",
    "test_loss": "test loss",
}
_CRITERION_TEXT = {"final": "final loss", "sum": "sum of losses", "test": "test loss"}
#: training-record keys shown in the "Meta-training" table, in this order
_RECORD_KEYS = (
    ("tasks", "task(s)"),
    ("task", "task"),
    ("task_args", "task arguments"),
    ("task_config", "task configuration"),
    ("unroll", "unroll (steps per truncation)"),
    ("horizon", "horizon (steps per episode)"),
    ("meta_steps", "meta-steps (of these weights)"),
    ("meta_optimizer", "meta-optimizer"),
    ("problems_per_step", "problems per meta-step"),
    ("second_order", "second-order meta-gradients"),
    ("loss_weights", "meta-loss weights"),
    ("seed", "seed"),
    ("seeds", "seeds"),
    ("selection", "selection"),
    ("run", "run"),
    ("recipe_file", "recipe file"),
    ("recipe", "recipe"),
)
_TABLE_SKIP = {"evaluation", "generalization", "meta_config", "architecture_suite"}


# --------------------------------------------------------------------------- small helpers


def _interval(d: Any) -> Interval | None:
    """An :class:`Interval` from its ``to_dict`` form (``None`` if ``d`` is not one), for the
    held-out suite's rows (the comparison blocks are read by :class:`EvaluationRecord`)."""
    if not isinstance(d, Mapping) or "mean" not in d:
        return None
    return Interval.from_dict(d)


def _fmt(iv: Interval | None, digits: int = 3) -> str:
    return "—" if iv is None else format_interval(iv, digits)


def _signed(iv: Interval) -> str:
    if math.isnan(iv.half_width):
        return f"{iv.mean:+.3g}"
    return f"{iv.mean:+.3g} ± {iv.half_width:.2g}"


def _value_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, sort_keys=True) + "`"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _words(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------- evaluation record


def evaluation_record(training: Mapping[str, Any] | None) -> EvaluationRecord | None:
    """The typed comparison record of a decoded ``optizoo.training`` (``None`` when it records
    no comparison block).

    Raises:
        ValueError: ``training["evaluation"]`` is not an evaluation record (foreign or
            malformed keys or values), naming what is wrong.
    """
    evaluation = training.get("evaluation") if isinstance(training, Mapping) else None
    if evaluation is None:
        return None
    try:
        record = EvaluationRecord.from_dict(evaluation)
    except ValueError as exc:
        raise ValueError(
            f"optizoo.training['evaluation'] is not an optizoo evaluation record: {exc}"
        ) from None
    return record if record.blocks else None


def _baseline_text(label: str, entry: EvaluationEntry) -> str:
    lr = entry.lr
    lr_text = "" if lr is None else f"lr {float(lr):.3g}"
    if entry.tuned:
        return f"tuned {label} ({lr_text})" if lr_text else f"tuned {label}"
    return f"{label} (fixed {lr_text})" if lr_text else label


def _evaluation_table(block: EvaluationBlock, learned: str | None, name: str) -> str:
    steps, entries = block.steps, block.entries
    metrics = [m for m in METRICS if any(m in e.metrics for e in entries.values())]
    head = ["optimizer", "lr"]
    head += [
        f"final loss (step {steps})"
        if m == "final_loss"
        else f"sum of losses (steps 0–{steps - 1})"
        if m == "sum_of_losses"
        else f"test loss (step {steps})"
        for m in metrics
    ]
    paired = [m for m in metrics if any(e.learned_minus_this is not None for e in entries.values())]
    head += [f"{name} − this, {METRICS[m]} (paired)" for m in paired]
    rows = []
    ordered = sorted(entries.items(), key=lambda kv: kv[0] != learned)  # learned row first
    for label, entry in ordered:
        lr = entry.lr
        lr_text = "—" if lr is None else f"{float(lr):.3g}"
        if label == learned and not entry.tuned:
            lr_text += " (as trained)"
        if entry.tuned:
            lr_text += " (tuned" + (", grid edge!" if entry.grid_edge else "") + ")"
        shown = f"**{name}**" if label == learned else label
        row = [shown, lr_text] + [_fmt(entry.metrics.get(m)) for m in metrics]
        diffs = entry.learned_minus_this or {}
        for m in paired:
            iv = diffs.get(m) if label != learned else None
            row.append("—" if iv is None else _signed(iv))
        rows.append(row)
    return _table(head, rows)


def _evaluation_caption(record: EvaluationRecord) -> str:
    evaluation = record.fields
    parts = []
    task = evaluation.get("task")
    if task:
        args = evaluation.get("task_args") or {}
        parts.append(
            f"Task `{task}`" + (f" with `{json.dumps(args, sort_keys=True)}`" if args else "")
        )
    n = evaluation.get("held_out_problems")
    if n:
        parts.append(
            f"{n} held-out problems (never used for meta-training or tuning), the same for every "
            "optimizer; mean ± 95% Student-t half-width"
        )
    if evaluation.get("baselines"):
        parts.append(f"baselines: {evaluation['baselines']}")
    return ("; ".join(parts) + ".") if parts else ""


def _generalization_table(gen: Mapping[str, Any], name: str) -> str:
    head = ["task", "steps", name, "Adam (tuned lr)", "lr", f"{name} − Adam (paired)", "verdict"]
    rows = []
    for r in gen.get("rows", []):
        diff = _interval(r.get("difference"))
        rows.append(
            [
                str(r.get("task")),
                f"{r.get('steps')} ({r.get('multiple')}×)",
                _fmt(_interval(r.get("optimizer"))),
                _fmt(_interval(r.get("adam"))),
                f"{float(r['adam_lr']):.2g}" if r.get("adam_lr") is not None else "—",
                "—" if diff is None else _signed(diff),
                str(r.get("verdict", "")),
            ]
        )
    return _table(head, rows)


# --------------------------------------------------------------------------- honesty


def where_it_loses(training: Mapping[str, Any], name: str) -> list[str]:
    """Sentences (markdown bullets without the dash) stating, with numbers, every recorded case
    where a baseline's mean beats the learned optimizer's, then what the record does not cover.

    Args:
        training: the decoded ``optizoo.training`` metadata.
        name: the optimizer's name as it should read in the text.
    """
    out: list[str] = []
    record = evaluation_record(training)
    blocks = record.blocks if record is not None else ()
    learned = record.learned if record is not None else None
    evaluation = record.fields if record is not None else {}
    lost_any = False
    compared: set[str] = set()
    max_steps = 0
    for block in blocks:
        steps = block.steps
        max_steps = max(max_steps, steps)
        mine = block.entries.get(learned) if learned else None
        if mine is None:
            continue
        tuning = _CRITERION_TEXT.get(block.criterion, block.criterion)
        when = f"After {steps} steps (baselines' learning rates tuned for {tuning})"
        mine_iv = {m: mine.metrics.get(m) for m in METRICS}
        for metric, lv in mine_iv.items():
            if lv is not None and lv.n_nonfinite:
                out.append(
                    f"{when}: {name} diverged (non-finite {METRICS[metric]}) on "
                    f"{lv.n_nonfinite} of {lv.n} held-out problems."
                )
                lost_any = True
        for label, entry in block.entries.items():
            if label == learned:
                continue
            clauses = []
            for metric, metric_text in METRICS.items():
                lv, bv = mine_iv[metric], entry.metrics.get(metric)
                if lv is None or bv is None:
                    continue
                compared.add(label)
                if lv.n_nonfinite or bv.n_nonfinite or not bv.mean < lv.mean:
                    continue
                clause = f"in {metric_text}, {format_interval(bv)} against {format_interval(lv)}"
                diff = (entry.learned_minus_this or {}).get(metric)
                if diff is not None and not diff.n_nonfinite and not math.isnan(diff.half_width):
                    pct = f"{round(diff.confidence * 100)}%"
                    sig = (
                        f"significant at {pct}"
                        if diff.low > 0
                        else f"not significant at {pct}: the interval includes 0"
                    )
                    clause += f" (paired difference {name} − {label}: {_signed(diff)}, {sig})"
                elif not math.isnan(lv.half_width) and bv.high < lv.low:
                    clause += " (the intervals do not overlap)"
                clauses.append(clause)
            if clauses:
                lost_any = True
                out.append(
                    f"{when}, {_baseline_text(label, entry)} has a lower mean than {name} "
                    + "; ".join(clauses)
                    + "."
                )
    gen = training.get("generalization")
    gen = gen if isinstance(gen, Mapping) else {}
    gen_tasks: list[str] = []
    for r in gen.get("rows", []):
        gen_tasks.append(str(r.get("task")))
        verdict = r.get("verdict")
        opt, adam, diff = (
            _interval(r.get("optimizer")),
            _interval(r.get("adam")),
            _interval(r.get("difference")),
        )
        where = (
            f"On held-out task `{r.get('task')}` after {r.get('steps')} steps "
            f"({r.get('multiple')}× the training horizon)"
        )
        if verdict == "diverged" or (opt is not None and opt.n_nonfinite):
            out.append(f"{where}: {name} diverged on some problems ({_fmt(opt)}).")
            lost_any = True
        elif opt is not None and adam is not None and adam.mean < opt.mean:
            lost_any = True
            sig = (
                "significant" if verdict == "worse" else "not significant: the interval includes 0"
            )
            out.append(
                f"{where}: tuned Adam reaches a lower mean test loss than {name}: "
                f"{format_interval(adam)} against {format_interval(opt)} (paired difference "
                f"{'—' if diff is None else _signed(diff)}, {sig})."
            )
    suite = training.get("architecture_suite")
    for cell in suite.get("cells", []) if isinstance(suite, Mapping) else []:
        if not isinstance(cell, Mapping) or cell.get("baseline") != "adam":
            continue
        opt, adam = _interval(cell.get("optimizer")), _interval(cell.get("baseline_loss"))
        if opt is None or adam is None or not adam.mean < opt.mean:
            continue
        lost_any = True
        sig = (
            "significant at 95%"
            if cell.get("verdict") == "worse"
            else "not significant at 95%: the interval includes 0"
        )
        gen_tasks.append(str(cell.get("task")))
        out.append(
            f"On architecture-suite task `{cell.get('task')}` after {cell.get('budget')} steps, "
            f"Adam with its lr tuned for that task and budget reaches a lower mean test loss "
            f"than {name}: {format_interval(adam)} against {format_interval(opt)} "
            f"({_signed(_interval(cell.get('difference')) or opt)}, {sig})."
        )
    if blocks and learned is not None and not lost_any:
        baselines = _words(sorted(compared)) or "the baselines"
        out.append(
            f"In every recorded comparison (task `{evaluation.get('task', '?')}`) the mean of "
            f"{name} is lower than that of {baselines}; that says nothing about other tasks."
        )
    suite_cells = suite.get("cells") if isinstance(suite, Mapping) else None
    if not blocks and not gen.get("rows") and not suite_cells:
        out.append(
            "This file records no comparison against tuned baselines, so there is no evidence "
            "that it beats a hand-designed optimizer with a tuned learning rate anywhere; "
            "measure it with `optizoo compare` before relying on it."
        )
    trained = training.get("tasks") or training.get("task")
    trained_text = (
        _words([f"`{t}`" for t in trained])
        if isinstance(trained, list)
        else (f"`{trained}`" if trained else "an unrecorded task")
    )
    if not gen_tasks:
        out.append(
            f"Meta-trained on {trained_text}; no evaluation on other tasks (e.g. neural networks) "
            "is recorded, and learned optimizers often fail outside their training distribution."
        )
    horizon = training.get("horizon")
    longest = max([max_steps] + [int(r.get("steps") or 0) for r in gen.get("rows", [])])
    if isinstance(horizon, int) and longest and longest <= horizon:
        out.append(
            f"Only measured up to {longest} steps; behaviour past the {horizon}-step training "
            "horizon is unknown (learned optimizers can stall or diverge there)."
        )
    return out


def _suite_phrase(record: Any) -> str:
    """Count the held-out suite's verdicts against tuned Adam (``""`` without rows)."""
    rows = record.get("rows") if isinstance(record, Mapping) else None
    if not rows or not all(isinstance(r, Mapping) for r in rows):
        return ""
    verdicts = [r.get("verdict") for r in rows]
    text = (
        f"held-out suite: better than tuned Adam in {verdicts.count('better')}, worse in "
        f"{verdicts.count('worse')} of {len(rows)} task × budget cells"
    )
    diverged = verdicts.count("diverged")
    return text + (f", diverged in {diverged}" if diverged else "")


def summary_phrase(training: Mapping[str, Any]) -> str:
    """A short verdict for a one-line description, e.g. ``"beats tuned adam and sgd on held-out
    quadratic problems at 200 steps; loses to tuned rmsprop"`` (``""`` without a record).

    Uses the final loss of the longest comparison tuned for final loss (or the first block);
    without such a comparison, the held-out suite's verdicts (``training["generalization"]``),
    e.g. ``"held-out suite: better than tuned Adam in 8, worse in 2 of 15 task × budget cells"``.
    """
    suite = training.get("architecture_suite")
    if isinstance(suite, Mapping) and suite.get("summary"):
        return "architecture suite " + str(suite["summary"][0])
    if not isinstance(training.get("evaluation"), Mapping):
        return _suite_phrase(training.get("generalization"))
    record = evaluation_record(training)
    learned = record.learned if record is not None else None
    if record is None or learned is None:
        return ""
    evaluation = record.fields
    finals = [b for b in record.blocks if b.criterion == "final"] or list(record.blocks)
    block = max(finals, key=lambda b: b.steps)
    steps = block.steps
    mine = block.entries.get(learned)
    lv = mine.metrics.get("final_loss") if mine is not None else None
    if lv is None:
        return ""
    wins, losses = [], []
    for label, entry in block.entries.items():
        if label == learned:
            continue
        bv = entry.metrics.get("final_loss")
        if bv is None:
            continue
        shown = f"tuned {label}" if entry.tuned else label
        if not lv.n_nonfinite and (bv.n_nonfinite or lv.mean < bv.mean):
            wins.append(shown)
        else:
            losses.append(shown)
    task = evaluation.get("task", "its task")
    parts = []
    if wins:
        parts.append(f"beats {_words(wins)} on held-out {task} problems at {steps} steps")
    if losses:
        parts.append(
            f"loses to {_words(losses)}"
            + ("" if wins else f" on held-out {task} problems at {steps} steps")
        )
    return "; ".join(parts) + " (final loss)" if parts else ""


# --------------------------------------------------------------------------- the card


def _escape_html(value: Any) -> Any:
    """``value`` with ``&``, ``<`` and ``>`` escaped in every string (keys too), recursively."""
    if isinstance(value, str):
        return html.escape(value, quote=False)
    if isinstance(value, Mapping):
        return {_escape_html(k): _escape_html(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_html(v) for v in value]
    return value


def model_card(
    metadata: Mapping[str, Any],
    *,
    name: str,
    sha256: str | None = None,
    figure: str | None = None,
    figures: Sequence[tuple[str, str]] = (),
    load_path: str | None = None,
    source: str | None = None,
) -> str:
    """The markdown model card of a weight file.

    Args:
        metadata: :func:`optizoo.zoo.read_metadata` of the file (JSON fields decoded).
        name: the optimizer's name (title, code examples).
        sha256: the file's sha256 (shown so a download can be checked).
        figure: path of the loss-curve figure, relative to where the card will live.
        figures: further ``(caption, relative path)`` figures (meta-training curve, ...).
        load_path: the path shown in the "load by path" example (default ``NAME.safetensors``).
        source: who provides it (``"optizoo"`` for shipped files, a plugin distribution...).

    Returns:
        Markdown text ending in a newline.
    """
    metadata = _escape_html(metadata)  # a file's metadata never injects HTML into the card
    training = metadata.get("optizoo.training") or {}
    config = metadata.get("optizoo.config") or {}
    versions = metadata.get("optizoo.versions") or {}
    rule = metadata.get("optizoo.rule", "?")
    description = str(metadata.get("description") or "").strip()
    lines = [f"# {name}", ""]
    lines += [description or "_No description recorded._", ""]

    # --- usage
    path_text = load_path or f"{name}.safetensors"
    lines += ["## Use it", "", "```python", "import optizoo", ""]
    if rule in ("lstm", "hierarchical"):  # the rules LSTMOptimizer runs
        lines += [
            f'opt = optizoo.LSTMOptimizer(model.parameters(), weights="{name}")  # by name',
            f'opt = optizoo.LSTMOptimizer(model.parameters(), weights="{path_text}")  # by path',
        ]
    else:
        lines += [
            f'opt = optizoo.load_pretrained("{name}", model.parameters())  # by name',
            f'opt = optizoo.load_pretrained("{path_text}", model.parameters())  # by path',
        ]
    lines += ["```", ""]
    lines += [
        "Loading by name works once the file is shipped in optizoo's `pretrained/` folder or "
        "registered by a plugin through the `optizoo_pretrained` hook; loading by path always "
        "works. `lr` (default 1.0) scales the learned update.",
        "",
    ]

    # --- file
    lines += ["## File", ""]
    rows = [
        ["name", f"`{name}`"],
        ["rule", f"`{rule}`"],
        ["weight format", f"optizoo format {metadata.get('optizoo.format', '?')} (safetensors)"],
    ]
    if source:
        rows.append(["provided by", source])
    if sha256:
        rows.append(["sha256", f"`{sha256}`"])
    rows.append(["licence", str(metadata.get("license") or "not stated")])
    if versions:
        rows.append(["written with", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))])
    lines += [_table(["", ""], rows), ""]

    # --- architecture
    lines += ["## Architecture", "", f"Update rule `{rule}` with this configuration:", ""]
    lines += [
        _table(["option", "value"], [[f"`{k}`", _value_text(v)] for k, v in sorted(config.items())])
        if config
        else "_No configuration recorded._",
        "",
    ]

    # --- training record
    lines += ["## Meta-training", ""]
    if training:
        shown = [(label, training[key]) for key, label in _RECORD_KEYS if key in training]
        if shown:
            lines += [_table(["", ""], [[lab, _value_text(v)] for lab, v in shown]), ""]
        rest = {
            k: v
            for k, v in training.items()
            if k not in _TABLE_SKIP and k not in {key for key, _ in _RECORD_KEYS}
        }
        if rest:
            lines += [
                "Other recorded fields:",
                "",
                "```json",
                json.dumps(rest, indent=1, sort_keys=True),
                "```",
                "",
            ]
    else:
        lines += ["_No training record in this file._", ""]

    # --- evaluation
    record = evaluation_record(training)
    lines += ["## Comparison with baselines", ""]
    if record is not None:
        learned = record.learned
        caption = _evaluation_caption(record)
        if caption:
            lines += [caption, ""]
        for block in record.blocks:
            tuning = _CRITERION_TEXT.get(block.criterion, block.criterion)
            lines += [
                f"### After {block.steps} steps, baselines tuned for {tuning}",
                "",
                _evaluation_table(block, learned, name),
                "",
            ]
    else:
        lines += ["_No comparison against tuned baselines is recorded in this file._", ""]
    if figure:
        lines += [f"![Loss curves of {name} and the baselines]({figure})", ""]

    gen = training.get("generalization") if isinstance(training, Mapping) else None
    if isinstance(gen, Mapping) and gen.get("rows"):
        lines += ["## Held-out tasks", ""]
        text = (
            "Mean **test** loss on tasks of the evaluation suite "
            f"`{gen.get('suite', 'default')}` against `torch.optim.Adam` with its learning rate "
            "tuned on separate problems, paired by seed"
        )
        if gen.get("seeds"):
            text += f" ({gen['seeds']} problems per task)"
        text += "."
        if gen.get("quick"):
            text += (
                " **Quick settings** (few seeds, a coarse grid): a smoke test, not evidence "
                "either way."
            )
        lines += [text, "", _generalization_table(gen, name), ""]
        for caption, path in figures:
            if "generalization" in caption.lower():
                lines += [f"![{caption}]({path})", ""]

    suite = training.get("architecture_suite") if isinstance(training, Mapping) else None
    if isinstance(suite, Mapping) and suite.get("cells"):
        lines += ["## Architecture suite", "", *_suite_section(suite, name), ""]

    # --- honesty
    lines += ["## Where it loses", ""]
    lines += [f"- {s}" for s in where_it_loses(training, name)]
    lines += [""]

    other = [(c, p) for c, p in figures if "generalization" not in c.lower()]
    if other:
        lines += ["## Figures", ""]
        for caption, path in other:
            lines += [f"{caption}:", "", f"![{caption}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


_SUITE_BASELINES = (
    ("adam", "tuned Adam"),
    ("adamw", "tuned AdamW"),
    ("adamw-default", "AdamW at torch defaults"),
)


def _suite_section(suite: Mapping[str, Any], name: str) -> list[str]:
    """The architecture suite's verdicts (``training["architecture_suite"]``: the ``summary``
    and ``cells`` of :meth:`optizoo.compare.suite.SuiteReport.to_json`) as card lines."""
    lines = [
        "Mean **test** loss after each budget on the architecture suite "
        "(`optizoo evaluate --suite architectures`: networks of kinds and sizes that the "
        "meta-training did not see), against Adam and AdamW tuned per task and per budget on "
        "separate problems and AdamW at torch's defaults; paired differences over the same "
        "problems with 95% intervals.",
        "",
    ]
    lines += [f"- {line}" for line in suite.get("summary", [])]
    cells: dict[tuple[str, int], dict[str, Mapping[str, Any]]] = {}
    for cell in suite["cells"]:
        if not isinstance(cell, Mapping):
            continue
        cells.setdefault((str(cell.get("task")), int(cell.get("budget", 0))), {})[
            str(cell.get("baseline"))
        ] = cell
    head = ["task", "steps", name] + [label for _, label in _SUITE_BASELINES]
    rows = []
    for (task, budget), by in cells.items():
        first = next(iter(by.values()))
        own = _interval(first.get("optimizer"))
        row = [task, str(budget), _fmt(own)]
        for key, _label in _SUITE_BASELINES:
            c = by.get(key)
            if c is None:
                row.append("—")
                continue
            rel = c.get("relative")
            rel_text = f"{rel:+.0%}" if isinstance(rel, (int, float)) and math.isfinite(rel) else ""
            verdict = str(c.get("verdict", ""))
            row.append(f"{_fmt(_interval(c.get('baseline_loss')))} ({rel_text}, {verdict})")
        rows.append(row)
    lines += [
        "",
        "Each baseline cell: its loss, then the relative difference (optimizer − baseline) / "
        "baseline and the verdict.",
        "",
        _table(head, rows),
    ]
    return lines


def card_for_file(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    figure: str | None = None,
    figures: Sequence[tuple[str, str]] = (),
    load_path: str | None = None,
    source: str | None = None,
) -> str:
    """:func:`model_card` of the weight file at ``path`` (name defaults to the file stem)."""
    from optizoo.zoo.format import read_metadata
    from optizoo.zoo.registry import sha256_file

    path = Path(path)
    return model_card(
        read_metadata(path),
        name=name or path.stem,
        sha256=sha256_file(path),
        figure=figure,
        figures=figures,
        load_path=load_path or path.name,
        source=source,
    )
