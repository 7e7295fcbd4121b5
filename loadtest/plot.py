"""The `--plot` PNG of a `vamp loadtest` result: each group's share over time, and each group's latency
distribution as a percentile plot (x axis 1/(1-p) on a log scale, as HdrHistogram plots it).

Drawn on a `matplotlib.figure.Figure` (Agg canvas, no pyplot global state); matplotlib is imported only when a
plot is asked for, since it is slow to import.
"""
from __future__ import annotations

from .plan import UNLABELLED

DPI = 120
PERCENTILE_TICKS = (50.0, 90.0, 99.0, 99.9, 99.99, 99.999)


def write_plot(result: dict, path: str) -> None:
    """Write the two-panel PNG for `result` (the runner's result dict) to `path`."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 5.5), layout="constrained")
    share_axes, latency_axes = figure.subplots(1, 2)
    names = [group["name"] for group in result["groups"]]
    colours = _group_colours(names + sorted(set(result["timeline"]["groups"]) - set(names)))
    _plot_shares(share_axes, result, colours)
    _plot_latencies(latency_axes, result, colours)
    figure.suptitle(_title(result))
    figure.savefig(path, dpi=DPI, format="png")


def _title(result: dict) -> str:
    load = (f"open model at {result['rate']:,g} req/s" if result["model"] == "open"
            else f"closed model, {result['concurrency']:,} connections")
    return (f"{result['method']} {result['url']} · {load} · "
            f"{result['totals']['requests_per_second']:,.0f} req/s achieved · grouped by {result['by']}")


def _group_colours(names: list[str]) -> dict[str, tuple]:
    """A distinct colour per labelled group (in the order given), greys for the unlabelled ones."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    greys = colormaps["Greys"]
    labelled = [name for name in names if name not in UNLABELLED]
    colours = {name: palette(index % palette.N) for index, name in enumerate(labelled)}
    colours.update({name: greys(0.45 + 0.2 * index) for index, name in enumerate(UNLABELLED)})
    return colours


def _plot_shares(axes, result: dict, colours: dict[str, tuple]) -> None:
    """Per interval: a labelled group's share of the labelled requests, an unlabelled group's share of all
    requests (dotted); the expected share as a dashed line of the group's colour."""
    import numpy
    from matplotlib.ticker import PercentFormatter

    timeline = result["timeline"]
    labels = [label for label, values in timeline["groups"].items() if values]
    axes.set_title("share of requests over time")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("share")
    axes.yaxis.set_major_formatter(PercentFormatter(100))
    axes.set_ylim(-2, 102)      # room for lines at 0% and 100%
    if not labels:
        axes.text(0.5, 0.5, "no requests finished", transform=axes.transAxes, ha="center", va="center")
        return
    intervals = max(len(timeline["groups"][label]) for label in labels)
    counts = numpy.zeros((len(labels), intervals))
    for row, label in enumerate(labels):
        counts[row, :len(timeline["groups"][label])] = timeline["groups"][label]
    unlabelled = numpy.array([label in UNLABELLED for label in labels])
    labelled_total, overall_total = counts[~unlabelled].sum(axis=0), counts.sum(axis=0)
    midpoints = timeline["start_s"] + (numpy.arange(intervals) + 0.5) * timeline["interval_s"]
    expected = {group["name"]: group["expected_share"] for group in result["groups"]}
    for row in sorted(range(len(labels)), key=lambda row: (unlabelled[row], -counts[row].sum(), labels[row])):
        label, total = labels[row], overall_total if unlabelled[row] else labelled_total
        with numpy.errstate(divide="ignore", invalid="ignore"):
            share = numpy.where(total > 0, counts[row] / total * 100, numpy.nan)
        axes.plot(midpoints, share, color=colours[label], label=label, linestyle=":" if unlabelled[row] else "-",
                  linewidth=1.5, marker="o" if intervals < 3 else None)     # a line needs two points
        if expected.get(label) is not None:
            axes.axhline(expected[label] * 100, color=colours[label], linestyle="--", linewidth=1, alpha=0.8)
    axes.set_xlim(0, intervals * timeline["interval_s"])
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")


def _plot_latencies(axes, result: dict, colours: dict[str, tuple]) -> None:
    """Each group's latency percentiles; x = 1/(1-p), so 90%, 99%, 99.9% ... are evenly spaced. A group's
    line stops where its sample runs out (x = count, beyond which every percentile is its maximum)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullLocator

    axes.set_title("latency by percentile")
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms)")
    drawn = 0
    widest = 10.0
    for group in result["groups"]:
        latency = group["latency_ms"]
        points = [(100 / (100 - percentile), value) for percentile, value in latency["distribution"]
                  if percentile < 100 and value > 0 and 100 / (100 - percentile) < latency["count"]]
        if not points:
            continue
        x, y = zip(*points, (latency["count"], latency["max"]))
        widest = max(widest, x[-1])
        axes.plot(x, y, color=colours[group["name"]], label=group["name"], linewidth=1.5,
                  linestyle=":" if group["name"] in UNLABELLED else "-")
        drawn += 1
    if not drawn:
        axes.text(0.5, 0.5, "no latencies recorded", transform=axes.transAxes, ha="center", va="center")
        axes.set_xticks([])
        axes.set_yticks([])
        return
    axes.set_xscale("log")
    axes.set_yscale("log")
    ticks = [(100 / (100 - percentile), f"{percentile:g}%") for percentile in PERCENTILE_TICKS
             if 100 / (100 - percentile) <= widest * 1.5]
    axes.xaxis.set_major_locator(FixedLocator([position for position, _ in ticks]))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels([label for _, label in ticks])
    axes.set_xlim(1, max(widest * 1.2, ticks[-1][0]))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1.5, 0.5)))   # plain numbers, when few decades
    axes.grid(alpha=0.3)
    axes.grid(alpha=0.1, which="minor", axis="y")
    axes.legend(loc="upper left", fontsize="small")
