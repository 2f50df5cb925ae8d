"""The Ray engine of a fleet (exporter/fleet.py): each stage of each checkpoint a Ray task, on a cluster or a local instance.

Ray, an existing engine, not a scheduler of our own: the cluster in ``--ray-address`` /
``RAY_ADDRESS``, else a local instance started for the run. Each stage is a task that runs after
its upstream stage's task (the recipe's graph) and asks for what its row declares: a GPU for
TensorRT, so it lands only on GPU nodes; a CPU for the rest. A checkpoint's last task writes its
manifest from all its stages' outcomes (exporter/fleet_member.py). A task whose worker dies (killed,
out of memory, its node lost) is retried ``RETRIES`` times: the stage that was interrupted left
only a staging folder, swept before the manifest is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from exporter.errors import BackendUnavailable, BadInputError
from exporter.fleet_member import Member, build_stage, finish_member
from exporter.targets import first_line

RETRIES = 3  # a worker killed mid-stage (OOM killer, SIGKILL, a lost node): Ray runs the task again
# a worker process is replaced after this many stages: exporters and runtimes keep caches a process never
# gives back (a zoo sweep's two workers grew to 5-7 GB each after ~300 stages), a fresh one starts at ~1 GB
STAGES_PER_WORKER = 32
RAY_HINT = "pip install 'cnnexport[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailable(f"--engine ray needs Ray: {RAY_HINT}") from None
    return ray


def run_on_ray(recipe_data, fleet: list[Member], out_dir: Path, reads, stages, address, tracker) -> list[dict]:
    # Ray's driver prints its raylets' notices ("(raylet) A worker died ...") on stdout, which belongs to --json
    with contextlib.redirect_stdout(sys.stderr):
        return _submit(recipe_data, fleet, out_dir, reads, stages, address, tracker)


def _submit(recipe_data, fleet: list[Member], out_dir: Path, reads, stages, address, tracker) -> list[dict]:
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
        resources = ray.cluster_resources()
        graph = _Graph(ray, recipe_data, reads, stages, has_gpu=resources.get("GPU", 0) > 0)
        # a window of checkpoints in flight, not the whole zoo: a worker's next stage is likely the same
        # checkpoint's (its loaded reference is reused), and the driver holds a few refs, not thousands
        window = max(2, 2 * int(resources.get("CPU", 1)))
        waiting, finals, rows = list(fleet), dict[Any, Member](), dict[str, dict]()
        while waiting or finals:
            while waiting and len(finals) < window:
                m = waiting.pop(0)
                finals[graph.submit(m, out_dir)] = m
                tracker.started(m.folder)
            ready, _ = ray.wait(list(finals), num_returns=1)
            m = finals.pop(ready[0])
            try:
                row = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a task that failed RETRIES times (a worker killed each time)
                row = {
                    "status": "error",
                    "stages": {},
                    "error": f"a task failed {RETRIES + 1} times ({type(exc).__name__}: {first_line(exc)})",
                }
            row.update(checkpoint=str(m.checkpoint), folder=m.folder)  # as the user named it, not as the worker was given it
            if graph.gpu_names and row.get("nodes"):
                row["gpu_node"] = next((row["nodes"].get(n) for n in graph.gpu_names if n in row["nodes"]), None)
            rows[m.folder] = row
            tracker.finished(row)
        return [rows[m.folder] for m in fleet]
    finally:
        if started_here:
            ray.shutdown()


class _Graph:
    """A checkpoint's recipe as Ray tasks: one per stage, after its upstream stage; one that writes the manifest."""

    def __init__(self, ray, recipe_data, reads, stages, has_gpu: bool):
        self.recipe_data, self.reads, self.stages = recipe_data, reads, stages
        # on a cluster without any GPU a GPU stage runs on a CPU (and is skipped there, as on any machine without TensorRT)
        self.gpu_names = [s.spec.name for s in stages if has_gpu and s.spec.needs_gpu]
        self.stage_task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False, max_calls=STAGES_PER_WORKER)(
            build_stage
        )
        self.finish_task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(finish_member)

    def submit(self, m: Member, out_dir: Path):
        # absolute: a worker's working folder is not the driver's (on another node it is not even there)
        target, checkpoint = str((out_dir / m.folder).resolve()), str(m.checkpoint.resolve())
        refs: dict = {}
        for s in self.stages:
            name = s.spec.name
            task = self.stage_task.options(num_gpus=1) if name in self.gpu_names else self.stage_task
            upstream = [refs[s.upstream]] if s.upstream else []
            refs[name] = task.remote(self.recipe_data, checkpoint, target, self.reads, name, *upstream)
        return self.finish_task.remote(self.recipe_data, checkpoint, target, *refs.values())


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
