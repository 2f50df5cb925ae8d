"""The Ray engine of a fleet (exporter/fleet.py): each checkpoint as Ray tasks, on a cluster or a local instance.

Ray, an existing engine, not a scheduler of our own: the cluster in ``--ray-address`` /
``RAY_ADDRESS``, else a local instance started for the run. A recipe's stages whose row needs a
GPU (TensorRT) run as a second task that asks Ray for a GPU, so they land only on GPU nodes,
after the checkpoint's CPU share (whose ONNX they read); where the cluster has no GPU at all they
stay in the CPU task (and are skipped there, as on any machine without TensorRT). A task whose
worker dies (killed, out of memory, its node lost) is retried ``RETRIES`` times: the stage that
was interrupted left only a staging folder, swept on the retry.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from pathlib import Path

from exporter.errors import BackendUnavailable, BadInputError
from exporter.fleet_member import Member, build_member
from exporter.targets import first_line

RETRIES = 3  # a worker killed mid-stage (OOM killer, SIGKILL, a lost node): Ray runs the task again
RAY_HINT = "pip install 'cnnexport[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailable(f"--engine ray needs Ray: {RAY_HINT}") from None
    return ray


def run_on_ray(recipe_data, fleet: list[Member], out_dir: Path, reads, stage_names, gpu_stages, address, tracker) -> list[dict]:
    # Ray's driver prints its raylets' notices ("(raylet) A worker died ...") on stdout, which belongs to --json
    with contextlib.redirect_stdout(sys.stderr):
        return _submit(recipe_data, fleet, out_dir, reads, stage_names, gpu_stages, address, tracker)


def _submit(recipe_data, fleet: list[Member], out_dir: Path, reads, stage_names, gpu_stages, address, tracker) -> list[dict]:
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            with _keeping_sigterm():
                ray.init(
                    address=address or os.environ.get("RAY_ADDRESS") or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError: the cluster is not reachable
            raise BadInputError(f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')} ({exc})") from None
    try:
        check_shared(ray, out_dir)
        recipe_data, reads = _absolute(recipe_data), tuple((role, Path(path).resolve()) for role, path in reads)
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        cpu_share = [s for s in stage_names if not (has_gpu and s in gpu_stages)]
        gpu_share = [s for s in stage_names if has_gpu and s in gpu_stages]
        cpu_task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(build_member)
        gpu_task = ray.remote(num_cpus=1, num_gpus=1, max_retries=RETRIES, retry_exceptions=False)(_after)
        pending = {}
        for m in fleet:
            # absolute: a worker's working folder is not the driver's (on another node it is not even there)
            target, checkpoint = str((out_dir / m.folder).resolve()), str(m.checkpoint.resolve())
            ref = cpu_task.remote(recipe_data, checkpoint, target, reads, cpu_share if gpu_share else None)
            if gpu_share:
                ref = gpu_task.remote(ref, recipe_data, checkpoint, target, reads, gpu_share)
            pending[ref] = m
            tracker.started(m.folder)
        rows: dict[str, dict] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            m = pending.pop(ready[0])
            try:
                row = ray.get(ready[0])
                if gpu_share:
                    row = _assemble(recipe_data, m, out_dir, reads, row)
                row["checkpoint"] = str(m.checkpoint)  # as the user named it, not as the worker was given it
            except Exception as exc:  # noqa: BLE001 - a task that failed RETRIES times (a worker killed each time)
                row = {
                    "checkpoint": str(m.checkpoint),
                    "folder": m.folder,
                    "status": "error",
                    "stages": {},
                    "error": f"its task failed {RETRIES + 1} times ({type(exc).__name__}: {first_line(exc)})",
                }
            rows[m.folder] = row
            tracker.finished(row)
        return [rows[m.folder] for m in fleet]
    finally:
        if started_here:
            ray.shutdown()


def _absolute(recipe_data: dict) -> dict:
    """The recipe's file paths made absolute: a worker's working folder is not the driver's."""
    data = json.loads(json.dumps(recipe_data))
    for section, key in (("calibration", "data"), ("evaluation", "data"), ("verify", "images"), ("model", "labels")):
        value = (data.get(section) or {}).get(key)
        if isinstance(value, str) and Path(value).exists():
            data[section][key] = str(Path(value).resolve())
    return data


@contextlib.contextmanager
def _keeping_sigterm():
    """ray.init replaces the SIGTERM handler with sys.exit(15); the CLI's own (clean up as for Ctrl-C, exit 130) stays."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, mine)


def _after(cpu_row: dict, recipe_data, checkpoint, out_dir, reads, stages) -> dict:
    """The GPU share of a checkpoint, once its CPU share is done (its ONNX is what TensorRT reads)."""
    row = build_member(recipe_data, checkpoint, out_dir, reads, stages)
    return {"cpu": cpu_row, "gpu": row, "gpu_node": row.get("node"), "status": row["status"]}


def _assemble(recipe_data, m: Member, out_dir: Path, reads, shares: dict) -> dict:
    """Every stage is stamped by now: the whole recipe once more (all cached) writes the checkpoint's manifest."""
    row = build_member(recipe_data, str(m.checkpoint), str(out_dir / m.folder), reads)
    row["node"] = shares.get("cpu", {}).get("node")
    row["gpu_node"] = shares.get("gpu_node")
    return row


def check_shared(ray, out_dir: Path) -> None:
    """OUT must be one folder every node sees: a file written here is looked for from each node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = out_dir / f".cnnexport-fleet-probe-{uuid.uuid4().hex}"
    probe.write_text("cnnexport")
    try:
        look = ray.remote(num_cpus=0)(_sees)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        seen = ray.get(
            [
                look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe))
                for n in nodes
            ]
        )
        blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, seen) if not ok]
        if blind:
            raise BadInputError(
                f"-o {out_dir} is not visible from the Ray node(s) {', '.join(blind)}: a fleet's output folder must be on a "
                "filesystem every node mounts at the same path"
            )
    finally:
        probe.unlink(missing_ok=True)


def _sees(path: str) -> bool:
    return Path(path).is_file()
