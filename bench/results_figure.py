"""A comparison figure of finished runs: models x datasets, mean test metric with error bars
over seeds (needs matplotlib: pip install matplotlib, or pip install 'slifmr[track]').

    python bench/results_figure.py runs/results --output results.png
    python bench/results_figure.py runs/results --metric ndcg@20 --datasets ml-1m-kg-mm lastfm-kg \
        --variants lightgcn slifmr --output fig.png

Runs are read as bench/results_table.py reads them, from ``ROOT/<dataset>/<variant>/metrics.json``.
Seeds of one variant are either sibling directories ``<variant>-seed<N>`` (or ``_seed<N>``) or
subdirectories ``<variant>/<anything>/metrics.json``; each bar is their mean, the error bar one
standard deviation (none for a single seed), and every seed is drawn as a dot.
"""

import argparse
import json
import math
import os
import re
import sys

_SEED = re.compile(r"[-_]seed\d+$")


def collect(root: str, metric: str = "recall@20", datasets=None, variants=None) -> dict:
    """``{dataset: {variant: [metric of each seed]}}`` of the runs under ``root``."""
    out = {}
    names = datasets or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    for data in names:
        ddir = os.path.join(root, data)
        if not os.path.isdir(ddir):
            continue
        runs = {}
        for entry in sorted(os.listdir(ddir)):
            vdir = os.path.join(ddir, entry)
            if not os.path.isdir(vdir):
                continue
            if os.path.isfile(os.path.join(vdir, "metrics.json")):
                found = [(_SEED.sub("", entry), os.path.join(vdir, "metrics.json"))]
            else:
                found = [
                    (entry, os.path.join(vdir, s, "metrics.json"))
                    for s in sorted(os.listdir(vdir))
                    if os.path.isfile(os.path.join(vdir, s, "metrics.json"))
                ]
            for variant, path in found:
                if variants and variant not in variants:
                    continue
                with open(path) as f:
                    value = json.load(f).get(metric)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    runs.setdefault(variant, []).append(float(value))
        if runs:
            out[data] = runs
    return out


def _mean_std(xs):
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def results_figure(
    values: dict, path: str, metric: str = "recall@20", variants=None, labels=None, title=None
) -> None:
    """Grouped bars of ``values`` (:func:`collect`): one group per dataset, one bar per variant
    (in ``variants`` order, default sorted), into the PNG ``path``."""
    from matplotlib.figure import Figure

    datasets = list(values)
    if not datasets:
        raise ValueError("no runs to draw")
    order = list(variants) if variants else sorted({v for runs in values.values() for v in runs})
    labels = labels or {}
    width = 0.8 / max(len(order), 1)
    fig = Figure(
        figsize=(max(6.5, 1.5 + 0.6 * len(datasets) * max(1, len(order))), 4.8), dpi=110, layout="constrained"
    )
    ax = fig.subplots()
    for j, variant in enumerate(order):
        xs, means, stds = [], [], []
        for i, data in enumerate(datasets):
            seeds = values[data].get(variant)
            if not seeds:
                continue
            m, s = _mean_std(seeds)
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            means.append(m)
            stds.append(s)
            ax.plot(
                [x] * len(seeds),
                seeds,
                linestyle="none",
                marker="o",
                markersize=3,
                color="black",
                alpha=0.6,
                zorder=3,
                label="single seed",
            )
        ax.bar(
            xs,
            means,
            width * 0.9,
            yerr=stds,
            capsize=3,
            color=f"C{j % 10}",
            error_kw={"label": "1 std over seeds"},
            label=labels.get(variant, variant),
            zorder=2,
        )
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title or f"test {metric}, mean over seeds")
    ax.grid(True, axis="y", alpha=0.35, zorder=0)
    ax.set_axisbelow(True)
    handles, names = [], []
    for h, n in zip(*ax.get_legend_handles_labels()):
        if n not in names:  # "single seed" and the error bars once
            handles.append(h)
            names.append(n)
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 4), frameon=False)
    fig.savefig(path, format="png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default="runs/results")
    ap.add_argument("--metric", default="recall@20")
    ap.add_argument("--datasets", nargs="+", default=None)
    ap.add_argument("--variants", nargs="+", default=None, help="bars, in this order")
    ap.add_argument("--output", default="results.png")
    args = ap.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "results_figure: needs matplotlib: pip install matplotlib (or pip install 'slifmr[track]')",
            file=sys.stderr,
        )
        return 2
    try:
        from results_table import LABEL  # the table's names for the variants
    except ImportError:
        LABEL = {}
    values = collect(args.root, args.metric, args.datasets, args.variants)
    if not values:
        print(f"results_figure: no metrics.json with {args.metric} under {args.root}", file=sys.stderr)
        return 1
    results_figure(values, args.output, args.metric, args.variants, LABEL)
    for data, runs in values.items():
        for v, xs in runs.items():
            m, s = _mean_std(xs)
            print(f"{data}  {v}: {args.metric} {m:.4f} +- {s:.4f} ({len(xs)} seed{'s' * (len(xs) > 1)})")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
