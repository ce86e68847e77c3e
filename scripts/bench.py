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
    python scripts/bench.py --setting miniimagenet --synthetic # 84x84 random images, Conv4-32, meta-batch 4
    python scripts/bench.py --variants maml:5,imaml:100 --modes loop,vmap -- exec.chunk=4
    python scripts/bench.py --variants maml:5,maml_pp:5,maml_pp:5:algo.first_order_epochs=0 --no-l2l
    python scripts/bench.py --variants maml:1,maml:5,fomaml:5 --modes loop,loop+2r   # + 2 torch.distributed ranks

A mode `MODE+Nr` runs the variant as N gloo ranks under torchrun (one run's meta-batch shared among them,
the product's own torch.distributed path); its memory figures are summed over the ranks.

On a GPU the settings are the run's: `exec.chunk=auto` (the chunk it settles on is in `exec_chunk`),
IEEE float32 unless `-- exec.tf32=true` (for learn2learn's rows too), `-- exec.autocast=bf16` opt-in.

Output: one JSON object per variant and mode (tasks_per_s, s_per_iter, sample_fraction,
peak_mb, extra_mb and the ratios; with --interleaved, each pair's ratio and the median minor page
faults per step of each side), then the same as a table on stderr.
"""

from __future__ import annotations

import argparse
import gc
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
    # MAML's miniImageNet setting: 5-way 1-shot, 15 queries, Conv4 with 32 filters and max-pooling, meta-batch 4.
    "miniimagenet": {"variants": "maml:1,maml:5,fomaml:5,reptile:5,imaml:5", "meta_batch": 4,
                     "overrides": ["data=miniimagenet", "ways=5", "shots=1", "queries=15", "train.queries=15"]},
}
SYNTHETIC = ["data._target_=random_images.SyntheticImages"]  # scripts/random_images.py: random images, the same shapes


def memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident since the last reset), summed over processes(), in MB.

    The sum counts pages the processes share (torch's libraries) once per process: an upper bound.
    """
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(field + ":"))) / 1024


