"""Latency and throughput of every artifact, side by side, on the same inputs.

For each target and batch size: warm-up runs, then timed runs until a time or count budget;
p50/p90/p99 latency, throughput, and the process's peak resident memory while that target
ran (Linux: VmHWM, reset before each target). Thread counts are pinned for torch and
onnxruntime alike and reported. Absolute times are noisy on shared machines, so every row
also carries its speed-up over a baseline (default: PyTorch eager fp32) measured in the same
run.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exporter.errors import BackendUnavailable, BadInputError, CnnexportError
from exporter.runners.base import Runner


def artifact_globs() -> tuple[str, ...]:
    """What a folder given to bench is searched for: every Format's suffixes and globs (exporter.kinds)."""
    from exporter.kinds import formats

    return tuple(dict.fromkeys(p for f in formats() for p in f.patterns()))


RUNTIMES = ("onnxruntime", "openvino")  # what ONNX targets can be timed on
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".safetensors", ".bin", ".ckpt", ".pt2"}


@dataclass
class Target:
    label: str
    kind: str
    path: Path
    bytes: int | None = None
    runtime: str | None = None  # an ONNX model timed on OpenVINO instead of onnxruntime


@dataclass
class BenchRow:
    target: str
    kind: str
    batch: int
    status: str = "ok"
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    images_per_s: float | None = None
    runs: int = 0
    peak_rss_mb: float | None = None
    size_bytes: int | None = None
    speedup: float | None = None


@dataclass
class BenchSettings:
    batches: tuple[int, ...] = (1, 8)
    threads: int | None = None
    device: str = "cpu"
    warmup: int = 3
    min_runs: int = 5
    max_runs: int = 200
    seconds: float = 2.0
    seed: int = 0
    baseline: str | None = None  # a target label; default: PyTorch eager, else the first target
    runtimes: tuple[str, ...] = ("onnxruntime",)  # "openvino" also times every ONNX target on OpenVINO
    extra: dict = field(default_factory=dict)


def _artifact_bytes(path: Path) -> int:
    """Bytes on disk, with the weights an artifact keeps beside it (an IR's .bin, an ONNX's .data)."""
    from exporter.fsutil import size_of

    companions = [path.with_suffix(".bin")] if path.suffix == ".xml" else [Path(str(path) + ".data")]
    return size_of(path) + sum(size_of(c) for c in companions if c.is_file())


def discover(paths: list[Path]) -> list[Target]:
    """Checkpoints become the PyTorch eager baseline; folders are searched for artifacts."""
    from exporter.fsutil import size_of
    from exporter.kinds import formats
    from exporter.runners import detect_kind

    targets: list[Target] = []
    for path in map(Path, paths):
        if not path.exists():
            raise BadInputError(f"{path} does not exist")
        if path.is_dir() and not any(f.claims(path) for f in formats()):  # a folder that is no artifact (.mlpackage)
            globs = artifact_globs()
            found = sorted({p for pattern in globs for p in path.glob(pattern) if ".rejected." not in p.name})
            if not found:
                raise BadInputError(f"{path} contains no artifacts ({', '.join(globs)})")
            targets += [Target(p.name, detect_kind(p), p, _artifact_bytes(p)) for p in found]
        elif path.suffix.lower() in CHECKPOINT_SUFFIXES and _is_checkpoint(path):
            targets.append(Target(f"pytorch eager ({path.name})", "pytorch", path, size_of(path)))
        else:
            targets.append(Target(path.name, detect_kind(path), path, _artifact_bytes(path)))
    return targets


def with_runtimes(targets: list[Target], runtimes: tuple[str, ...]) -> list[Target]:
    """Each ONNX target once per runtime asked for (onnxruntime first), so one table compares them on the same file."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise BadInputError(f"--runtime {unknown[0]}: choose {' or '.join(RUNTIMES)}")
    out = []
    for t in targets:
        out.append(t)
        for runtime in runtimes if t.kind != "pytorch" else ():
            if runtime in _format(t.kind).also_runs_on:  # an ONNX file on OpenVINO too
                out.append(Target(f"{t.label} [{runtime}]", t.kind, t.path, t.bytes, runtime=runtime))
    return out


def reference(found: list[Target], load, overrides: dict | None = None):
    """(loaded, spec) for a bench/eval run: the checkpoint among the targets, loaded with ``load(path)``;
    else no model and the input spec stored in the first artifact that carries one."""
    from exporter.runners import artifact_spec

    checkpoint = next((t.path for t in found if t.kind == "pytorch"), None)
    if checkpoint is not None:
        loaded = load(checkpoint)
        return loaded, loaded.spec
    for t in found:
        try:  # a runner that cannot open here (TensorRT without a GPU) carries no spec for us
            spec = artifact_spec(t.path)
        except CnnexportError:
            spec = None
        if spec is not None:
            return None, spec.with_overrides(**{k: v for k, v in (overrides or {}).items() if v is not None})
    raise BadInputError("no checkpoint among the targets and no artifact carries an input spec; pass --checkpoint")


def _is_checkpoint(path: Path) -> bool:
    from exporter.runners import detect_kind

    try:
        detect_kind(path)  # a .pt an artifact format claims (a TorchScript archive) is no checkpoint
    except BadInputError:
        return True
    return False


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _format(name: str):
    """The stage table's Format called ``name`` (exporter.kinds)."""
    from exporter.kinds import formats

    found = next((f for f in formats() if f.name == name), None)
    if found is None:
        raise BackendUnavailable(f"cnnexport cannot time {name} artifacts")
    return found


