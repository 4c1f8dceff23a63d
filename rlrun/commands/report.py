"""`rlrun report=<folder> [report=<folder> ...] [report.<option>=...]`: read the runs, write
report.md, report.csv, curves-<env>.png (and profile.png, report.html) into a report folder."""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import re
import sys
import time
from pathlib import Path
from typing import Any

from rlrun.config import ConfigError, RunError, at_most
from rlrun.core.folders import check_writable, write_files
from rlrun.core.saved_run import parse_options
from rlrun.report.references import load_reference
from rlrun.report.runs import load_runs

REPORT_INSTALL = "python -m pip install -c constraints.txt -e '.[report]'"
DEFAULT_REFERENCE = "rl-zoo"
# rliable's default number of bootstrap repetitions; the learning curves and performance
# profiles hold resamples × runs × points numbers in memory at once.
MAX_RESAMPLES = 50_000
REPORT_OPTIONS = {
    "report.group_by": "settings that tell groups apart, e.g. [algo,algo.lr]; default algo and the overrides that differ",
    "report.last_fraction": "the late-training score's share of each run's steps; default 0.1",
    "report.resamples": f"bootstrap resamples; default 2000, at most {MAX_RESAMPLES}",
    "report.seed": "the bootstrap's seed; default 0",
    "report.reference": f"published scores: a name, a .csv file or none; default {DEFAULT_REFERENCE}",
    "report.out": "the report folder; default <folder>/report for one folder, reports/<date>_<time> for several",
    "report.format": "md, or html for report.html as well; default md",
}
WRITTEN = ("report.md", "report.csv", "report.html", "profile.png")  # with curves-*.png: what a report rewrites


