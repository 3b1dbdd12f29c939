"""The line task's test of memory over generator seeds and model seeds: AUROC per anomaly kind and subtype for every
mixer, with the 95 % interval of the seed-mean from resampling events, the memory probe, and the short-memory
ceiling, as the closing table of docs/anomaly.md.

    python benchmarks/bench_line_seeds.py --lines 0 1 --seeds 0 1 2 --budget default --work line_seeds

Each generator seed is a new rendering of the built-in line (texture, phases, speed drift, event placement); each
model seed a new initialisation and data order. Runs are the study's own (`LineTask.run_one`: learning rate chosen
per mixer on normal validation loss, the same updates and windows for every mixer).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mambaout.anomaly.study_task import LineTask
from mambaout.anomaly.verdict import ORDER, mixer_summary
from mambaout.measure.machine import machine_description

MIXERS = ("conv", "ssm", "attn_causal", "frame")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[0, 1], help="generator seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    parser.add_argument("--budget", default="default", choices=tuple(LineTask.budgets))
    parser.add_argument("--work", default="line_seeds", help="work folder (lines, encoders, runs, results.json)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work, start = Path(args.work), time.perf_counter()
    results: dict[str, dict] = {}
    for line in args.lines:
        task = LineTask(work_dir=work / f"line{line}", budget=args.budget, line=dict(seed=line))
        budget = LineTask.budgets[args.budget]
        per_mixer = {}
        for mixer in MIXERS:
            runs = [task.run_one(mixer, seed, budget, stream_frames=()) for seed in args.seeds]
            for r in runs:
                r.pop("timeline", None)
            summary = mixer_summary(runs)
            summary["train_seconds"] = float(np.mean([r["train_seconds"] for r in runs]))
            per_mixer[mixer] = summary
        results[f"line{line}"] = dict(mixers=per_mixer, ceilings=task.ceilings, embedding_probe=task.embedding_probe)
        print(f"line seed {line} done after {time.perf_counter() - start:.0f} s", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(table(results, args))
    print(f"\n{machine_description()}; {time.perf_counter() - start:.0f} s")


def table(results: dict, args) -> str:
    head = "| line seed | kind | " + " | ".join(MIXERS) + " | short-memory ceiling |"
    rows = [head, "|" + "---|" * (3 + len(MIXERS))]
    for line, r in results.items():
        short = r["ceilings"].get("short", {})
        for name in ORDER:
            cells = []
            for m in MIXERS:
                s = r["mixers"][m]
                if name not in s["line_auroc"]:
                    cells.append("-")
                    continue
                lo, hi = s["line_interval"][name]
                cells.append(f"{100 * s['line_auroc'][name]:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]")
            ceiling = f"{100 * short[name]:.1f}" if name in short else ""
            rows.append(f"| {line[4:]} | {name} | " + " | ".join(cells) + f" | {ceiling} |")
        for name in ("contextual", "misplaced_marker", "missing_marker", "temporal"):
            cells = [f"{100 * r['mixers'][m]['temporal_auroc'].get(name, float('nan')):.1f}" for m in MIXERS]
            rows.append(f"| {line[4:]} | {name}, temporal branch alone | " + " | ".join(cells) + " | |")
        probes = [r["mixers"][m]["probe"] for m in MIXERS]
        probe = [f"{100 * p['accuracy']:.0f} %" if p else "-" for p in probes]
        rows.append(f"| {line[4:]} | memory probe | " + " | ".join(probe) + " | |")
        rec = [f"{100 * r['mixers'][m]['recovery_alarm_rate']:.1f} %" for m in MIXERS]
        rows.append(f"| {line[4:]} | recovery alarm rate | " + " | ".join(rec) + " | |")
    note = f"Mean of model seeds {args.seeds} per line seed, 95 % interval of that mean over resampled events."
    return "\n".join(rows) + "\n\n" + note


if __name__ == "__main__":
    main()
