"""metarun's benchmark: meta-gradient throughput and peak memory per algorithm, JSON lines out.

Each variant runs in a fresh subprocess (so peak memory is its own), builds its parts from
the project's real configs, warms up, then times full meta-batches (sample -> TaskGrads ->
weights -> combined gradient). Ratios are against rows measured in the same run, so
numbers from different machines are never mixed:
- `speed_vs_baseline`: against a baseline variant (`--baseline`);
- `speed_vs_l2l`, `rss_vs_l2l`: against learn2learn's MAML (its clone/adapt loop, as its
  examples use it) on the same episodes, when learn2learn is installed (`pip install
  learn2learn`; skipped with a message otherwise);
- `time_vs_floor`: against the compute floor, one plain batched forward+backward of the
  same network over as many images as a meta-iteration processes (support x inner steps +
  query, per task), as ordinary supervised training would.

    python scripts/bench.py                                    # Omniglot 5-way 1-shot, Conv4-64 max-pool
    python scripts/bench.py --setting sine                     # the sine MLP
    python scripts/bench.py --variants maml:5,imaml:100 --modes loop,vmap -- exec.chunk=4

Output: one JSON object per variant and mode (tasks_per_s, s_per_iter, sample_fraction,
peak_mb, extra_mb and the ratios), then the same as a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    # The setting: Omniglot-shaped 5-way 1-shot episodes with 15 queries per class,
    # Conv4 with 64 filters, BatchNorm and max-pooling, meta-batch 32.
    "omniglot": {"variants": "maml:1,maml:5,fomaml:5,reptile:5,imaml:5,imaml:20,imaml:100", "meta_batch": 32,
                 "overrides": ["data=omniglot", "model=conv4_pool64", "ways=5", "shots=1", "queries=15",
                               "train.queries=15"]},
    "sine": {"variants": "maml:5,fomaml:5,reptile:5,imaml:5,imaml:20,imaml:100,convex_maml:5,convex_imaml:5,cavia:5",
             "meta_batch": 25, "overrides": ["data=sine"]},
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def compose(variant: str, meta_batch: int, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from metarun.cli import config_dir
    from metarun.config import register

    algo, steps = variant.split(":")
    register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=[f"algo={algo}", f"inner.steps={steps}",
                                                  f"train.meta_batch={meta_batch}", *overrides])


def measure(step, sample, device, repeats: int, warmup: int) -> dict:
    """Median seconds per call of step(sample()), the share spent sampling, and peak memory."""
    import torch

    before = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step(sample())
    times, sampling = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        episode = sample()
        if device.type == "cuda":
            torch.cuda.synchronize()
        sampled = time.perf_counter()
        step(episode)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        sampling.append(sampled - start)
    if device.type == "cuda":
        peak = extra = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        extra = peak - before
    median = statistics.median(times)
    return {"s_per_iter": round(median, 5), "sample_fraction": round(statistics.median(sampling) / median, 4),
            "peak_mb": round(peak, 1), "extra_mb": round(extra, 1)}


def child(kind: str, variant: str, meta_batch: int, repeats: int, warmup: int, overrides: list[str]) -> dict:
    import torch

    from metarun.train import build

    cfg = compose(variant, meta_batch, overrides)
    device, source, model, algorithm, objective = build(cfg)
    generator = torch.Generator().manual_seed(0)

    def sample():
        return source.sample("train", meta_batch, cfg.ways, cfg.train.shots, cfg.train.queries, generator).to(device)

    step = {"metarun": metarun_step, "l2l": l2l_step, "floor": floor_step}[kind](cfg, model, algorithm, objective)
    row = measure(step, sample, device, repeats, warmup)
    algo, steps = variant.split(":")
    return {"variant": variant, "kind": kind, "algo": algo, "inner_steps": int(steps), "meta_batch": meta_batch,
            "data": cfg.data.name, "model": cfg.model._target_.rsplit(".", 1)[-1],
            "exec_mode": cfg.exec.mode if kind == "metarun" else kind, "exec_chunk": cfg.exec.chunk,
            "device": str(device), "tasks_per_s": round(meta_batch / row["s_per_iter"], 2), **row,
            "repeats": repeats, "torch": torch.__version__, "threads": torch.get_num_threads()}


def metarun_step(cfg, model, algorithm, objective):
    from metarun.algorithms import task_grads
    from metarun.functional import detached, weighted_sum
    from metarun.train import agreement_vectors
    from metarun.weighting import weights

    vectors = agreement_vectors(cfg, algorithm)

    def step(episode):
        grads = task_grads(algorithm, detached(model), objective, episode, cfg.exec.mode, cfg.exec.chunk)
        return weighted_sum(weights(cfg.weighting.name, getattr(grads, vectors)), grads.meta_grads)

    return step


def l2l_step(cfg, model, algorithm, objective):
    """learn2learn's MAML as its examples use it: clone, adapt K times, query loss, backward."""
    import learn2learn as l2l

    if algorithm.name not in ("maml", "fomaml"):
        raise SystemExit(f"learn2learn has no {algorithm.name} to compare with")
    maml = l2l.algorithms.MAML(model, lr=cfg.inner.lr, first_order=algorithm.name == "fomaml")
    loss = objective.criterion

    def step(episode):
        maml.zero_grad()
        for sx, sy, qx, qy in zip(*episode, strict=True):
            learner = maml.clone()
            for _ in range(cfg.inner.steps):
                learner.adapt(loss(learner(sx), sy))
            (loss(learner(qx), qy) / len(episode)).backward()

    return step


