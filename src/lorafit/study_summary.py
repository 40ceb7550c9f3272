"""The summary of a ``lorafit tune`` study: ``study.json``, ``study.csv``, ``study.md`` and ``study.png``.

Written (each file atomically) after every trial, so an interrupted study still has an up-to-date summary.
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

from lorafit.rundir import atomic_file

BEST_DIR = "best"
KEPT = "kept"
"""Trial attribute: the trial's run was saved to ``OUT/best`` (it beat every trial finished before it)."""
STUDY_JSON, STUDY_CSV, STUDY_MD, STUDY_PNG = "study.json", "study.csv", "study.md", "study.png"
IMPORTANCE_MIN_TRIALS = 5
"""Finished trials before parameter importances are estimated (with fewer they say nothing)."""


def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, value (pruned: the last reported one), step, settings, time, host."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        step = trial.last_step
        value = trial.value if trial.value is not None else trial.intermediate_values.get(step)
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "value": value, "last_step": step,
                     **trial.params, "seconds": None if seconds is None else round(seconds, 1),
                     "host": trial.user_attrs.get("host"), "out_dir": trial.user_attrs.get("out_dir")})
    return rows


def best_trial(study) -> dict | None:
    """The best finished trial: number, value, settings and where its run directory was written."""
    import optuna

    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not finished:
        return None
    # of equal values, one whose run was kept (two machines may finish equals in either order), else the first
    sign = -1 if study.direction == optuna.study.StudyDirection.MINIMIZE else 1
    best = max(finished, key=lambda t: (sign * t.value, bool(t.user_attrs.get(KEPT))))
    out_dir = best.user_attrs.get("out_dir")
    return {"trial": best.number, "value": best.value, "params": best.params, "host": best.user_attrs.get("host"),
            "run_dir": str(Path(out_dir) / BEST_DIR) if out_dir and best.user_attrs.get(KEPT) else None}


def importances(study) -> dict[str, float]:
    """Optuna's parameter importances (PED-ANOVA), once ``IMPORTANCE_MIN_TRIALS`` trials have finished with
    different values; empty before, and where Optuna warns that it has too few trials to tell."""
    import optuna

    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(finished) < IMPORTANCE_MIN_TRIALS or len({t.value for t in finished}) < 2:
        return {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    return {} if caught else weights


def write_summary(study, out: Path, settings: dict) -> dict:
    """Write the four summary files into ``out``; returns the ``study.json`` content."""
    from lorafit.plots import study_png

    rows, weights = trial_rows(study), importances(study)
    states = [row["state"] for row in rows]
    summary = {"study_name": study.study_name, **settings, "best": best_trial(study),
               "trials": {state: states.count(state) for state in sorted(set(states))},
               "importances": weights, "rows": rows}
    with atomic_file(out / STUDY_JSON) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with atomic_file(out / STUDY_CSV) as tmp:
        _write_csv(tmp, rows)
    with atomic_file(out / STUDY_MD) as tmp:
        tmp.write_text(markdown(summary), encoding="utf-8")
    with atomic_file(out / STUDY_PNG) as tmp:
        tmp.write_bytes(study_png(rows, weights, settings["metric"], IMPORTANCE_MIN_TRIALS))
    return summary


def _columns(rows: list[dict]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns) or ["trial", "state", "value"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_columns(rows))
        writer.writeheader()
        writer.writerows(rows)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown(summary: dict) -> str:
    """``study.md``: the search space, the best trial and a table of every trial."""
    metric, best = summary["metric"], summary["best"]
    lines = [f"# lorafit tune: study {summary['study_name']}", "",
             f"Objective: validation {metric} ({summary.get('direction', 'maximize')[:-1]}ed). Trials: "
             + (", ".join(f"{n} {state}" for state, n in summary["trials"].items()) or "none yet") + ".", "",
             "| setting | searched over |", "|---|---|"]
    lines += [f"| {name} | {_cell(spec)} |" for name, spec in summary["search_space"].items()]
    lines.append("")
    if best:
        where = f"run directory {best['run_dir']} on {best['host']}" if best["run_dir"] else "run not kept"
        lines += [f"Best: trial {best['trial']}, {metric} {best['value']:.4f}, {where}.",
                  "", "| setting | value |", "|---|---|"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in best["params"].items()]
        lines.append("")
    if summary.get("test"):
        test = summary["test"]
        lines += [f"Test ({test['source']}, {test['rows']} rows), best run: "
                  + ", ".join(f"{name} {value:.4f}" for name, value in test["scores"].items()) + ".", ""]
    columns = [c for c in _columns(summary["rows"]) if c != "out_dir"]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in summary["rows"]]
    return "\n".join(lines) + "\n"
