#!/usr/bin/env python3
"""Error against size for every scheme of `wquant bench --model FILE --json`.

    wquant bench --model model.safetensors --json > sweep.json
    python3 bench/pareto_plot.py sweep.json sweep.png

One point per scheme: bits per weight (codes, scales and zeros) across, relative RMSE over
all weight matrices up (log scale), one marker per family (symmetric, asymmetric, HQQ, the
GGUF block types). The Pareto front that wquant marked (no scheme both smaller and closer)
is joined by a line and labelled: the settings worth choosing between. Needs Debian's
python3-matplotlib (scripts/setup.sh installs it).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

STYLE = {  # family: (label, marker, colour)
    "sym": ("symmetric", "o", "#1f77b4"),
    "asym": ("asymmetric", "s", "#2ca02c"),
    "hqq": ("HQQ", "^", "#d62728"),
    "gguf": ("GGUF blocks", "D", "#9467bd"),
    "gguf-hqq": ("GGUF Q4_1/Q5_1 + HQQ", "v", "#8c564b"),
}


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: pareto_plot.py SWEEP.json OUT.png")
    with open(argv[1]) as f:
        doc = json.load(f)
    rows = [r for r in doc["schemes"] if r["rel_rmse"] is not None and r["rel_rmse"] > 0]
    if not rows:
        sys.exit(argv[1] + ": no scheme with a finite, non-zero error to plot")
    fig, ax = plt.subplots(figsize=(10, 6.5), dpi=120)
    for family, (label, marker, colour) in STYLE.items():
        pts = [r for r in rows if r["family"] == family]
        if pts:
            ax.scatter([r["bits_per_weight"] for r in pts], [r["rel_rmse"] for r in pts], marker=marker,
                       color=colour, alpha=0.55, s=28, label=label)
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: (r["bits_per_weight"], r["rel_rmse"]))
    ax.step([r["bits_per_weight"] for r in front], [r["rel_rmse"] for r in front], where="post", color="black",
            linewidth=1.2, label="Pareto front")
    ax.scatter([r["bits_per_weight"] for r in front], [r["rel_rmse"] for r in front], facecolors="none",
               edgecolors="black", s=70, linewidths=1.2)
    seen = set()
    for r in front:  # one label per point (schemes that coincide share it)
        key = (round(r["bits_per_weight"], 3), round(r["rel_rmse"], 6))
        if key in seen:
            continue
        seen.add(key)
        ax.annotate(r["scheme"], (r["bits_per_weight"], r["rel_rmse"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (codes + scales + zeros)")
    ax.set_ylabel("relative RMSE over all weight matrices (log)")
    ax.set_title("%s: %d weight tensors, %.2f M weights" % (os.path.basename(doc["model"]), doc["tensors"],
                                                           doc["weights"] / 1e6))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[2])


if __name__ == "__main__":
    main(sys.argv)
