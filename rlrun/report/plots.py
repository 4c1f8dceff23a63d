"""The report's figures, drawn on matplotlib Figure objects (no pyplot state, no display)."""

from __future__ import annotations

from matplotlib.figure import Figure

from rlrun.report.analysis import Report

REFERENCE_GID = "reference"  # the gid of reference lines, to tell them from the groups' curves


def curves_figure(report: Report, env_id: str) -> Figure:
    """Evaluation return against environment steps for every group on `env_id`: the IQM over
    seeds with its 95% bootstrap band; reference scores as dashed horizontal lines."""
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    colours = {}
    for cell in report.env_cells(env_id):
        curve = cell.curve
        (line,) = axes.plot(
            curve.steps,
            curve.iqm.value,
            marker="." if len(curve.steps) < 30 else None,
            label=f"{cell.group} ({len(cell.runs)} seeds)",
        )
        axes.fill_between(curve.steps, curve.iqm.low, curve.iqm.high, color=line.get_color(), alpha=0.2, linewidth=0)
        colours.setdefault(str(cell.algo), []).append(line.get_color())
    name = report.options.reference.name if report.options.reference else ""
    for score in report.references(env_id):
        same_algo = colours.get(score.algo, [])
        colour = same_algo[0] if len(same_algo) == 1 else "grey"
        axes.axhline(score.score, linestyle="--", linewidth=1, color=colour, label=score.label(name), gid=REFERENCE_GID)
    axes.set_title(env_id)
    axes.set_xlabel("environment steps")
    axes.set_ylabel("evaluation return (IQM over seeds, 95% CI)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def profile_figure(report: Report) -> Figure:
    """Performance profiles: the fraction of runs (all environments) whose normalised final
    score exceeds τ, with 95% bootstrap bands."""
    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.add_subplot()
    taus = report.profile_thresholds
    for group, profile in report.profiles.items():
        # A step function: the fraction above τ holds from one threshold to the next.
        (line,) = axes.plot(taus, profile.value, label=group, drawstyle="steps-post")
        axes.fill_between(taus, profile.low, profile.high, color=line.get_color(), alpha=0.2, linewidth=0, step="post")
    axes.set_title(f"performance profile (normalised by {report.options.reference.name})")
    axes.set_xlabel("normalised score τ")
    axes.set_ylabel("fraction of runs with score > τ")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure
