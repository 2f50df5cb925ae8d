"""`cnnexport run` over a fleet of checkpoints: one folder each, here (local) or as Ray tasks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.fleet import collect, members
from tests.conftest import run_cli as _run

# what every fleet test builds: ONNX and its simplified sibling, each verified (a few seconds a checkpoint)
RECIPE = "name: fleet-test\nstages:\n  onnx: {enabled: true}\n  simplify: {enabled: true}\n"
GOOD = ["lenet_a", "lenet_b", "lenet_c", "simple_d"]


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory) -> Path:
    """Six checkpoints: four good ones (two architectures) and two broken in different ways."""
    import torch

    from tests.conftest import build_model

    folder = tmp_path_factory.mktemp("fleet")
    for seed, name in enumerate(GOOD[:3]):
        torch.save({"arch": "lenet5", "model_state_dict": build_model("lenet5", 10, seed).state_dict()}, folder / f"{name}.pt")
    torch.save({"arch": "simple_cnn", "model_state_dict": build_model("simple_cnn").state_dict()}, folder / "simple_d.pt")
    (folder / "corrupt.pt").write_bytes(b"PK\x03\x04 truncated in the middle of a copy")
    # the wrong architecture: a LeNet-5's weights under simple_cnn's name
    torch.save({"arch": "simple_cnn", "model_state_dict": build_model("lenet5", 10).state_dict()}, folder / "wrong_arch.pt")
    (folder / "recipe.yaml").write_text(RECIPE)
    return folder


def _checkpoints(folder: Path) -> list[Path]:
    return [folder / f"{n}.pt" for n in (*GOOD[:2], "corrupt", *GOOD[2:], "wrong_arch")]


@pytest.fixture(scope="module")
def local_fleet(fleet_dir, tmp_path_factory) -> dict:
    """The fleet run once on the local engine (JSON), and each good checkpoint run alone."""
    out = tmp_path_factory.mktemp("fleet_out") / "out"
    r = _run("run", "--recipe", fleet_dir / "recipe.yaml", *_checkpoints(fleet_dir), "-o", out, "--engine", "local", "--json")
    alone = tmp_path_factory.mktemp("alone")
    for name in GOOD:
        single = _run("run", "--recipe", fleet_dir / "recipe.yaml", fleet_dir / f"{name}.pt", "-o", alone / name)
        assert single.exit_code == 0, single
    return {"result": r, "out": out, "alone": alone}


def test_one_broken_checkpoint_never_stops_the_others_and_the_exit_code_says_not_all_passed(local_fleet):
    r = local_fleet["result"]
    assert r.exit_code == 2, r  # errors, no verification failure
    manifest = r.json()
    rows = {row["folder"]: row for row in manifest["checkpoints"]}
    assert [row["folder"] for row in manifest["checkpoints"]] == [
        "lenet_a",
        "lenet_b",
        "corrupt",
        "lenet_c",
        "simple_d",
        "wrong_arch",
    ]
    assert manifest["summary"] == {**manifest["summary"], "checkpoints": 6, "passed": 4, "failed": 0, "errors": 2}
    for name in GOOD:
        assert rows[name]["status"] == "pass" and set(rows[name]["stages"]) == {"onnx", "simplify"}, rows[name]
        assert all(
            s["status"] == "pass" and s["cosine"] > 0.9999 and len(s["files"][0]["sha256"]) == 64
            for s in rows[name]["stages"].values()
        )
    assert "truncated or corrupt" in rows["corrupt"]["error"], rows["corrupt"]
    assert "simple_cnn" in rows["wrong_arch"]["error"] and rows["wrong_arch"]["status"] == "error", rows["wrong_arch"]
    assert "2 of 6 checkpoints did not pass" in r.stderr
    out = local_fleet["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*GOOD, ".cnnexport", "fleet.json", "fleet.md"]
    )  # nothing for the broken
    assert json.loads((out / "fleet.json").read_text())["summary"]["passed"] == 4
    table = (out / "fleet.md").read_text()
    assert "| lenet_a.pt | lenet_a | pass | pass | pass |" in table and "| corrupt.pt | corrupt | error (" in table


def test_each_checkpoints_manifest_is_byte_identical_to_running_it_alone(local_fleet):
    for name in GOOD:
        mine = (local_fleet["out"] / name / "manifest.json").read_bytes()
        assert mine == (local_fleet["alone"] / name / "manifest.json").read_bytes(), name


def test_re_running_a_fleet_redoes_only_what_is_missing(cli, local_fleet, fleet_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(local_fleet["out"], out)
    (out / "lenet_b" / "lenet_b.sim.onnx").unlink()  # one artifact lost
    r = cli("run", "--recipe", fleet_dir / "recipe.yaml", *_checkpoints(fleet_dir)[:2], "-o", out, "--engine", "local", "--json")
    assert r.exit_code == 0, r
    rows = {row["folder"]: row for row in r.json()["checkpoints"]}
    assert rows["lenet_a"]["stages"]["onnx"]["cached"] and rows["lenet_a"]["stages"]["simplify"]["cached"]
    assert rows["lenet_b"]["stages"]["onnx"]["cached"] and not rows["lenet_b"]["stages"]["simplify"]["cached"]
    assert (out / "lenet_b" / "manifest.json").read_bytes() == (local_fleet["out"] / "lenet_b" / "manifest.json").read_bytes()


def test_from_a_list_and_a_glob_name_the_same_fleet(cli, fleet_dir, tmp_path):
    listing = tmp_path / "fleet.txt"
    listing.write_text(f"# tonight's variants\n{fleet_dir / 'lenet_a.pt'}\n\n{fleet_dir / 'lenet_b.pt'}  # seed 1\n")
    assert collect([], listing) == [fleet_dir / "lenet_a.pt", fleet_dir / "lenet_b.pt"]
    assert collect([], None, str(fleet_dir / "lenet_*.pt")) == [fleet_dir / f"{n}.pt" for n in GOOD[:3]]
    assert collect([fleet_dir / "lenet_a.pt"], listing) == [fleet_dir / "lenet_a.pt", fleet_dir / "lenet_b.pt"]  # once each
    r = cli(
        "run", "--recipe", fleet_dir / "recipe.yaml", "--glob", str(fleet_dir / "lenet_*.pt"), "-o", tmp_path / "out",
        "--dry-run", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r
    assert [Path(row["folder"]).name for row in r.json()["fleet"]] == GOOD[:3] and not (tmp_path / "out").exists()
    r = cli("run", "--recipe", fleet_dir / "recipe.yaml", "--glob", str(tmp_path / "nothing" / "*.pt"))
    assert r.exit_code == 2 and "matches no file" in r.stderr, r


def test_a_fleet_never_writes_over_its_own_list_of_checkpoints(cli, fleet_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    listing = out / "fleet.md"  # the list kept where the fleet writes its table
    listing.write_text(f"{fleet_dir / 'lenet_a.pt'}\n")
    r = cli("run", "--recipe", fleet_dir / "recipe.yaml", "--from", listing, "-o", out, "--engine", "local")
    assert r.exit_code == 2 and "the --from list" in r.stderr, r
    assert listing.read_text() == f"{fleet_dir / 'lenet_a.pt'}\n" and sorted(p.name for p in out.iterdir()) == ["fleet.md"]


def test_checkpoints_with_one_name_get_their_parent_folders_in_their_folder_name(tmp_path):
    paths = [tmp_path / "runs" / "seed0" / "best.pt", tmp_path / "runs" / "seed1" / "best.pt", tmp_path / "other.pt"]
    assert [m.folder for m in members(paths)] == ["seed0-best", "seed1-best", "other"]


def test_without_ray_the_ray_engine_is_exit_3_with_the_install_line(cli, fleet_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    r = cli("run", "--recipe", fleet_dir / "recipe.yaml", *_checkpoints(fleet_dir)[:2], "-o", tmp_path / "out", "--engine", "ray")
    assert r.exit_code == 3 and "pip install 'cnnexport[ray]'" in r.stderr, r
    from exporter.fleet import choose_engine

    assert choose_engine("auto", 6) == "local"  # auto without Ray: the fleet runs here, one after another


def test_stage_tasks_reuse_the_reference_their_worker_loaded_and_write_what_one_run_writes(
    local_fleet, fleet_dir, tmp_path, monkeypatch
):
    """What each Ray task runs, called here in order: onnx, then simplify with onnx's outcome, then the manifest."""
    from exporter import fleet_member
    from exporter import recipe as recipe_mod
    from exporter.loading import checkpoint as loading

    loads = []
    real = loading.load_checkpoint
    monkeypatch.setattr(loading, "load_checkpoint", lambda path, *a, **k: loads.append(Path(path).name) or real(path, *a, **k))
    monkeypatch.setattr(fleet_member, "_LOADED", {})
    data = recipe_mod.load(fleet_dir / "recipe.yaml").model_dump(mode="json")
    checkpoint, target = str(fleet_dir / "lenet_a.pt"), str(tmp_path / "lenet_a")
    onnx = fleet_member.build_stage(data, checkpoint, target, (), "onnx")
    simplify = fleet_member.build_stage(data, checkpoint, target, (), "simplify", onnx)
    row = fleet_member.finish_member(data, checkpoint, target, onnx, simplify)
    assert loads == ["lenet_a.pt"]  # loaded once by the onnx task, reused by the simplify task in the same worker
    assert row["status"] == "pass" and set(row["nodes"]) == {"onnx", "simplify"}, row
    assert (tmp_path / "lenet_a" / "manifest.json").read_bytes() == (
        local_fleet["alone"] / "lenet_a" / "manifest.json"
    ).read_bytes()
    # a broken checkpoint: its first task says why, the next ones do not try again, and no folder is left
    corrupt, target = str(fleet_dir / "corrupt.pt"), str(tmp_path / "corrupt")
    onnx = fleet_member.build_stage(data, corrupt, target, (), "onnx")
    simplify = fleet_member.build_stage(data, corrupt, target, (), "simplify", onnx)
    row = fleet_member.finish_member(data, corrupt, target, onnx, simplify)
    assert simplify is onnx and "truncated or corrupt" in row["error"] and row["status"] == "error", row
    assert loads == ["lenet_a.pt", "corrupt.pt"] and not (tmp_path / "corrupt").exists()


