"""The demo's result over several phantom seeds: per-seed mean Dice and the pooled paired tests.

Usage (each run made by ``metsynth demo --seed N --out DIR``; README, "What the demo shows")::

    python benchmarks/demo_seeds.py runs/demo /tmp/seed1 /tmp/seed2

Prints a markdown table of held-out mean Dice per run and model; within each run, each model of
Table 3 against Real (mean difference, Holm-adjusted paired Wilcoxon p, the smallest difference the
run could detect at 80% power) and Diffusion against Synthetic; the realism AUCs of each run
(``RUN/realism/realism.json``); then, pooled over every held-out case of all runs, each model
against Real: mean difference, cases better / worse, and the paired Wilcoxon signed-rank p-value
with its Holm adjustment over the models the runs share (the paper's four; six with ``online`` and
``online_ft``), and the head-to-head pairs: Diffusion - Synthetic, Online - Synthetic (on-the-fly
against offline synthesis) and Online+FT - Synthetic+FT.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy.stats import wilcoxon

MODELS = ["real", "synthetic", "synthetic_ft", "harmonized", "harmonized_ft", "online", "online_ft"]
NAMES = {"real": "Real", "synthetic": "Synthetic", "synthetic_ft": "Synthetic+FT", "harmonized": "Diffusion",
         "harmonized_ft": "Diffusion+FT", "online": "Online", "online_ft": "Online+FT"}
# head-to-head pairs beside the comparisons with Real: the DDPM's effect, on-the-fly vs offline synthesis
PAIRS = [("harmonized", "synthetic"), ("online", "synthetic"), ("online_ft", "synthetic_ft")]


def run_dice(run: Path) -> pd.DataFrame:
    """Dice per held-out case (rows) and model (columns) of one run, size-study models included."""
    frames = {}
    for folder in sorted((run / "evaluation").iterdir()):
        metrics = folder / "metrics.csv"
        if metrics.is_file():
            table = pd.read_csv(metrics, dtype={"case_id": str})
            frames[folder.name] = table.set_index("case_id")["dice"]
    return pd.DataFrame(frames)


def holm(p_values: list[float]) -> list[float]:
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="demo run folders")
    args = parser.parse_args()
    per_run = {run: run_dice(run) for run in args.runs}
    extra = sorted({m for d in per_run.values() for m in d.columns if m.startswith("size_")})
    columns = [m for m in MODELS if all(m in d for d in per_run.values())] + extra
    header = [NAMES.get(m, m.replace("size_", "") + " synthetic") for m in columns]
    print("| run | " + " | ".join(header) + " |")
    print("|---|" + "---|" * len(columns))
    for run, dice in per_run.items():
        print(f"| {run} | " + " | ".join(f"{dice[m].mean():.2f}" for m in columns) + " |")
    pooled = pd.concat([d[columns].rename(index=lambda c, r=run: f"{r}:{c}") for run, d in per_run.items()])
    print(f"| {len(pooled)} held-out cases pooled | " + " | ".join(f"{pooled[m].mean():.3f}" for m in columns) + " |")
    print()
    others = [m for m in columns if m in MODELS and m != "real"]  # Table 3's comparisons with Real
    within_run(per_run, others, header, columns)
    realism(args.runs)
    p_values = [float(wilcoxon(pooled[m], pooled["real"]).pvalue) for m in others]
    print("| against Real (pooled) | mean difference | better / worse | Wilcoxon p | Holm p |")
    print("|---|---|---|---|---|")
    for m, p, p_holm in zip(others, p_values, holm(p_values)):
        diff = pooled[m] - pooled["real"]
        print(f"| {header[columns.index(m)]} | {diff.mean():+.3f} | {(diff > 0).sum()} / {(diff < 0).sum()} "
              f"| {p:.3f} | {p_holm:.3f} |")
    print()
    for a, b in PAIRS:
        if {a, b} <= set(pooled):
            d = pooled[a] - pooled[b]
            p = float(wilcoxon(pooled[a], pooled[b]).pvalue) if (d != 0).any() else 1.0
            print(f"{NAMES[a]} - {NAMES[b]} (pooled): {d.mean():+.3f}, better / worse {(d > 0).sum()} / "
                  f"{(d < 0).sum()}, Wilcoxon p {p:.3f}")


def within_run(per_run: dict[Path, pd.DataFrame], others: list[str], header: list[str], columns: list[str]) -> None:
    """Each run's own tests (what its report says): Holm over the four comparisons with Real."""
    from metsynth.evaluation.stats import detectable_difference

    print("| run | cases | " + " | ".join(f"{header[columns.index(m)]} - Real (Holm p)" for m in others)
          + " | detectable (Synthetic+FT) | Diffusion - Synthetic (p) |")
    print("|---|---|" + "---|" * (len(others) + 2))
    for run, dice in per_run.items():
        p_values = [float(wilcoxon(dice[m], dice["real"]).pvalue) for m in others]
        cells = [f"{(dice[m] - dice['real']).mean():+.3f} ({p:.3f})" for m, p in zip(others, holm(p_values))]
        long = dice[["real", *others]].reset_index().melt(id_vars="case_id", var_name="model", value_name="dice")
        det = detectable_difference(long, "dice", "real", ["real", *others])
        det = det.set_index("model")["detectable"]
        extra = "-"
        if {"harmonized", "synthetic"} <= set(dice):
            d = dice["harmonized"] - dice["synthetic"]
            p = float(wilcoxon(dice["harmonized"], dice["synthetic"]).pvalue) if (d != 0).any() else 1.0
            extra = f"{d.mean():+.3f} ({p:.3f})"
        print(f"| {run} | {len(dice)} | " + " | ".join(cells)
              + f" | {det.get('synthetic_ft', float('nan')):.3f} | {extra} |")
    print()


def realism(runs: list[Path]) -> None:
    import json

    rows = []
    for run in runs:
        path = run / "realism" / "realism.json"
        if not path.is_file():
            continue
        rep = json.loads(path.read_text())
        cells = []
        for name in ("synthetic", "harmonized"):
            s = rep["sets"].get(name, {})
            for key in ("features", "cnn"):
                t = s.get(key)
                cells.append(f"{t['auc']:.2f} [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]" if t else "-")
        null = rep["null_real"]
        cells.append(f"{null['features']['auc']:.2f} / {null.get('cnn', {}).get('auc', float('nan')):.2f}")
        sweep = ", ".join(f"t{r['timestep']} {r['features_auc']:.2f}" for r in rep.get("sweep", [])
                          if r.get("features_auc") is not None)
        rows.append(f"| {run} | " + " | ".join(cells) + f" | {sweep} |")
    if rows:
        print("| run | synthetic: features AUC | CNN AUC | harmonized: features AUC | CNN AUC | null real vs real "
              "(features / CNN) | sweep (features AUC) |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print()


if __name__ == "__main__":
    main()