def check_extra() -> None:
    missing = [name for name in ("scipy", "pandas", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"report= needs the report extra ({', '.join(missing)} missing): {REPORT_INSTALL}")


def split_folders(values: list[str]) -> list[str]:
    """report= values: each a folder, or a comma-separated list of folders (a folder whose own
    name holds commas, as a sweep's job folders do, is taken whole when it exists)."""
    folders: list[str] = []
    for value in values:
        parts = [value] if Path(value).exists() or "," not in value else [p for p in value.split(",") if p]
        folders.extend(parts)
    return folders


def parse(args: list[str]) -> tuple[dict[str, Any], Any]:
    from rlrun.report.analysis import Options  # needs the report extra (scipy), checked first

    given = parse_options("report", args, REPORT_OPTIONS)
    group_by = given.get("report.group_by")
    if group_by is not None:
        group_by = tuple(str(k) for k in (group_by if isinstance(group_by, list) else [group_by]))
    fraction = given.get("report.last_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"report.last_fraction={fraction!r} must be a number in (0, 1], e.g. 0.1 for the last 10% of training")
    resamples = given.get("report.resamples", 2000)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ConfigError(f"report.resamples={resamples!r} must be a positive whole number, e.g. 2000")
    at_most("report.resamples", resamples, MAX_RESAMPLES, "bootstrap resamples; more only narrow the intervals' noise")
    seed = given.get("report.seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"report.seed={seed!r} must be a whole number, zero or more")
    report_format = given.get("report.format", "md")
    if report_format not in ("md", "html"):
        raise ConfigError(f"report.format={report_format!r} is not valid; choose one of: md, html")
    reference = load_reference(given.get("report.reference", DEFAULT_REFERENCE))
    options = Options(group_by=group_by, last_fraction=float(fraction), resamples=resamples, seed=seed, reference=reference)
    return given, options


def main(folder_values: list[str], args: list[str]) -> None:
    check_extra()
    folders = split_folders(folder_values)
    given, options = parse(args)
    out = (
        Path(str(given["report.out"]))
        if given.get("report.out") is not None
        else (Path(folders[0]) / "report" if len(folders) == 1 else Path("reports") / time.strftime("%Y-%m-%d_%H-%M-%S"))
    )
    text = make_report(folders, options, out, given.get("report.format", "md"))
    print(_without_images(text))
    print(f"report: {out / 'report.md'}")


def make_report(folders: list[str], options, out: Path, report_format: str = "md") -> str:
    """Read, analyse, check the output folder, then write; nothing is written when a check
    fails. Returns report.md's text."""
    from rlrun.report.analysis import analyse  # needs the report extra (scipy), checked first

    runs, skipped, unreadable = load_runs(folders)
    report = analyse(runs, options, skipped, unreadable)
    check_writable("report.out", out)
    return write(report, out, folders, report_format)


def write(report, out: Path, folders: list[str], report_format: str = "md") -> str:
    """Make every file of the report in memory, then write them together (write_files): a
    write that fails leaves the earlier report as it was."""
    from rlrun.report.plots import curves_figure, profile_figure  # needs the report extra (matplotlib)
    from rlrun.report.studies import study_sections  # imports optuna when a study is there

    files: dict[str, bytes] = {}
    images = {}
    for env_id in report.envs:
        images[env_id] = f"curves-{_file_part(env_id)}.png"
        files[images[env_id]] = _png(curves_figure(report, env_id))
    if report.profiles:
        files["profile.png"] = _png(profile_figure(report))
    files["report.csv"] = table(report).to_csv(index=False, float_format="%.8g").encode()
    text = markdown(report, folders, images, study_sections(report.runs + report.skipped))
    files["report.md"] = text.encode()
    if report_format == "html":
        files["report.html"] = to_html(text, files).encode()
    write_files({out / name: data for name, data in files.items()}, "the report's file")
    # A report is remade whole: nothing of an earlier one stays behind.
    for old in [*out.glob("curves-*.png"), *(out / name for name in WRITTEN)]:
        if old.name not in files:
            old.unlink(missing_ok=True)
    return text


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _file_part(env_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", env_id)


def table(report):
    """report.csv: a row per group and environment, then a row per group for the normalised
    aggregates (env_id "normalised")."""
    import pandas as pd

    rows = []
    for (env_id, group), cell in report.cells.items():
        best = report.options.reference.normaliser(env_id) if report.options.reference else None
        rows.append(
            {
                "env_id": env_id,
                "group": group,
                **{key: _setting(cell, key) for key in report.group_keys},
                "seeds": len(cell.runs),
                "last_step_min": int(min(r.steps[-1] for r in cell.runs)),
                "last_step_max": int(max(r.steps[-1] for r in cell.runs)),
                "final_mean": cell.finals.mean(),
                "final_median": float(_median(cell.finals)),
                "final_iqm": float(cell.final.value),
                "final_iqm_low": float(cell.final.low),
                "final_iqm_high": float(cell.final.high),
                "last_fraction": report.options.last_fraction,
                "last_iqm": float(cell.last.value),
                "last_iqm_low": float(cell.last.low),
                "last_iqm_high": float(cell.last.high),
                "reference_score": best.score if best else None,
            }
        )
    for group, estimates in report.aggregates.items():
        row = {
            "env_id": "normalised",
            "group": group,
            "seeds": sum(len(report.cells[(e, group)].runs) for e in report.aggregate_envs[group]),
        }
        for name, estimate in estimates.items():
            column = name.replace(" ", "_").lower()
            row.update(
                {column: float(estimate.value), f"{column}_low": float(estimate.low), f"{column}_high": float(estimate.high)}
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _setting(cell, key: str):
    from rlrun.report.analysis import setting  # needs the report extra (scipy)

    return setting(cell.runs[0], key)


def _median(values):
    import numpy as np

    return np.median(values)


def _interval(estimate, digits: int = 1) -> str:
    return f"[{float(estimate.low):.{digits}f}, {float(estimate.high):.{digits}f}]"


def markdown(report, folders: list[str], images: dict[str, str], studies: list[str] | None = None) -> str:
    options = report.options
    percent = f"{options.last_fraction:.0%}"
    grouped = ", ".join(report.group_keys) or "nothing (one group)"
    lines = [
        "# rlrun report",
        "",
        f"{len(report.runs)} runs from {', '.join(folders)}, grouped by {grouped}. IQM: the 25% trimmed mean over "
        f"seeds; intervals: 95% stratified bootstrap percentile intervals ({options.resamples} resamples, seed "
        f"{options.seed}). Final: each run's last evaluation. Last {percent}: each run's mean evaluation return over "
        f"the last {percent} of its steps.",
        "",
    ]
    for env_id in report.envs:
        lines += [
            f"## {env_id}",
            "",
            f"| group | seeds | last step | final mean | final median | final IQM | 95% CI | last {percent} IQM | 95% CI |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
        ]
        for cell in report.env_cells(env_id):
            ends = sorted({int(r.steps[-1]) for r in cell.runs})
            step = str(ends[0]) if len(ends) == 1 else f"{ends[0]}–{ends[-1]}"
            lines.append(
                f"| {cell.group} | {len(cell.runs)} | {step} | {cell.finals.mean():.1f} | {_median(cell.finals):.1f} | "
                f"{float(cell.final.value):.1f} | {_interval(cell.final)} | "
                f"{float(cell.last.value):.1f} | {_interval(cell.last)} |"
            )
        references = report.references(env_id)
        if references:
            lines += ["", "Reference: " + "; ".join(f"{s.label(options.reference.name)}" for s in references) + "."]
        lines += ["", f"![learning curves on {env_id}]({images[env_id]})", ""]
    if report.aggregates:
        reference = options.reference
        lines += [
            f"## Across environments (normalised by {reference.name})",
            "",
            "Normalised score = (return − random) / (reference − random): reference is the human score "
            f"{reference.name} lists for the task (human-normalised), else the best score it lists, random a "
            "random policy's score where it lists one (else 0). "
            "Aggregates of final returns; intervals resample seeds within each environment.",
            "",
            "| group | environments | runs | IQM | 95% CI | median | 95% CI | mean | 95% CI | optimality gap | 95% CI |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- | ---: | --- | ---: | --- |",
        ]
        for group, estimates in report.aggregates.items():
            envs = report.aggregate_envs[group]
            runs = sum(len(report.cells[(e, group)].runs) for e in envs)
            cells = " | ".join(f"{float(e.value):.3f} | {_interval(e, 3)}" for e in estimates.values())
            lines.append(f"| {group} | {len(envs)} | {runs} | {cells} |")
        lines += ["", "![performance profiles](profile.png)", ""]
    if report.improvements:
        lines += [
            "## Probability of improvement",
            "",
            "P(X > Y): the chance that a run of X ends above a run of Y on the same environment (ties count half), "
            "averaged over the environments both ran on.",
            "",
            "| X | Y | environments | P(X > Y) | 95% CI |",
            "| --- | --- | ---: | ---: | --- |",
        ]
        for item in report.improvements:
            lines.append(
                f"| {item.x} | {item.y} | {item.envs} | {float(item.probability.value):.2f} | {_interval(item.probability, 2)} |"
            )
        lines.append("")
    lines += studies or []
    cited = {s for env_id in report.envs for s in report.references(env_id)}
    if report.aggregates:
        reference = options.reference
        cited |= {s for env_id in report.envs for s in (reference.normaliser(env_id), reference.random(env_id)) if s}
    if cited:
        lines += ["## Reference sources", ""]
        for source in sorted({s.source for s in cited}):
            lines.append(f"- {source}")
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(lines)


def _without_images(text: str) -> str:
    return re.sub(r"\n!\[[^\]]*\]\([^)]*\)\n\n?", "\n", text).rstrip()  # the figure and its blank line


def to_html(text: str, images: dict[str, bytes]) -> str:
    """report.md as one self-contained HTML page: the figures (`images`: PNG bytes by file
    name) inlined as data URIs."""
    body, table_rows, items = [], [], []

    def inline(value: str) -> str:
        return html.escape(value)

    def flush() -> None:
        if table_rows:
            head, *rest = table_rows
            cells = lambda row, tag: "".join(f"<{tag}>{inline(c.strip())}</{tag}>" for c in row.strip("|").split("|"))
            body.append(
                "<table><thead><tr>"
                + cells(head, "th")
                + "</tr></thead><tbody>"
                + "".join("<tr>" + cells(r, "td") + "</tr>" for r in rest[1:])
                + "</tbody></table>"
            )
            table_rows.clear()
        if items:
            body.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table_rows.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if heading := re.match(r"(#+) (.*)", line):
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif image := re.match(r"!\[(.*)\]\((.*)\)", line):
            data = base64.b64encode(images[image.group(2)]).decode("ascii")
            body.append(f'<img alt="{inline(image.group(1))}" src="data:image/png;base64,{data}">')
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>rlrun report</title><style>{style}</style></head>'
        f"<body>\n{chr(10).join(body)}\n</body></html>\n"
    )


def sweep_report(sweep_dir: Path) -> None:
    """The report printed after a multirun (rlrun/commands/sweep.py), written to <sweep>/report/. Never
    raises: a report problem is one line, and the sweep's own outcome stands."""
    try:
        check_extra()
        _, options = parse([])
        text = make_report([str(sweep_dir)], options, sweep_dir / "report")
    except (ConfigError, RunError) as error:  # RunError: a write that failed
        print(f"rlrun: no report: {error}", file=sys.stderr)
        return
    except Exception as error:  # noqa: BLE001 - a report must not fail a sweep that trained fine
        print(f"rlrun: no report: {type(error).__name__}: {error}", file=sys.stderr)
        return
    print(_without_images(text))
    print(f"report: {sweep_dir / 'report' / 'report.md'}")
