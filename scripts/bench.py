"""metarun's benchmark: meta-gradient throughput and peak memory per algorithm, JSON lines out.

Each variant runs in a fresh subprocess (so peak memory is its own), builds its parts from
the project's real configs, warms up, then times full meta-batches (sample -> TaskGrads ->
weights -> combined gradient). Ratios are against a baseline variant measured in the same
run, so numbers from different machines are never mixed.

    python scripts/bench.py                                    # the default variants, sine
    python scripts/bench.py --variants maml:5,imaml:5,imaml:20,imaml:100 --baseline maml:5
    python scripts/bench.py --variants maml:5,convex_maml:5 -- model.hidden=[256,256]

Output: one JSON object per variant (tasks_per_s, s_per_iter, peak_mb, extra_mb, and the
ratios to the baseline), then the same as a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

DEFAULT = "maml:5,fomaml:5,reptile:5,imaml:5,imaml:20,imaml:100,maml:20,maml:100,convex_maml:5,convex_imaml:5,cavia:5"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(variant: str, meta_batch: int, repeats: int, warmup: int, overrides: list[str]) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from metarun.algorithms import task_grads
    from metarun.cli import config_dir
    from metarun.config import register
    from metarun.functional import detached, weighted_sum
    from metarun.train import agreement_vectors, build
    from metarun.weighting import weights

    algo, steps = variant.split(":")
    register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"algo={algo}", f"inner.steps={steps}",
                                           f"train.meta_batch={meta_batch}", *overrides])
    device, source, model, algorithm, objective = build(cfg)
    vectors = agreement_vectors(cfg, algorithm)
    generator = torch.Generator().manual_seed(0)

    def iteration() -> None:
        episode = source.sample("train", meta_batch, cfg.ways, cfg.train.shots, cfg.train.queries,
                                generator).to(device)
        grads = task_grads(algorithm, detached(model), objective, episode, cfg.exec.mode, cfg.exec.chunk)
        combined = weighted_sum(weights(cfg.weighting.name, getattr(grads, vectors)), grads.meta_grads)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return combined

    before = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        iteration()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        extra = peak
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        extra = peak - before
    median = statistics.median(times)
    return {"variant": variant, "algo": algo, "inner_steps": int(steps), "meta_batch": meta_batch,
            "data": cfg.data.name, "exec_mode": cfg.exec.mode, "device": str(device),
            "tasks_per_s": round(meta_batch / median, 2), "s_per_iter": round(median, 5),
            "peak_mb": round(peak, 1), "extra_mb": round(extra, 1), "repeats": repeats,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=DEFAULT, help="comma-separated algo:inner_steps")
    parser.add_argument("--baseline", default="maml:5", help="the variant the ratios are taken against")
    parser.add_argument("--meta-batch", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant (after --)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.meta_batch, args.repeats, args.warmup, args.overrides)))
        return

    variants = args.variants.split(",")
    if args.baseline not in variants:
        variants.insert(0, args.baseline)
    rows = []
    for variant in variants:
        cmd = [sys.executable, __file__, "--child", variant, "--meta-batch", str(args.meta_batch),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--", *args.overrides]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(json.dumps({"variant": variant, "error": out.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["variant"] == args.baseline), None)
    for r in rows:
        if base:
            r["baseline"] = args.baseline
            r["speed_vs_baseline"] = round(r["tasks_per_s"] / base["tasks_per_s"], 3)
            r["extra_mb_vs_baseline"] = round(r["extra_mb"] / base["extra_mb"], 3) if base["extra_mb"] > 0 else None
        print(json.dumps(r), flush=True)
    print(f"{'variant':<16}{'tasks/s':>10}{'s/iter':>10}{'peak MB':>10}{'extra MB':>10}{'speed x':>9}",
          file=sys.stderr)
    for r in rows:
        print(f"{r['variant']:<16}{r['tasks_per_s']:>10}{r['s_per_iter']:>10}{r['peak_mb']:>10}"
              f"{r['extra_mb']:>10}{r.get('speed_vs_baseline', ''):>9}", file=sys.stderr)


if __name__ == "__main__":
    main()