# ----------------------------------------------------------------- on Ray (a private network namespace: loopback only)


def _netns_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


needs_ray = pytest.mark.skipif(
    not _netns_works() or subprocess.run([sys.executable, "-c", "import ray"], capture_output=True).returncode != 0,
    reason="needs Ray (pip install 'cnnexport[ray]') and `unshare -n` (Ray must talk over loopback only here)",
)


def _in_netns(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`cnnexport ARGS` in a new network namespace with only loopback up: Ray's local instance stays on 127.0.0.1."""
    command = " ".join(["ip link set lo up &&", sys.executable, "-m", "exporter.cli", *(f"'{a}'" for a in args)])
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run(["unshare", "-n", "bash", "-c", command], capture_output=True, text=True, timeout=timeout, env=env)


@needs_ray
def test_the_fleet_on_a_local_ray_instance_writes_what_the_local_engine_writes(local_fleet, fleet_dir, tmp_path):
    out = tmp_path / "out"
    done = _in_netns(
        "run", "--recipe", str(fleet_dir / "recipe.yaml"), *map(str, _checkpoints(fleet_dir)), "-o", str(out), "--engine", "ray",
        "--json",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    manifest = json.loads(done.stdout)
    assert manifest["engine"] == "ray" and manifest["summary"]["passed"] == 4 and manifest["summary"]["errors"] == 2
    local = {row["folder"]: row for row in local_fleet["result"].json()["checkpoints"]}
    for row in manifest["checkpoints"]:
        assert row["status"] == local[row["folder"]]["status"] and row["node"], row  # a Ray node ran it
        if row["status"] == "pass":  # each stage was a task of its own
            assert set(row["nodes"]) == {"onnx", "simplify"} and all(row["nodes"].values()), row
        if row["status"] == "pass":
            assert (out / row["folder"] / "manifest.json").read_bytes() == (
                local_fleet["out"] / row["folder"] / "manifest.json"
            ).read_bytes()
    assert "Traceback" not in done.stderr


def _ray_workers_running(task: str, of_pid: int) -> list[int]:
    """PIDs of Ray workers running ``task`` now (Ray titles a busy worker `ray::TASK`), of the Ray instance
    in ``of_pid``'s network namespace only: another Ray job on this machine (a zoo sweep) is not the test's to kill."""
    pids = []
    try:
        netns = os.readlink(f"/proc/{of_pid}/ns/net")
    except OSError:  # the fleet has just ended
        return []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and (proc / "cmdline").read_bytes().startswith(f"ray::{task}".encode())
                and os.readlink(proc / "ns" / "net") == netns
            ):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.full
@needs_ray
def test_a_worker_killed_mid_stage_is_retried_and_the_fleet_completes_with_nothing_partial(local_fleet, fleet_dir, tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    command = " ".join(
        [
            "ip link set lo up &&", sys.executable, "-m", "exporter.cli", "run",
            "--recipe", str(fleet_dir / "recipe.yaml"), str(fleet_dir / "lenet_a.pt"), str(fleet_dir / "lenet_b.pt"),
            "-o", str(out), "--engine", "ray", "--json",
        ]
    )  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ""}
    fleet = subprocess.Popen(
        ["unshare", "-n", "bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and fleet.poll() is None:
        staging = list(out.glob("*/.cnnexport-tmp-*"))  # a stage is writing: kill the worker in the middle of it
        workers = _ray_workers_running("build_stage", fleet.pid)
        if staging and workers:
            os.kill(workers[0], signal.SIGKILL)
            killed = workers[0]
        time.sleep(0.05)
    stdout, stderr = fleet.communicate(timeout=600)
    assert killed is not None, f"no Ray worker was seen mid-stage\n{stderr[-3000:]}"
    assert fleet.returncode == 0 and stdout.startswith("{"), (stdout[-2000:], stderr[-3000:])
    rows = {row["folder"]: row for row in json.loads(stdout)["checkpoints"]}
    assert all(row["status"] == "pass" for row in rows.values()), rows
    for name in ("lenet_a", "lenet_b"):
        assert (out / name / "manifest.json").read_bytes() == (local_fleet["out"] / name / "manifest.json").read_bytes()
        assert not list((out / name).glob(".cnnexport-tmp-*"))  # the retry swept what the killed stage left


GPU_PROBE = """
import json, sys
from pathlib import Path
from ray.cluster_utils import Cluster
from exporter import recipe as recipe_mod
from exporter.fleet import run_fleet
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0})
gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)  # a fake GPU: Ray only counts it
cluster.wait_for_nodes()
stages = {"onnx": {"enabled": True}, "tensorrt": {"enabled": True, "precision": "fp16"}}
recipe = recipe_mod.validate({"name": "gpu-probe", "stages": stages})
result = run_fleet(recipe, [folder / "lenet_a.pt", folder / "lenet_b.pt"], out, engine="ray", ray_address=cluster.address)
print(json.dumps({"gpu_node": gpu_node.node_id, "head": cluster.head_node.node_id, "rows": result.rows}))
cluster.shutdown()
"""


@pytest.mark.full
@needs_ray
def test_gpu_stages_land_only_on_the_node_with_a_gpu(fleet_dir, tmp_path):
    """A 2-node ray.cluster_utils.Cluster: the head without GPUs, a second node with one (a fake resource)."""
    (tmp_path / "probe.py").write_text(GPU_PROBE)
    command = f"ip link set lo up && {sys.executable} {tmp_path / 'probe.py'} {fleet_dir} {tmp_path / 'out'}"
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["gpu_node"] != probe["head"]
    for row in probe["rows"]:
        assert row["status"] == "pass" and row["gpu_node"] == probe["gpu_node"], row  # TensorRT's share ran there
        assert row["stages"]["onnx"]["status"] == "pass" and row["stages"]["tensorrt"]["status"].startswith("skipped"), row


NODE_LOSS = """
import json, sys, threading, time
from pathlib import Path
from ray.cluster_utils import Cluster
from exporter import recipe as recipe_mod
from exporter.fleet import run_fleet
folder, out, recipe_file = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head schedules, the two workers build
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
recipe = recipe_mod.load(recipe_file)
done = {}
fleet = threading.Thread(target=lambda: done.update(result=run_fleet(
    recipe, [folder / "lenet_a.pt", folder / "lenet_b.pt"], out, engine="ray", ray_address=cluster.address)))
fleet.start()
deadline = time.monotonic() + 300
while not list(out.glob("*/.cnnexport-tmp-*")) and time.monotonic() < deadline:
    time.sleep(0.05)
lost = bool(list(out.glob("*/.cnnexport-tmp-*")))
cluster.remove_node(workers[0])  # one task per node: the lost node was in the middle of a stage
fleet.join(600)
print(json.dumps({"lost_mid_stage": lost, "rows": done["result"].rows, "lost": workers[0].node_id}))
cluster.shutdown()
"""


@pytest.mark.full
@needs_ray
def test_a_node_lost_mid_run_has_its_tasks_rescheduled(local_fleet, fleet_dir, tmp_path):
    """ray.cluster_utils.Cluster: two 1-CPU worker nodes, one checkpoint on each; one node removed mid-stage."""
    (tmp_path / "probe.py").write_text(NODE_LOSS)
    out = tmp_path / "out"
    command = f"ip link set lo up && {sys.executable} {tmp_path / 'probe.py'} {fleet_dir} {out} {fleet_dir / 'recipe.yaml'}"
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["lost_mid_stage"], "no stage was running when the node was removed"
    for row in probe["rows"]:
        assert row["status"] == "pass", row
        assert (out / row["folder"] / "manifest.json").read_bytes() == (
            local_fleet["out"] / row["folder"] / "manifest.json"
        ).read_bytes()
        assert not list((out / row["folder"]).glob(".cnnexport-tmp-*"))


@pytest.mark.full
@needs_ray
def test_an_interrupted_driver_rerun_finishes_only_what_is_missing(local_fleet, fleet_dir, tmp_path):
    import signal

    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "exporter.cli", "run",
        "--recipe", str(fleet_dir / "recipe.yaml"), *(str(fleet_dir / f"{n}.pt") for n in GOOD[:3]), "-o", str(out),
        "--engine", "ray", "--json",
    ]  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": ""}
    netns = ["unshare", "-n", "bash", "-c", "ip link set lo up && exec " + " ".join(argv)]
    driver = subprocess.Popen(netns, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = None
    for line in driver.stderr:  # the fleet's progress: interrupt it once the first checkpoint is done
        if "[1/3 done" in line:
            first = line.split("] ")[1].split(":")[0]
            driver.send_signal(signal.SIGTERM)  # what a CI timeout sends; the CLI treats it as Ctrl-C
            break
    driver.communicate(timeout=300)
    assert first in GOOD[:3] and driver.returncode == 130, (first, driver.returncode)
    again = subprocess.run(netns, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = {row["folder"]: row for row in json.loads(again.stdout)["checkpoints"]}
    assert all(stage["cached"] for stage in rows[first]["stages"].values()), rows[first]  # nothing redone
    for name in GOOD[:3]:
        assert rows[name]["status"] == "pass"
        assert (out / name / "manifest.json").read_bytes() == (local_fleet["out"] / name / "manifest.json").read_bytes()
