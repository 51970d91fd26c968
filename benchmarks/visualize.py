"""Plot latency vs sequence length (head target, batch 1): Mamba backends vs the Transformer baselines.

    python -m benchmarks.visualize benchmarks/results/full-cpu.json   # writes full-cpu.png beside it
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

STYLE = {  # Mamba solid, Transformers dashed, so the two families read apart without a legend lookup
    "reference": dict(color="#7f7f7f", linestyle="-", marker="o", label="MUSE, PyTorch reference (loop scan)"),
    "cpu-chunked": dict(color="#1f77b4", linestyle="-", marker="o", label="MUSE, blocked CPU scan"),
    "triton": dict(color="#2ca02c", linestyle="-", marker="o", label="MUSE, Triton"),
    "cpp": dict(color="#17becf", linestyle="-", marker="o", label="MUSE, C++ scan (PyTorch op)"),
    "ort": dict(color="#9467bd", linestyle="-", marker="o", label="MUSE, ONNX Runtime + C++ op library"),
    "transformer-depth": dict(color="#d62728", linestyle="--", marker="s", label="Transformer, 4 blocks (depth-matched)"),
    "transformer-param": dict(color="#ff7f0e", linestyle="--", marker="s", label="Transformer, 2 blocks (param-matched)"),
}


TITLES = {"head": "sequence learner alone (L x 512 in and out)",
          "learner": "CLIP tokens -> video embedding (pyramid + learner + pooling)"}


def plan_panels(result: dict, batch: int = 1) -> list[tuple[str, str]]:
    """[(target, "lines" | "bars")]: lines over length where two or more lengths were measured, bars where
    one was."""
    lengths = {t: {r["seq_len"] for r in result["records"] if r.get("status") == "ok"
                   and r["target"] == t and r["batch"] == batch} for t in TITLES}
    return [(t, "lines" if len(n) > 1 else "bars") for t, n in lengths.items() if n] or [("head", "lines")]


def plot_latency(result: dict, out: Path, batch: int = 1) -> Path:
    """One panel per target that was measured: latency vs length where two or more lengths were swept,
    bars per backend where one length was (so a route measured only there, such as ONNX Runtime in the
    quick run, still shows)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = plan_panels(result, batch)
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 5.2), dpi=110, squeeze=False)
    for ax, (target, kind) in zip(axes[0], panels):
        (_panel if kind == "lines" else _bars)(ax, result, target, batch)
    m = result["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores"
    fig.suptitle(f"Latency vs sequence length, batch {batch}: Mamba (solid) vs Transformer (dashed)\n"
                 f"{where}, {m['date'][:10]}, commit {m['git_commit'][:8]}", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def _panel(ax, result: dict, target: str, batch: int) -> None:
    rows = [r for r in result["records"]
            if r.get("status") == "ok" and r["target"] == target and r["batch"] == batch]
    for backend, style in STYLE.items():
        pts = sorted((r["seq_len"], r["median_s"] * 1e3, r["q1_s"] * 1e3, r["q3_s"] * 1e3, r["model"])
                     for r in rows if r["backend"] == backend)
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, capsize=3, linewidth=1.6, markersize=5, **style)
    for length, name in ((3060, "ViT-B/32, 12 frames"), (12360, "ViT-B/16, 12 frames")):
        if any(r["seq_len"] == length for r in rows):
            ax.axvline(length, color="#999999", linewidth=0.9, linestyle=":", zorder=0,
                       label=f"L = {length:,}: {name}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L (tokens)")
    ax.set_ylabel("latency per call, ms (median, bars = IQR)")
    ax.set_title(TITLES.get(target, target), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def _bars(ax, result: dict, target: str, batch: int) -> None:
    rows = {r["backend"]: r for r in result["records"]
            if r.get("status") == "ok" and r["target"] == target and r["batch"] == batch}
    names = [b for b in STYLE if b in rows]
    ys = [rows[b]["median_s"] * 1e3 for b in names]
    err = [[rows[b]["median_s"] * 1e3 - rows[b]["q1_s"] * 1e3 for b in names],
           [rows[b]["q3_s"] * 1e3 - rows[b]["median_s"] * 1e3 for b in names]]
    ax.barh(range(len(names)), ys, xerr=err, capsize=3, color=[STYLE[b]["color"] for b in names],
)
    for i, (b, y) in enumerate(zip(names, ys)):
        ax.text(y, i, f"  {y:,.0f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), [STYLE[b]["label"] for b in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(ys, default=1) * 1.18)  # linear from 0, so bar lengths compare as ratios
    ax.set_xlabel("latency per call, ms (median, bars = IQR)")
    length = next(iter(rows.values()))["seq_len"] if rows else 0
    ax.set_title(f"{TITLES.get(target, target)}, L = {length:,}", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, help="a JSON file written by benchmarks.run")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    if not args.results.is_file():
        raise SystemExit(f"no such results file: {args.results}")
    result = json.loads(args.results.read_text())
    print(plot_latency(result, args.out or args.results.with_suffix(".png"), batch=args.batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