def floor_step(cfg, model, algorithm, objective):
    """Supervised training's cost for as many images: one batched forward+backward."""
    import torch

    def step(episode):
        sx, sy, qx, qy = episode
        reps = cfg.inner.steps
        x = torch.cat([sx.flatten(0, 1).repeat(reps, *[1] * (sx.dim() - 2)), qx.flatten(0, 1)])
        y = torch.cat([sy.flatten(0, 1).repeat(reps, *[1] * (sy.dim() - 2)), qy.flatten(0, 1)])
        model.zero_grad()
        objective.criterion(model(x), y).backward()

    return step


def run_child(kind: str, variant: str, args: argparse.Namespace, overrides: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{kind}/{variant}", "--meta-batch", str(args.meta_batch),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"variant": variant, "kind": kind, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def data_overrides(setting: str) -> list[str]:
    if setting != "omniglot" or os.environ.get("METARUN_DATA"):
        return []
    return [f"data.root={ROOT.parent / 'shared' / 'data' / 'omniglot'}"]


def ratios(rows: list[dict], baseline: str) -> None:
    measured = [r for r in rows if "error" not in r]
    base = next((r for r in measured if r["kind"] == "metarun" and r["variant"] == baseline), None)
    for r in measured:
        if r["kind"] != "metarun":
            continue
        if base:
            r["speed_vs_baseline"] = round(r["tasks_per_s"] / base["tasks_per_s"], 3)
        l2l = next((x for x in measured if x["kind"] == "l2l" and x["variant"] == r["variant"]), None)
        if l2l:
            r["speed_vs_l2l"] = round(r["tasks_per_s"] / l2l["tasks_per_s"], 3)
            r["rss_vs_l2l"] = round(r["peak_mb"] / l2l["peak_mb"], 3)
        floor = next((x for x in measured if x["kind"] == "floor" and x["inner_steps"] == r["inner_steps"]), None)
        if floor:
            r["time_vs_floor"] = round(r["s_per_iter"] / floor["s_per_iter"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="omniglot")
    parser.add_argument("--variants", help="comma-separated algo:inner_steps (default: the setting's)")
    parser.add_argument("--modes", default="loop,vmap", help="metarun exec.mode values to measure")
    parser.add_argument("--baseline", help="the variant speed_vs_baseline is taken against (default: the first)")
    parser.add_argument("--meta-batch", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-l2l", action="store_true", help="skip the learn2learn rows")
    parser.add_argument("--no-floor", action="store_true", help="skip the compute-floor rows")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant (after --)")
    args = parser.parse_args()
    setting = SETTINGS[args.setting]
    args.meta_batch = args.meta_batch or setting["meta_batch"]
    if args.child:
        kind, variant = args.child.split("/")
        print(json.dumps(child(kind, variant, args.meta_batch, args.repeats, args.warmup, args.overrides)))
        return

    variants = (args.variants or setting["variants"]).split(",")
    base_overrides = [*setting["overrides"], *data_overrides(args.setting), *args.overrides]
    rows = []
    for mode in args.modes.split(","):
        rows += [run_child("metarun", v, args, [*base_overrides, f"exec.mode={mode}"]) for v in variants]
    if not args.no_l2l:
        try:
            import learn2learn  # noqa: F401
        except ImportError:
            print("learn2learn is not installed: no learn2learn rows (pip install learn2learn)", file=sys.stderr)
        else:
            rows += [run_child("l2l", v, args, base_overrides) for v in variants if v.split(":")[0] in
                     ("maml", "fomaml")]
    if not args.no_floor:
        for steps in sorted({v.split(":")[1] for v in variants}, key=int):
            rows.append(run_child("floor", f"fomaml:{steps}", args, base_overrides))
    ratios(rows, args.baseline or variants[0])
    for r in rows:
        print(json.dumps(r), flush=True)
    print(f"{'variant':<14}{'kind/mode':<10}{'tasks/s':>9}{'s/iter':>9}{'sample':>8}{'peak MB':>9}"
          f"{'vs l2l':>8}{'mem/l2l':>8}{'/floor':>8}", file=sys.stderr)
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<14}{r['kind']:<10} error: {r['error']}", file=sys.stderr)
            continue
        print(f"{r['variant']:<14}{r['exec_mode']:<10}{r['tasks_per_s']:>9}{r['s_per_iter']:>9}"
              f"{r['sample_fraction']:>8}{r['peak_mb']:>9}{r.get('speed_vs_l2l', ''):>8}"
              f"{r.get('rss_vs_l2l', ''):>8}{r.get('time_vs_floor', ''):>8}", file=sys.stderr)


if __name__ == "__main__":
    main()
