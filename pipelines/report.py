"""The training report ``ZOO/report/<stage>.md``: what was trained, how well, how it learned.

Contents: the zoo file and its training record (command, version, seed, sizes, preset), the
held-out evaluation as a metrics table (learned stage against sep where the stage's
``evaluate`` reports both), the loss curves (``<stage>_loss.png``, drawn from Lightning's
CSVLogger ``metrics.csv`` files, all versions of a resumed training joined by step), and the
stage's own figures (``stage.report_figures``: predicted against true, example masks, ...).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

__all__ = ["write_report", "read_metrics", "plot_losses", "metrics_table"]


def read_metrics(log_dir) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value), ...]}`` from every ``version_*/metrics.csv`` under
    ``log_dir`` (CSVLogger layout), sorted by step; a later version wins at equal steps."""
    log_dir = Path(log_dir)
    files = sorted(log_dir.glob("version_*/metrics.csv"),
                   key=lambda p: int(p.parent.name.split("_")[-1]) if
                   p.parent.name.split("_")[-1].isdigit() else -1)
    series: dict[str, dict[int, float]] = {}
    for f in files:
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    step = int(float(row.get("step") or 0))
                except ValueError:
                    continue
                for key, text in row.items():
                    if key in ("step", "epoch") or text in ("", None):
                        continue
                    try:
                        value = float(text)
                    except ValueError:
                        continue
                    series.setdefault(key, {})[step] = value
    return {k: sorted(v.items()) for k, v in series.items()}


def plot_losses(metrics: dict, path, title: str = "") -> Path | None:
    """Loss curves (every column whose name contains ``loss``) against the optimizer step,
    training (step-wise) as thin lines, epoch-wise and validation values as markers.  Returns
    the PNG path, or None when there is nothing to plot."""
    keys = [k for k in metrics if "loss" in k.lower() and metrics[k]]
    if not keys:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    positive = all(v > 0 for k in keys for _, v in metrics[k])
    for k in sorted(keys):
        steps, values = zip(*metrics[k])
        dense = len(steps) > 3 and not k.startswith("val") and "epoch" not in k
        ax.plot(steps, values, lw=1.0 if dense else 1.5, marker=None if dense else "o", ms=4,
                label=k)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if positive:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:d}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _methods(flat: dict) -> list[str]:
    """Method prefixes of flat keys ``<method>_<metric>`` (e.g. ``initnet_sigma_mag`` and
    ``sep_sigma_mag``): prefixes that share at least three metric names with another."""
    by = {}
    for k in flat:
        head, sep, rest = k.partition("_")
        if sep:
            by.setdefault(head, set()).add(rest)
    return [m for m in by if any(len(by[m] & by[o]) >= 3 for o in by if o != m)]


def _is_blank(v) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def _pivot(cols: list[str], rows: list[str], cell) -> list[str]:
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        values = [cell(c, r) for c in cols]
        if all(_is_blank(v) for v in values):
            continue                     # e.g. an empty S/N bin: nothing to compare
        lines.append(f"| {r} | " + " | ".join("" if v == "" else _fmt(v) for v in values) + " |")
    return lines


def metrics_table(evaluation: dict) -> str:
    """Markdown table(s) of an evaluation dict.

    The learned stage and sep side by side where the dict allows: either every top-level value
    is a dict (``{"maskrcnn": {...}, "sep": {...}}``: methods become columns), or flat keys
    carry method prefixes (``initnet_sigma_mag``, ``sep_sigma_mag``); other keys follow in a
    metric | value table (nested dicts flattened with dots).  Rows empty for every method
    (an unpopulated S/N bin) are left out."""
    if not evaluation:
        return "(no metrics)\n"
    if all(isinstance(v, dict) for v in evaluation.values()):
        cols = list(evaluation)
        flat = {c: _flatten(evaluation[c]) for c in cols}
        rows = []
        for c in cols:
            rows += [k for k in flat[c] if k not in rows]
        return "\n".join(_pivot(cols, rows, lambda c, r: flat[c].get(r, ""))) + "\n"
    flat = _flatten(evaluation)
    methods = _methods(flat)
    lines = []
    if len(methods) >= 2:
        rows = []
        for k in flat:
            head, _, rest = k.partition("_")
            if head in methods and rest not in rows:
                rows.append(rest)
        lines += _pivot(methods, rows, lambda c, r: flat.get(f"{c}_{r}", "")) + [""]
        flat = {k: v for k, v in flat.items() if k.partition("_")[0] not in methods}
    if flat:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in flat.items() if not _is_blank(v)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report_dir, name: str, *, stage, module, sim_dir, log_dir, evaluation: dict,
                 training: dict, zoo_file) -> Path:
    """Write ``report_dir/<name>.md`` (+ PNGs beside it); returns the markdown path."""
    report_dir = Path(report_dir)
    fig_dir = report_dir / name
    fig_dir.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(log_dir)
    loss_png = plot_losses(metrics, report_dir / f"{name}_loss.png",
                           title=f"{name}: {training.get('simulator', {}).get('name', '')} "
                                 f"{training.get('simulator', {}).get('band', '')}")
    figures = [Path(f) for f in (stage.report_figures(module, sim_dir, fig_dir) or [])]
    lines = [f"# {name}: training report", "",
             f"Zoo file: `{zoo_file}`", "",
             f"Reproduce: `{training.get('reproduce', training.get('command', ''))}`", "",
             "## Held-out evaluation", "",
             f"On {training.get('n_val', '?')} simulated cutouts of seed "
             f"{training.get('val_seed', '?')} (never used in training).", "",
             metrics_table(evaluation), "## Training", "",
             "| setting | value |", "|---|---|"]
    for k, v in _flatten(training).items():
        lines.append(f"| {k} | {_fmt(v)} |")
    lines += ["", "## Loss curves", ""]
    if loss_png is not None:
        lines.append(f"![loss curves]({loss_png.name})")
        last = {k: v[-1][1] for k, v in metrics.items() if "loss" in k.lower() and v}
        if last:
            lines += ["", "Last values: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in sorted(last.items()))]
    else:
        lines.append(f"(no loss values logged in {log_dir})")
    if figures:
        lines += ["", "## Figures", ""]
        for f in figures:
            rel = f.relative_to(report_dir) if f.is_relative_to(report_dir) else f
            lines += [f"![{f.stem}]({rel})", ""]
    path = report_dir / f"{name}.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