def pin_threads(threads: int | None) -> int:
    """Same thread count for every backend; returns the count in effect."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def open_target(target: Target, settings: BenchSettings, loaded=None) -> Runner:
    """A runner for the target on the chosen device, or BackendUnavailable with the reason."""
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device here")
    if target.kind == "pytorch":
        from exporter.runners.torch import TorchRunner

        return TorchRunner(loaded.module, device=settings.device)
    fmt = _format(target.runtime or target.kind)
    if settings.device not in fmt.bench_devices:
        where = " or ".join(fmt.bench_devices) or "no device"
        raise BackendUnavailable(f"cnnexport times {fmt.name} artifacts on {where}, not {settings.device}")
    return fmt.open(target.path, threads=settings.threads, device=settings.device)


def time_runner(runner: Runner, batch: np.ndarray, settings: BenchSettings) -> BenchRow:
    for _ in range(settings.warmup):
        runner.infer(batch)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < settings.max_runs and (len(times) < settings.min_runs or time.perf_counter() - started < settings.seconds):
        t0 = time.perf_counter()
        runner.infer(batch)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return BenchRow(
        target="",
        kind="",
        batch=len(batch),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        images_per_s=float(len(batch) / (ms.mean() / 1000)),
        runs=len(times),
    )


def bench(targets: list[Target], spec, settings: BenchSettings, loaded=None, progress=lambda _: None) -> dict:
    from exporter.inputs import random_inputs

    threads = pin_threads(settings.threads)
    rows: list[BenchRow] = []
    targets = with_runtimes(targets, settings.runtimes)
    for target in targets:
        for batch_size in settings.batches:
            row = BenchRow(target.label, target.kind, batch_size, size_bytes=target.bytes)
            try:
                _reset_peak_rss()
                with open_target(target, settings, loaded) as runner:
                    progress(f"bench {target.label} batch {batch_size}")
                    timed = time_runner(runner, random_inputs(spec, batch_size, settings.seed).array, settings)
                for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "images_per_s", "runs"):
                    setattr(row, key, getattr(timed, key))
                row.peak_rss_mb = _peak_rss_mb()
            except BackendUnavailable as exc:
                row.status = f"skipped ({exc})"
            rows.append(row)
    baseline = settings.baseline or next((t.label for t in targets if t.kind == "pytorch"), targets[0].label)
    if baseline not in {t.label for t in targets}:
        raise BadInputError(f"--baseline {baseline!r} is not one of the targets: {', '.join(t.label for t in targets)}")
    base = {r.batch: r.images_per_s for r in rows if r.target == baseline and r.images_per_s}
    for r in rows:
        if r.images_per_s and base.get(r.batch):
            r.speedup = r.images_per_s / base[r.batch]
    return {
        "settings": {
            "batches": list(settings.batches),
            "threads": threads,
            "device": settings.device,
            "runtimes": list(settings.runtimes),
            "warmup": settings.warmup,
            "min_runs": settings.min_runs,
            "seconds": settings.seconds,
            "baseline": baseline,
            "cpu_count": os.cpu_count(),
        },
        "rows": [asdict(r) for r in rows],
    }


def render(result: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    s = result["settings"]
    table = Table(
        title=f"cnnexport bench ({s['device']}, {s['threads']} threads; speed-up vs {escape(s['baseline'])})",
        title_justify="left",
    )
    for col in ("target", "kind", "batch", "p50 ms", "p90 ms", "p99 ms", "images/s", "speed-up", "peak RSS", "size"):
        table.add_column(col, justify="left" if col in ("target", "kind") else "right")
    for r in result["rows"]:
        if r["status"] != "ok":
            table.add_row(
                escape(r["target"]), r["kind"], str(r["batch"]), f"[yellow]{escape(r['status'])}[/yellow]", "", "", "", "", "", ""
            )
            continue
        table.add_row(
            escape(r["target"]),
            r["kind"],
            str(r["batch"]),
            f"{r['p50_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['images_per_s']:.1f}",
            "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
            "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f} MB",
            "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 1e6:.1f} MB",
        )
    console.print(table)


def plot(result: dict, path: Path) -> Path:
    """Two panels: p50 latency and throughput per target, one bar group per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from exporter.fsutil import save_figure

    rows = [r for r in result["rows"] if r["status"] == "ok"]
    if not rows:
        raise BadInputError("nothing was measured, so there is nothing to plot")
    targets = list(dict.fromkeys(r["target"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    width = 0.8 / len(batches)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(targets) + 4), 4.5))
    for i, batch in enumerate(batches):
        by_target = {r["target"]: r for r in rows if r["batch"] == batch}
        xs = [j + i * width for j in range(len(targets))]
        axes[0].bar(xs, [by_target.get(t, {}).get("p50_ms") or 0 for t in targets], width, label=f"batch {batch}")
        axes[1].bar(xs, [by_target.get(t, {}).get("images_per_s") or 0 for t in targets], width, label=f"batch {batch}")
    for ax, title in zip(axes, ("p50 latency (ms, lower is better)", "throughput (images/s, higher is better)")):
        ax.set_title(title)
        ax.set_xticks([j + width * (len(batches) - 1) / 2 for j in range(len(targets))])
        ax.set_xticklabels(targets, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    s = result["settings"]
    fig.suptitle(f"cnnexport bench: {s['device']}, {s['threads']} threads")
    fig.tight_layout()
    return save_figure(fig, path)
