"""Training curves as a PNG: one panel per dvclive metric of a run directory.

    python -m searchr2.curves results/rl docs/figures/rl.png                  # every curve of the rl run
    python -m searchr2.curves results/rl out.png --metrics reward em kl val_em

dvclive writes each metric as ``<run>/plots/metrics/<name>.tsv`` (a ``step`` column and a value
column); ``dvc plots show`` renders them as HTML. This module draws the same files with matplotlib
for places HTML cannot go (a README, a closing note, a paper draft). Metrics logged at only some
steps (validation EM) are drawn with markers.
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path


def read_curves(run_dir: Path) -> dict[str, tuple[list[float], list[float]]]:
    """``{metric: (steps, values)}`` from ``run_dir/plots/metrics/*.tsv``; names with a slash keep it."""
    root = Path(run_dir) / "plots" / "metrics"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no dvclive curves (has the stage run?)")
    curves = {}
    for path in sorted(root.rglob("*.tsv")):
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if len(rows) < 2:
            continue
        header, body = rows[0], rows[1:]
        try:
            x, y = header.index("step"), len(header) - 1
            steps = [float(r[x]) for r in body]
            values = [float(r[y]) for r in body]
        except (ValueError, IndexError) as e:
            raise ValueError(f"{path}: not a dvclive metric file (step and value columns): {e}") from None
        curves[str(path.relative_to(root).with_suffix(""))] = (steps, values)
    if not curves:
        raise FileNotFoundError(f"{root}: no metric has any point yet")
    return curves


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (stages run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> Path:
    """Lay ``fig`` out, write it as ``out`` (creating the folder; atomically, like every stage output:
    a killed run leaves the old image or none) and free it. The format follows the suffix (png, svg, pdf)."""
    from searchr2.io import atomic_file

    out = Path(out)
    try:
        fig.tight_layout()
        with atomic_file(out, "wb") as f:
            fig.savefig(f, dpi=110, format=out.suffix.lstrip(".") or "png")
    finally:
        pyplot().close(fig)
    return out


def plot_curves(curves: dict, out: Path, title: str = "", metrics: list[str] | None = None) -> Path:
    """Draw ``curves`` (as :func:`read_curves` returns them) in a grid of panels and save a PNG."""
    plt = pyplot()
    names = metrics or list(curves)
    missing = [n for n in names if n not in curves]
    if missing:
        raise KeyError(f"no curve named {', '.join(missing)}; have: {', '.join(curves)}")
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    longest = max(len(curves[n][0]) for n in names)
    for ax, name in zip(axes.flat, names):
        steps, values = curves[name]
        sparse = len(steps) < longest or len(steps) == 1
        ax.plot(steps, values, marker="o" if sparse else None, markersize=4, linewidth=1.4)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m searchr2.curves", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a dvclive directory, e.g. results/rl")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--metrics", nargs="+", help="which curves, in order (default: all)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    path = plot_curves(read_curves(args.run_dir), args.out, args.title or str(args.run_dir), args.metrics)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
