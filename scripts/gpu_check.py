"""What metarun's GPU path does on one CUDA GPU, measured by one command in under 8 minutes.

    python scripts/gpu_check.py            # on a machine with a CUDA GPU; paste the Markdown it ends with
    python scripts/gpu_check.py --dry-run  # every part on the CPU with tiny sizes (tests/test_gpu_check.py)

Parts, each with its own time limit (they add up to under 8 minutes); a part that runs over is stopped
and reported as over, with what it had measured:

- environment: torch, CUDA, the GPU, learn2learn.
- cuda-tests: `python -m pytest -m cuda tests/test_cuda.py` (3-iteration runs of every algorithm and
  weighting on sine and Omniglot, vmap = loop in float64, resuming).
- bench-omniglot, bench-miniimagenet: scripts/bench.py's rows for maml:1, maml:5, fomaml:5, reptile:5 and
  imaml:5 in vmap and loop modes, and learn2learn's MAML and FOMAML where it is installed, each in a fresh
  process: Omniglot-shaped 5-way 1-shot (15 queries), Conv4-64 max-pool, meta-batch 32; miniImageNet-shaped
  5-way 1-shot (84x84), Conv4-32, meta-batch 4. Random images of those shapes (scripts/random_images.py): the
  speed and memory do not depend on what the images show. Peak memory is torch.cuda.max_memory_allocated.
- precision: the combined meta-gradient of maml:5 (Omniglot-shaped, meta-batch 32) with exec.tf32=true and
  with exec.autocast=bf16, as a relative deviation from IEEE float32 (and float32's own from float64).
- train-500: a 500-iteration Omniglot 5-way 1-shot MAML run (data=omniglot's settings, the real archives
  when they are found, else random images) with its wall time, and 60,000 iterations projected from it.

It prints one JSON line per measurement, then a Markdown summary, and writes both (gpu_check.jsonl,
gpu_check.md) to --out. With --dry-run the parts run in this process (environment in its own, as all of
them do for real, so that path runs too), on the CPU, with tiny sizes and the cuda tests rehearsed on the
CPU: the real run should then fail on nothing but the GPU.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"environment": 15, "cuda-tests": 105, "bench-omniglot": 125, "bench-miniimagenet": 75, "precision": 35,
          "train-500": 100}  # seconds; 455 in all
VARIANTS = "maml:1,maml:5,fomaml:5,reptile:5,imaml:5"
L2L = ("maml", "fomaml")  # learn2learn has these two
Row = dict


def omniglot_root() -> Path:
    data = os.environ.get("METARUN_DATA")
    return Path(data) / "omniglot" if data else ROOT.parent / "shared" / "data" / "omniglot"


def device_name(dry: bool) -> str:
    return "cpu" if dry else "cuda"


# ---- parts: each yields its measurements --------------------------------------------------------------------------

def environment(dry: bool, deadline: float, out: Path) -> Iterator[Row]:
    from metarun.version import __version__

    row = {"python": sys.version.split()[0], "torch": importlib.metadata.version("torch"), "metarun": __version__,
           "learn2learn": _l2l_version()}
    if not dry:  # (a dry run does not import torch here: this part is its one run in a process of its own)
        import torch

        props = torch.cuda.get_device_properties(0)
        row |= {"cuda": torch.version.cuda, "gpu": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1), "gpus": torch.cuda.device_count(),
                "threads": torch.get_num_threads()}
    yield row


def _l2l_version() -> str | None:
    try:  # without importing it (it imports gym: seconds)
        return importlib.metadata.version("learn2learn")
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_tests(dry: bool, deadline: float, out: Path) -> Iterator[Row]:
    tests = ["tests/test_cuda.py"]
    env = dict(os.environ)
    if dry:  # a rehearsal of a few on the CPU: the part's plumbing and the tests' own code
        tests = ["tests/test_cuda.py::test_three_iterations_on_cuda[maml-uniform-sine]",
                 "tests/test_cuda.py::test_vmap_equals_loop_on_cuda_float64[maml]"]
        env["METARUN_CUDA_TESTS_DEVICE"] = "cpu"
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda", *tests]
    start = time.perf_counter()
    try:
        out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired as e:
        yield {"error": "over its time limit", "output_tail": (e.stdout or b"")[-2000:].decode(errors="replace")}
        return
    text = out.stdout + out.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text)}
    yield {"command": " ".join(command[1:]), "returncode": out.returncode, **counts,
           "seconds": round(time.perf_counter() - start, 1),
           "failures": [line for line in text.splitlines() if line.startswith(("FAILED", "ERROR"))],
           "skips": [line for line in text.splitlines() if line.startswith("SKIPPED")]}


def bench_part(setting: str) -> Callable[[bool, float, Path], Iterator[Row]]:
    def part(dry: bool, deadline: float, out: Path) -> Iterator[Row]:
        spec = bench.SETTINGS[setting]
        args = argparse.Namespace(meta_batch=2 if dry else spec["meta_batch"], repeats=1 if dry else 5,
                                  warmup=0 if dry else 2, diagnose=False)
        args.overrides = [*spec["overrides"], *bench.SYNTHETIC, f"device={device_name(dry)}",
                          *(["model.filters=4"] if dry else [])]
        variants = ("maml:1" if dry else VARIANTS).split(",")
        l2l = _l2l_version() is not None
        for variant in variants:  # each variant's rows together, so that a cut part still has its ratios
            jobs = [("metarun", mode) for mode in ("vmap", "loop")]
            jobs += [("l2l", None)] * (l2l and variant.split(":")[0] in L2L)
            for kind, mode in jobs:
                overrides = [*args.overrides, *([f"exec.mode={mode}"] if mode else [])]
                yield {"setting": setting, **_bench_row(kind, variant, args, overrides, dry, deadline)}
    return part


def _bench_row(kind: str, variant: str, args: argparse.Namespace, overrides: list[str], dry: bool,
               deadline: float) -> Row:
    if dry:  # in this process: no fresh process per row, so peak memory means nothing here
        return bench.child(kind, variant, argparse.Namespace(**{**vars(args), "overrides": overrides}))
    return bench.run_child(kind, variant, args, overrides, timeout=max(1.0, deadline - time.time()))


def precision_part(dry: bool, deadline: float, out: Path) -> Iterator[Row]:
    import torch

    from metarun.core import precision
    from metarun.core.functional import detached, flatten
    from metarun.run.build import build
    from metarun.run.execution import task_grads

    meta_batch, variant = (2, "maml:1") if dry else (32, "maml:5")
    overrides = [*bench.SETTINGS["omniglot"]["overrides"], *bench.SYNTHETIC, f"device={device_name(dry)}",
                 "exec.mode=vmap", *(["model.filters=4"] if dry else [])]
    cfg = bench.compose(variant, meta_batch, overrides)
    parts = build(cfg)
    device, source, model, algo, objective = parts.device, parts.source, parts.model, parts.algo, parts.objective
    episode = source.sample("train", meta_batch, cfg.ways, cfg.train.shots, cfg.train.queries,
                            torch.Generator().manual_seed(0))

    def combined(dtype: torch.dtype, tf32: bool, autocast: str) -> tuple[torch.Tensor, float]:
        theta = {k: v.to(dtype) for k, v in detached(model).items()}
        batch = type(episode)(*(t.to(dtype) if t.is_floating_point() else t for t in episode))
        precision.use_tf32(tf32, device)
        times = []
        for _ in range(1 if dry else 4):  # the first is a warm-up
            start = time.perf_counter()
            with precision.autocast(autocast, device):
                grads = task_grads(algo, theta, objective, batch, "vmap")
            g = flatten(grads.meta_grads).mean(0).double()  # uniform weights
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return g, statistics.median(times[1:] or times)

    reference, _ = combined(torch.float64, False, "none")
    ieee, ieee_s = combined(torch.float32, False, "none")
    rows = [("float32 (IEEE)", ieee, ieee_s, reference)]
    for label, tf32, autocast in (("exec.tf32=true", True, "none"), ("exec.autocast=bf16", False, "bf16")):
        g, seconds = combined(torch.float32, tf32, autocast)
        rows.append((label, g, seconds, ieee))
    precision.use_tf32(False, device)
    for label, g, seconds, against in rows:
        yield {"variant": variant, "setting": label, "meta_batch": meta_batch,
               "against": "float64" if against is reference else "float32 (IEEE)",
               "relative_deviation": float((g - against).norm() / against.norm()), "s_per_step": round(seconds, 4)}


def train_part(dry: bool, deadline: float, out: Path) -> Iterator[Row]:
    from hydra import compose, initialize_config_dir

    from metarun.config.checks import check
    from metarun.config.store import config_dir, register
    from metarun.run.train import run

    real = (omniglot_root() / "images_background.zip").is_file() and not dry
    iterations = 3 if dry else 500
    overrides = ["data=omniglot", "algo=maml", f"device={device_name(dry)}", f"train.iterations={iterations}",
                 *([f"data.root={omniglot_root()}"] if real else bench.SYNTHETIC),
                 *(["model.filters=4", "train.meta_batch=2", "eval.tasks=4", "eval.val_tasks=2", "eval.chunk=2",
                    "train.eval_every=2"] if dry else [])]
    register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    check(cfg)
    folder = out / "train-500"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    record, _ = run(cfg, folder)
    per_iteration = record["train_seconds"] / iterations
    yield {"algo": "maml", "data": "omniglot" if real else "omniglot-shaped random images", "iterations": iterations,
           "meta_batch": cfg.train.meta_batch, "inner_steps": cfg.inner.steps, "exec_mode": record["exec_mode"],
           "exec_chunk": record["exec_chunk"], "wall_s": round(time.perf_counter() - start, 1),
           "train_s": record["train_seconds"], "test_s": round(record["seconds"] - record["train_seconds"], 1),
           "s_per_iter": round(per_iteration, 4), "projected_60k_min": round(per_iteration * 60000 / 60, 1),
           "mean": record["mean"], "ci95": record["ci95"], "n_tasks": record["n_tasks"], "folder": str(folder)}


PARTS: dict[str, Callable[[bool, float, Path], Iterator[Row]]] = {
    "environment": environment, "cuda-tests": cuda_tests, "bench-omniglot": bench_part("omniglot"),
    "bench-miniimagenet": bench_part("miniimagenet"), "precision": precision_part, "train-500": train_part,
}


# ---- running the parts ----------------------------------------------------------------------------------------

def run_part(name: str, dry: bool, out: Path) -> tuple[list[Row], str | None]:
    """The part's rows, and why it stopped early (None if it did not)."""
    limit = LIMITS[name]
    deadline = time.time() + limit
    if dry and name != "environment":
        rows, start = [], time.perf_counter()
        try:
            rows = list(PARTS[name](dry, deadline, out))
        except Exception as e:  # noqa: BLE001 - reported, and the next part still runs
            return rows, f"{type(e).__name__}: {e}"
        over = time.perf_counter() - start > limit
        return rows, f"over its time limit ({limit} s)" if over else None
    command = [sys.executable, __file__, "--part", name, "--out", str(out), *(["--dry-run"] * dry)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        return _rows(stdout), f"over its time limit ({limit} s): stopped"
    if proc.returncode != 0:
        return _rows(stdout), f"failed (exit {proc.returncode}): {(stderr.strip().splitlines() or ['?'])[-1]}"
    return _rows(stdout), None


def _rows(stdout: str) -> list[Row]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def part_main(name: str, dry: bool, out: Path) -> None:
    for row in PARTS[name](dry, time.time() + LIMITS[name], out):
        print(json.dumps(row), flush=True)  # as measured: rows before a timeout are kept


def with_ratios(rows: list[Row]) -> list[Row]:
    bench.ratios(rows, rows[0]["variant"] if rows else "")
    return rows


# ---- the summary -------------------------------------------------------------------------------------------------

def summary(results: dict[str, tuple[list[Row], str | None]], dry: bool, seconds: float,
            elapsed: dict[str, float]) -> str:
    lines = [f"# metarun GPU check{' (dry run on the CPU: tiny sizes, no GPU numbers)' if dry else ''}", ""]
    env = (results.get("environment", ([{}], None))[0] or [{}])[0]
    lines += [f"torch {env.get('torch')}, CUDA {env.get('cuda') or '-'}, {env.get('gpu', 'no GPU')} (compute "
              f"capability {env.get('capability', '-')}, {env.get('memory_gib', '-')} GiB), learn2learn "
              f"{env.get('learn2learn') or 'not installed'}, metarun {env.get('metarun')}; {seconds:.0f} s in all ("
              + ", ".join(f"{name} {s:.0f}/{LIMITS[name]}" for name, s in elapsed.items()) + " s).", ""]
    tests = (results.get("cuda-tests", ([{}], None))[0] or [{}])[0]
    lines += ["## CUDA tests", "", f"{tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
              f"{tests.get('skipped', 0)} skipped ({tests.get('seconds', '-')} s)", *tests.get("failures", []),
              *tests.get("skips", []), ""]
    for setting, title in (("omniglot", "Omniglot-shaped 5-way 1-shot, Conv4-64 max-pool, meta-batch 32"),
                           ("miniimagenet", "miniImageNet-shaped 5-way 1-shot (84x84), Conv4-32, meta-batch 4")):
        rows = results.get(f"bench-{setting}", ([], None))[0]
        lines += [f"## Throughput: {title} (random images)", "",
                  "| variant | mode | tasks/s | s/iter | peak MB | vmap chunk | vs learn2learn |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r.get('variant')} | {r.get('kind')} | error: {r['error']} | | | | |")
                continue
            lines.append(f"| {r['variant']} | {r['exec_mode']} | {r['tasks_per_s']} | {r['s_per_iter']} | "
                         f"{r['peak_mb']} | {r.get('exec_chunk') or ''} | {r.get('speed_vs_l2l', '')} |")
        lines.append("")
    lines += ["## Precision: the combined meta-gradient of maml:5 (Omniglot-shaped, meta-batch 32, vmap)", "",
              "| setting | relative deviation | from | s/step |", "| --- | ---: | --- | ---: |"]
    for r in results.get("precision", ([], None))[0]:
        lines.append(f"| {r['setting']} | {r['relative_deviation']:.2e} | {r['against']} | {r['s_per_step']} |")
    lines.append("")
    train = (results.get("train-500", ([{}], None))[0] or [{}])[0]
    if train:
        lines += ["## Training run", "", training_line(train), ""]
    lines += ["## Targets", "", *targets(results), ""]
    stopped = [f"- {name}: {why}" for name, (_, why) in results.items() if why]
    lines += ["## Parts that did not finish", "", *(stopped or ["none"])]
    return "\n".join(lines) + "\n"


def training_line(t: Row) -> str:
    return (f"{t['iterations']} iterations of MAML ({t['data']}, 5-way 1-shot, meta-batch {t['meta_batch']}, "
            f"{t['inner_steps']} inner step(s), exec.mode={t['exec_mode']}{_chunk(t['exec_chunk'])}): "
            f"{t['train_s']} s training ({t['s_per_iter']} s/iteration, validations included), {t['test_s']} s "
            f"testing on {t['n_tasks']} tasks, {t['wall_s']} s wall; accuracy {t['mean']:.3f} ± {t['ci95']:.3f}. "
            f"60,000 iterations projected: {t['projected_60k_min']} min (target: 30).")


def _chunk(tasks: int | None) -> str:
    return f", {tasks} tasks per vmap call" if tasks else ""


def targets(results: dict[str, tuple[list[Row], str | None]]) -> list[str]:
    out = []
    rows = results.get("bench-omniglot", ([], None))[0]
    fast = [r for r in rows if r.get("variant") == "maml:1" and "speed_vs_l2l" in r]
    if fast:
        best = max(fast, key=lambda r: r["speed_vs_l2l"])
        ratio = best["speed_vs_l2l"]
        out.append(f"- MAML tasks/s >= 5x learn2learn's (Omniglot 5-way 1-shot, meta-batch 32): {ratio}x "
                   f"({best['exec_mode']}): {'met' if ratio >= 5 else 'not met'}")
    else:
        out.append("- MAML vs learn2learn: not measured (learn2learn not installed, or its row failed)")
    train = (results.get("train-500", ([{}], None))[0] or [{}])[0]
    if train:
        minutes = train["projected_60k_min"]
        out.append(f"- 60,000 MAML iterations <= 30 min: {minutes} min projected: "
                   f"{'met' if minutes <= 30 else 'not met'}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU with tiny sizes")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.jsonl and gpu_check.md "
                                                 "(default: outputs/gpu_check/DATE_TIME)")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        part_main(args.part, args.dry_run, args.out)
        return 0
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: error: this machine has no usable CUDA GPU (torch sees none). Run it on one, or "
                  "rehearse it on the CPU with --dry-run.", file=sys.stderr)
            return 2
    out = args.out or ROOT / "outputs" / "gpu_check" / time.strftime("%Y-%m-%d_%H-%M-%S")
    if (out / "gpu_check.jsonl").exists():
        print(f"gpu_check: error: {out} holds an earlier check (gpu_check.jsonl); its training run would be taken as "
              "finished. Choose a new folder with --out, or leave --out out for a dated one.", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    start, results, elapsed = time.perf_counter(), {}, {}
    with open(out / "gpu_check.jsonl", "w") as jsonl:
        for name in PARTS:
            began = time.perf_counter()
            rows, why = run_part(name, args.dry_run, out)
            elapsed[name] = time.perf_counter() - began
            if name.startswith("bench-"):
                rows = with_ratios(rows)
            results[name] = (rows, why)
            for row in [*rows, *([{"error": why}] if why else [])]:
                line = json.dumps({"part": name, **row})
                print(line, flush=True)
                jsonl.write(line + "\n")
    text = summary(results, args.dry_run, time.perf_counter() - start, elapsed)
    (out / "gpu_check.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