def reset_peak() -> None:
    """Start VmHWM afresh from the current RSS (Linux), so the peak is the timed steps' own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def compose(variant: str, meta_batch: int, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from metarun.config.store import config_dir, register

    algo, steps, *own = variant.split(":")
    register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=[f"algo={algo}", f"inner.steps={steps}",
                                                  f"train.meta_batch={meta_batch}", *overrides, *own])


def measure(step, sample, device, repeats: int, warmup: int) -> dict:
    """Median seconds per call of step(sample()), the share spent sampling, and memory.

    peak_mb is the process's peak during the timed steps (CPU: resident set; CUDA: allocated);
    work_mb is that peak above the memory resting between steps, after warm-up, so one-time
    library initialisation (e.g. torch.func's, about 115 MB) counts in neither kind's work.
    """
    import torch

    for _ in range(warmup):
        step(sample())
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        rest = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak()
        rest = memory_mb("VmRSS")
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
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else memory_mb("VmHWM")
    median = statistics.median(times)
    return {"s_per_iter": round(median, 5), "sample_fraction": round(statistics.median(sampling) / median, 4),
            "peak_mb": round(peak, 1), "work_mb": round(peak - rest, 1)}


def child(kind: str, variant: str, args: argparse.Namespace) -> dict:
    import torch

    from metarun.core import precision
    from metarun.run.build import build
    from metarun.run.heap import keep_freed_memory

    meta_batch = args.meta_batch
    cfg = compose(variant, meta_batch, args.overrides)
    parts = build(cfg)
    keep_freed_memory()  # as `metarun` does for a run's process (its learn2learn rows share the setting)
    device, source = parts.device, parts.source
    precision.use_tf32(cfg.exec.tf32, device)  # as a run sets it, for every kind of row
    generator = torch.Generator().manual_seed(0)

    def sample():
        return source.sample("train", meta_batch, cfg.ways, cfg.train.shots, cfg.train.queries, generator).to(device)

    steps = {"metarun": metarun_step, "l2l": l2l_step, "floor": floor_step, "floor-task": floor_task_step}
    if kind == "interleaved":
        step = metarun_step(cfg, parts, args)
        row = interleaved(step, l2l_step(cfg, parts, args), sample, device, args)
    else:
        step = steps[kind](cfg, parts, args)
        row = measure(step, sample, device, args.repeats, args.warmup)
    if parts.world.size > 1:  # memory summed over the ranks (an upper bound, as for any sum of RSS)
        for key in ("peak_mb", "work_mb"):
            row[key] = round(parts.world.sum(torch.tensor(row[key], dtype=torch.float64)).item(), 1)
        if not parts.world.main:
            return None
    algo, steps, *_ = variant.split(":")
    return {"variant": variant, "kind": kind, "algo": algo, "inner_steps": int(steps), "meta_batch": meta_batch,
            "data": cfg.data.name, "model": cfg.model._target_.rsplit(".", 1)[-1],
            "exec_mode": exec_label(cfg, parts) + ("/interleaved" if kind == "interleaved" else "")
            if kind in ("metarun", "interleaved") else kind,
            "exec_chunk": step.chunking.tasks_per_call(meta_batch) if kind in ("metarun", "interleaved") else None,
            "tf32": bool(cfg.exec.tf32 and device.type == "cuda"), "autocast": cfg.exec.autocast,
            "device": str(device), "tasks_per_s": round(meta_batch / row["s_per_iter"], 2), **row,
            "diagnose": args.diagnose, "repeats": args.repeats, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def interleaved(ours, theirs, sample, device, args: argparse.Namespace) -> dict:
    """metarun's and learn2learn's steps taken in turn on the same episodes, in one process: a machine that
    others are using slows both alike, so their ratio holds where separate runs' ratios do not. No memory."""
    import torch

    faults: dict[object, list[int]] = {ours: [], theirs: []}

    def timed(step, episode) -> float:
        # Minor page faults: pages the allocator gave back and the step touched again (run/heap.py).
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        step(episode)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        faults[step].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return seconds

    for _ in range(args.warmup):
        episode = sample()
        ours(episode), theirs(episode)
    pairs = []
    for i in range(args.repeats):  # which goes first alternates
        episode = sample()
        a, b = (timed(ours, episode), timed(theirs, episode)) if i % 2 == 0 else \
            reversed((timed(theirs, episode), timed(ours, episode)))
        pairs.append((a, b))
    ours_s, theirs_s = (statistics.median(p[j] for p in pairs) for j in (0, 1))
    ratios = [b / a for a, b in pairs]  # each pair ran under the same conditions: the median of their ratios
    return {"s_per_iter": round(ours_s, 5), "l2l_s_per_iter": round(theirs_s, 5),
            "speed_vs_l2l": round(statistics.median(ratios), 3), "pair_ratios": [round(r, 3) for r in ratios],
            "page_faults": round(statistics.median(faults[ours])),
            "l2l_page_faults": round(statistics.median(faults[theirs]))}


def exec_label(cfg, parts) -> str:
    return parts.executor.train_mode + (f"+{parts.world.size}r" if parts.world.size > 1 else "")


def metarun_step(cfg, parts, args):
    """One training step's computation: the training loop's own meta-step (its executor, weighting and
    combination, across the ranks under torchrun), up to its one host sync (the finiteness check); not the
    optimiser step."""
    from metarun.run.train import meta_step

    def step(episode):
        if not meta_step(parts, parts.theta(), episode, args.diagnose, 1).finite:
            raise SystemExit("the combined meta-gradient is not finite")

    step.chunking = parts.executor.train_chunks
    return step


def l2l_step(cfg, parts, args):
    """learn2learn's MAML as its examples use it: clone, adapt K times, query loss, backward."""
    import learn2learn as l2l

    model, algorithm, objective = parts.model, parts.algo, parts.objective
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


def floor_images(cfg, episode):
    """Per task: the support set once per inner step, then the query set, as one batch each."""
    import torch

    sx, sy, qx, qy = episode
    reps = cfg.inner.steps
    x = torch.cat([sx.repeat(1, reps, *[1] * (sx.dim() - 2)), qx], dim=1)
    y = torch.cat([sy.repeat(1, reps, *[1] * (sy.dim() - 2)), qy], dim=1)
    return x, y


def floor_step(cfg, parts, args):
    """The issue's floor: one batched forward+backward over all of a meta-iteration's images."""
    model, objective = parts.model, parts.objective

    def step(episode):
        x, y = floor_images(cfg, episode)
        model.zero_grad()
        objective.criterion(model(x.flatten(0, 1)), y.flatten(0, 1)).backward()

    return step


def floor_task_step(cfg, parts, args):
    """The same images in one forward+backward per task: on CPU smaller batches stay in cache,
    so this floor can be the lower one (reported beside the one-batch floor, never instead)."""
    model, objective = parts.model, parts.objective

    def step(episode):
        x, y = floor_images(cfg, episode)
        model.zero_grad()
        for xi, yi in zip(x, y, strict=True):
            (objective.criterion(model(xi), yi) / len(x)).backward()

    return step


def run_child(kind: str, variant: str, args: argparse.Namespace, overrides: list[str],
              timeout: float | None = None, ranks: int = 1) -> dict:
    launch = [sys.executable] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [*launch, __file__, "--child", f"{kind}/{variant}", "--meta-batch", str(args.meta_batch),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), *(["--diagnose"] * args.diagnose),
           "--", *overrides]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "kind": kind, "error": f"over its time limit ({timeout:.0f} s)"}
    if out.returncode != 0:
        return {"variant": variant, "kind": kind, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_mode(mode: str) -> tuple[list[str], int]:
    """`loop` or `vmap`, optionally with `+Nr` for N torch.distributed ranks (e.g. `loop+2r`): the overrides
    and the number of ranks."""
    name, _, ranks = mode.partition("+")
    if ranks and not (ranks.endswith("r") and ranks[:-1].isdigit()):
        raise SystemExit(f"--modes: {mode!r} is not MODE or MODE+Nr (e.g. loop+2r)")
    return [f"exec.mode={name}"], int(ranks[:-1]) if ranks else 1


def data_overrides(setting: str, synthetic: bool = False) -> list[str]:
    if synthetic and setting != "sine":
        return SYNTHETIC
    if setting != "omniglot" or os.environ.get("METARUN_DATA"):
        return []
    return [f"data.root={ROOT.parent / 'shared' / 'data' / 'omniglot'}"]


def ratios(rows: list[dict], baseline: str) -> None:
    measured = [r for r in rows if "error" not in r]

    def find(kind: str, **match) -> dict | None:
        return next((x for x in measured if x["kind"] == kind and all(x[k] == v for k, v in match.items())), None)

    base = find("metarun", variant=baseline)
    for r in measured:
        if r["kind"] != "metarun":
            continue
        if base:
            r["speed_vs_baseline"] = ratio(r["tasks_per_s"], base["tasks_per_s"])
        l2l = find("l2l", variant=r["variant"])
        if l2l:
            r["speed_vs_l2l"] = ratio(r["tasks_per_s"], l2l["tasks_per_s"])
            r["rss_vs_l2l"] = ratio(r["peak_mb"], l2l["peak_mb"])
            r["work_vs_l2l"] = ratio(r["work_mb"], l2l["work_mb"])
        for kind, key in (("floor", "time_vs_floor"), ("floor-task", "time_vs_floor_task")):
            floor = find(kind, inner_steps=r["inner_steps"])
            if floor:
                r[key] = ratio(r["s_per_iter"], floor["s_per_iter"])


def ratio(a: float, b: float) -> float | None:
    """a / b, or None where b is 0 (a working memory too small for /proc's kB to show)."""
    return round(a / b, 3) if b else None


COLUMNS = (("tasks/s", "tasks_per_s"), ("s/iter", "s_per_iter"), ("sample", "sample_fraction"),
           ("peak MB", "peak_mb"), ("work MB", "work_mb"), ("vs l2l", "speed_vs_l2l"),
           ("rss/l2l", "rss_vs_l2l"), ("work/l2l", "work_vs_l2l"), ("/floor", "time_vs_floor"),
           ("/floor-t", "time_vs_floor_task"))


def print_table(rows: list[dict]) -> None:
    print(f"{'variant':<12}{'kind/mode':<14}" + "".join(f"{h:>9}" for h, _ in COLUMNS), file=sys.stderr)
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<12}{r['kind']:<14} error: {r['error']}", file=sys.stderr)
            continue
        print(f"{r['variant']:<12}{r['exec_mode']:<14}" + "".join(f"{_cell(r.get(k)):>9}" for _, k in COLUMNS),
              file=sys.stderr)


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="omniglot")
    parser.add_argument("--variants", help="comma-separated algo:inner_steps[:key=value...], the key=value "
                        "overrides for that variant only (default: the setting's)")
    parser.add_argument("--modes", default="loop,vmap",
                        help="execution modes: exec.mode values, each optionally +Nr for N torch.distributed ranks "
                             "(e.g. loop+2r)")
    parser.add_argument("--diagnose", action="store_true",
                        help="time logging iterations (with the query losses before/after adaptation)")
    parser.add_argument("--baseline", help="the variant speed_vs_baseline is taken against (default: the first)")
    parser.add_argument("--meta-batch", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-l2l", action="store_true", help="skip the learn2learn rows")
    parser.add_argument("--no-floor", action="store_true", help="skip the compute-floor rows")
    parser.add_argument("--interleaved", action="store_true",
                        help="MAML/FOMAML only: metarun's and learn2learn's steps in turn in one process per "
                             "variant and mode (speed ratios that hold on a busy machine; no memory figures)")
    parser.add_argument("--synthetic", action="store_true",
                        help="random images in the setting's shapes (scripts/random_images.py) instead of the dataset")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant (after --)")
    args = parser.parse_args()
    setting = SETTINGS[args.setting]
    args.meta_batch = args.meta_batch or setting["meta_batch"]
    if args.child:
        kind, variant = args.child.split("/")
        row = child(kind, variant, args)
        if row is not None:  # rank 0's, under torchrun
            print(json.dumps(row), flush=True)
        return

    variants = (args.variants or setting["variants"]).split(",")
    base_overrides = [*setting["overrides"], *data_overrides(args.setting, args.synthetic), *args.overrides]
    rows = []
    if args.interleaved:
        for mode in args.modes.split(","):
            overrides, ranks = parse_mode(mode)
            rows += [run_child("interleaved", v, args, [*base_overrides, *overrides], ranks=ranks) for v in variants
                     if v.split(":")[0] in ("maml", "fomaml")]
        for r in rows:
            print(json.dumps(r), flush=True)
        print_table(rows)
        return
    for mode in args.modes.split(","):
        overrides, ranks = parse_mode(mode)
        rows += [run_child("metarun", v, args, [*base_overrides, *overrides], ranks=ranks) for v in variants]
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
            rows += [run_child(kind, f"fomaml:{steps}", args, base_overrides) for kind in ("floor", "floor-task")]
    ratios(rows, args.baseline or variants[0])
    for r in rows:
        print(json.dumps(r), flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
