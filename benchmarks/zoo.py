"""Zoo coverage: every registry architecture through every stage that runs here.

Run:  .venv/bin/python benchmarks/zoo.py [--models a,b,...] [--input-shape 3,64,64] [--resume]
      .venv/bin/python benchmarks/zoo.py --report-only        # rebuild ZOO.md from zoo.jsonl
      .venv/bin/python benchmarks/zoo.py --source timm        # 74 timm CNN families -> zoo_timm_sample.jsonl, ZOO_TIMM_SAMPLE.md
      .venv/bin/python benchmarks/zoo.py --source timm-smallest --count 300 --input-shape 3,128,128   # -> ZOO_TIMM.md
      .venv/bin/python benchmarks/zoo.py --models smp:Unet/resnet18,... --input-shape 3,128,128   # segmentation_models_pytorch
      .venv/bin/python benchmarks/zoo.py --android --input-shape 3,64,64 --resume   # ExecuTorch + LiteRT only -> ZOO_ANDROID.md

The zoo is a fleet (exporter/fleet.py, the code path of `cnnexport run CKPT... -o OUT`), on Ray
where it is installed (RAY_ADDRESS names a cluster; --out must then be a folder every node mounts).
Each model first becomes a checkpoint: random weights with BatchNorm statistics recalibrated on
real data (photo crops, or the digits for 1-channel models), saved the way its training script
saves one (timm's CheckpointSaver, torchvision's references), so one recipe serves every timm and
torchvision model. Models are prepared and submitted --chunk at a time; each goes through every
stage that can run here (TorchScript, ONNX with the dynamo exporter, simplify, INT8-CPU, FP16,
Core ML, OpenVINO when named, TensorRT where installed) verified at two batch sizes; the fleet's
rows (fleet.json) and the checkpoints' manifests are the table's source. Then, outside the recipe,
ONNX once more with the legacy exporter, Core ML at batch 1 where a flexible batch failed, and for a
few models a deliberately broken artifact (the classifier weights of one class negated after
export), which must fail verification. One JSON line per model is appended to benchmarks/zoo.jsonl;
benchmarks/ZOO.md is the model x stage table with timings. The checkpoints and fleets stay under
--out (default ~/.cache/cnnexport/zoo/<jsonl name>): a sweep interrupted and re-run with --resume
rebuilds only what is missing.

`--stages a,b,...` runs only those stages (the legacy ONNX and the broken artifact only when named);
`--android` is `--stages executorch,executorch_int8,litert,litert_int8` into zoo_android.jsonl /
ZOO_ANDROID.md (zoo_timm_android.jsonl / ZOO_TIMM_ANDROID.md with `--source timm`), whose report adds
every failure's refused operator or reason and the operators ExecuTorch left outside XNNPACK.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JSONL = REPO / "benchmarks" / "zoo.jsonl"
MARKDOWN = REPO / "benchmarks" / "ZOO.md"
BROKEN = {
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "smp:Unet/resnet18",
    "smp:FPN/resnet18",
    "resnet18",
    "mobilenet_v2",
    "lenet5",
    "lenet_mnist",
    "efficientnet_b0",
    "timm:resnet18",
    "timm:efficientnet_b0",
    "timm:mobilenetv3_small_050",
    "timm:convnext_atto",
    "timm:fastvit_t8",
}
# A broad sample of timm's CNN families (and the conv/attention hybrids deployed like CNNs), the
# smallest variant of each so the sweep runs on 2 cores: ResNet variants, EfficientNet/-Lite/-V2,
# MobileNetV1-V4, RegNet, GhostNet, RepVGG/RepGhost/MobileOne/RepViT, DLA, ReXNet, MixNet,
# ConvNeXt/-V2, EdgeNeXt, FastViT, MobileViT, and more. Each runs at its pretrained_cfg input size.
TIMM_SAMPLE = """
resnet10t resnet14t resnet18 resnet18d resnet26d resnetblur18 seresnet18 skresnet18 resnext26ts ecaresnet26t resnest14d
efficientnet_b0 tf_efficientnet_b0 efficientnet_lite0 tf_efficientnet_lite0 efficientnet_es efficientnetv2_rw_t
tf_efficientnetv2_b0 tinynet_e mixnet_s tf_mixnet_s mnasnet_100 semnasnet_075 spnasnet_100 fbnetc_100 hardcorenas_a
lcnet_050 mobilenetv1_100 mobilenetv2_050 mobilenetv3_small_050 mobilenetv3_large_100 tf_mobilenetv3_small_075
mobilenetv4_conv_small mobilenetv4_hybrid_medium regnetx_002 regnety_002 regnetz_b16 nf_regnet_b0 ghostnet_050
ghostnetv2_100 repghostnet_050 repvgg_a0 mobileone_s0 repvit_m0_9 dla34 dla46_c dla60x_c rexnet_100 convnext_atto
convnext_femto convnext_pico convnextv2_atto edgenext_xx_small edgenext_x_small fastvit_t8 fastvit_t12 mobilevit_xxs
mobilevitv2_050 efficientformer_l1 efficientformerv2_s0 levit_128s tiny_vit_5m_224 poolformer_s12 densenet121
inception_v3 hrnet_w18_small dpn48b cspresnet50 cs3darknet_focus_s darknet17 ese_vovnet19b_dw gernet_s hgnetv2_b0
hgnet_tiny
""".split()
# segmentation_models_pytorch models (`smp:Class/encoder`): built as user code (a factory file, --arch file.py:build),
# the way a team exports its own smp model; segmentation models are judged per pixel (agreement, mIoU).
SMP_SAMPLE = [
    "smp:Unet/resnet18",
    "smp:Unet/mobilenet_v2",
    "smp:FPN/resnet18",
    "smp:DeepLabV3Plus/resnet18",
    "smp:DeepLabV3Plus/mobilenet_v2",
]
SMP_FACTORY = """import segmentation_models_pytorch as smp


def build(num_classes=3):
    return smp.{cls}(encoder_name={encoder!r}, encoder_weights=None, classes=num_classes)
"""
STAGES = [
    "torchscript",
    "onnx",
    "onnx_legacy",
    "simplify",
    "int8",
    "fp16",
    "coreml",
    "openvino",
    "tensorrt",
    "broken",
    "executorch",
    "executorch_int8",
    "litert",
    "litert_int8",
]
DEFAULT_STAGES = ("torchscript", "onnx", "simplify", "int8", "fp16", "coreml", "tensorrt", "onnx_legacy", "broken")
ANDROID_STAGES = ("executorch", "executorch_int8", "litert", "litert_int8")


def calibration_array(spec, n: int = 96):
    """Real inputs for BatchNorm statistics and INT8 calibration, shaped for the model."""
    import numpy as np

    if spec.channels == 1:
        from exporter.inputs import digits_arrays

        return digits_arrays(spec)[0][:n]
    from benchmarks.quantize import photo_crops

    size = max(spec.height, spec.width)
    crops = photo_crops(n, size=min(size, 400))
    if (crops.shape[2], crops.shape[3]) != (spec.height, spec.width):
        import torch

        crops = torch.nn.functional.interpolate(torch.from_numpy(crops), size=(spec.height, spec.width), mode="bilinear").numpy()
    return np.ascontiguousarray(crops[:, : spec.channels], dtype=np.float32)


def recalibrate_batchnorm(model, batches, damping: float = 2.0) -> None:
    """Set every BatchNorm from its input's statistics over ``batches`` (then eval mode).

    Random-init weights make activations grow layer by layer (Inception V3 reaches 1e6, past
    fp16's 65504): with momentum None, PyTorch's running statistics become plain averages, so
    one pass sets them to the data's statistics instead of moving them 10% per batch. Exact
    unit-variance normalization puts deep random nets (ResNet-152, EfficientNet-B7) in a chaotic
    regime where a 1e-6 input change moves the logits by 1e-2 of their range, so fp32 rounding
    alone fails verification; recording ``damping`` x the variance (each BatchNorm outputs std
    1/sqrt(damping)) brings that back to ~2e-7, as in a trained network.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
        m.running_var.mul_(damping)
    model.eval()


def _upsampling_pool(model, batch) -> str | None:
    """Run ``batch``; a note if an adaptive pool would enlarge its input (VGG/AlexNet at 64x64).

    Such a pool turns a 2x2 map into 7x7, which no trained model sees, and which the legacy
    ONNX exporter and a flexible-batch Core ML program refuse; the model runs at its own size.
    """
    import torch

    grown = []

    def check(module, inputs, output):
        if any(o > i for o, i in zip(output.shape[-2:], inputs[0].shape[-2:])):
            grown.append(f"{tuple(inputs[0].shape[-2:])} to {tuple(output.shape[-2:])}")

    pools = [m for m in model.modules() if isinstance(m, (torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d))]
    handles = [m.register_forward_hook(check) for m in pools]
    try:
        with torch.no_grad():
            model.eval()(batch)
    finally:
        for h in handles:
            h.remove()
    return f"native input: at {tuple(batch.shape[-2:])} an adaptive pool would upsample {grown[0]}" if grown else None


def prepare(name: str, folder: Path, input_shape: tuple[int, int, int] | None) -> dict:
    """One model's checkpoint, saved the way its training script saves one; the start of its JSON line.

    A random-init model with BatchNorm statistics recalibrated on real data. timm models are saved by
    timm's own CheckpointSaver (what its train.py writes) and torchvision's in its references' format;
    each names its architecture and input size, as a real training run's checkpoint does, so one
    recipe serves the whole fleet. The others (classic models, smp user code) carry a ``model``
    section their recipe needs.
    """
    import torch

    from exporter import architectures

    folder.mkdir(parents=True, exist_ok=True)
    stem = name.replace("/", "-").replace(":", "-")  # smp:Unet/resnet18 -> smp-Unet-resnet18
    stamp = folder / f"{stem}.json"
    if stamp.exists() and (folder / f"{stem}.pt").exists():
        return json.loads(stamp.read_text())  # prepared by an earlier run of the sweep
    arch, arch_kwargs = name, {}
    if name.startswith("smp:"):
        cls, encoder = name[4:].split("/")
        factory = folder / f"{stem}_factory.py"
        factory.write_text(SMP_FACTORY.format(cls=cls, encoder=encoder))
        entry = _smp_entry(name, factory)
        arch, arch_kwargs = f"{factory.resolve()}:build", {"num_classes": 3}
    else:
        entry = architectures.get(name)
    spec = entry.spec()
    started = time.perf_counter()
    torch.manual_seed(0)
    model = entry.build()
    note = None
    if input_shape and entry.source in ("torchvision", "timm", "smp"):  # classic models have fixed input sizes
        try:
            note = _upsampling_pool(model, torch.zeros(2, *input_shape))
            if note is None:
                spec = spec.with_overrides(input_shape=input_shape)
        except Exception as exc:  # noqa: BLE001 - e.g. ViT's fixed image size, Inception's minimum
            note = f"native input: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    with torch.no_grad():  # ViT zero-inits its head: a constant-0 output that every artifact matches trivially
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.nn.Parameter) and weight.dim() == 2 and not weight.any():
                torch.nn.init.normal_(weight, std=weight.shape[1] ** -0.5)
    data = calibration_array(spec)
    recalibrate_batchnorm(model, [torch.from_numpy(data[start : start + 16]) for start in range(0, min(len(data), 64), 16)])
    weights = model.eval().state_dict()
    shape = list(spec.input_shape)
    section: dict = {}
    if entry.source == "timm":  # written by timm's own CheckpointSaver, with train.py's options as its args
        _timm_saved(model, name.removeprefix("timm:"), spec, folder / f"{stem}.pt")
        saved = None
    elif entry.source == "torchvision" and spec.height == spec.width:  # torchvision's references/classification/train.py
        saved = {"model": weights, "epoch": 0, "args": {"model": name, "val_crop_size": spec.height}}
        if spec.crop_pct:
            saved["args"]["val_resize_size"] = round(spec.height / spec.crop_pct)
    else:
        saved, section = weights, {"arch": arch, "arch_kwargs": arch_kwargs, "input_shape": shape}
    if saved is not None:
        torch.save(saved, folder / f"{stem}.pt")
    del model, saved, weights
    line: dict = {
        "model": name,
        "input_shape": shape,
        "checkpoint": f"{stem}.pt",
        "model_section": section,
        "calibration": "digits" if spec.channels == 1 else "images",
        "setup_seconds": round(time.perf_counter() - started, 1),
    }
    if note:
        line["note"] = note
    stamp.write_text(json.dumps(line))
    return line


def _timm_saved(model, name: str, spec, target: Path) -> None:
    """The checkpoint timm's train.py writes (timm.utils.CheckpointSaver: epoch, arch, state_dict, optimizer, version, args)."""
    import argparse
    import tempfile

    import torch
    from timm.utils import CheckpointSaver

    args = argparse.Namespace(
        model=name,
        input_size=list(spec.input_shape),
        num_classes=spec.num_classes,
        mean=list(spec.mean),
        std=list(spec.std),
        crop_pct=spec.crop_pct,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        CheckpointSaver(model, optimizer, args=args, checkpoint_dir=tmp, recovery_dir=tmp).save_checkpoint(epoch=0, metric=0.0)
        os.replace(Path(tmp) / "last.pth.tar", target)


def calibration_images(folder: Path, n: int = 96, size: int = 256) -> Path:
    """Photo crops as PNG files: the fleet's calibration folder, resized by each model's own preprocessing."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.png"))) == n:
        return folder
    rng = np.random.default_rng(0)
    photos = load_sample_images().images
    for i in range(n):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        crop = photo[y : y + size, x : x + size]
        Image.fromarray(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)).save(folder / f"crop{i:03d}.png")
    return folder


def recipe_for(prepared: dict, stages: tuple[str, ...], samples: int, images: Path) -> dict:
    """The fleet's recipe: the stages that run here (``onnx`` is on by default), verified at batch 1 and 2."""
    from exporter.kinds import KINDS

    available = {s.name for s in KINDS}
    enabled = {s: {"enabled": True} for s in stages if s in available}
    enabled.setdefault("onnx", {"enabled": False})
    return {
        "name": "zoo",
        "model": prepared["model_section"],
        "verify": {"batch_sizes": [1, 2]},
        "calibration": {
            "data": "digits" if prepared["calibration"] == "digits" else str(images.resolve()),
            "samples": samples,
            "holdout": 16,
        },
        "stages": enabled,
    }


def sweep(
    names: list[str],
    out: Path,
    input_shape,
    samples: int,
    stages: tuple[str, ...] = DEFAULT_STAGES,
    engine: str = "auto",
    chunk: int = 24,
    on_line=lambda line: None,
) -> list[dict]:
    """The zoo as fleets of checkpoints (exporter.fleet.run_fleet, the code path of `cnnexport run CKPT...`).

    Models are prepared and submitted ``chunk`` at a time, so a long sweep saves its lines as it goes;
    checkpoints that share a recipe (every timm and torchvision model) form one fleet; the OUT
    folders persist, so an interrupted sweep re-run rebuilds only what is missing (the stamps).
    """
    from exporter import recipe as recipe_mod
    from exporter.fleet import choose_engine, run_fleet

    images = calibration_images(out / "calibration")
    lines = []
    engine = choose_engine(engine, len(names))
    ray_here = engine == "ray" and _start_ray()
    try:
        for first in range(0, len(names), chunk):
            prepared: dict[str, list[dict]] = {}
            for name in names[first : first + chunk]:
                try:
                    head = prepare(name, out / "checkpoints", input_shape)
                except Exception as exc:  # noqa: BLE001 - a model that cannot even be built here
                    line = {
                        "model": name,
                        "stages": {
                            _first_stage(stages): {
                                "status": f"error (preparing it: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"
                            }
                        },
                    }
                    lines.append(line)
                    on_line(line)
                    continue
                recipe = recipe_for(head, stages, samples, images)
                group = "fleet" if not head["model_section"] else "fleet-" + head["checkpoint"].removesuffix(".pt")
                prepared.setdefault(json.dumps([group, recipe]), []).append(head)
            for key, heads in prepared.items():
                group, recipe = json.loads(key)
                ckpts = [out / "checkpoints" / h["checkpoint"] for h in heads]
                result = run_fleet(
                    recipe_mod.validate(recipe, "the zoo's recipe"),
                    ckpts,
                    out / group,
                    engine=engine,
                    progress=lambda msg: print(f"• {msg}", file=sys.stderr, flush=True),
                )
                rows = {Path(r["checkpoint"]).name: r for r in result.rows}
                for head in heads:
                    line = line_of(head, rows[head["checkpoint"]], out / group, stages)
                    extras(line, head, stages, out)
                    lines.append(line)
                    on_line(line)
    finally:
        if ray_here:
            import ray

            ray.shutdown()
    return lines


def _start_ray() -> bool:
    """One Ray connection for every chunk (the cluster in RAY_ADDRESS, else a local instance); True if made here.

    run_fleet uses an initialized Ray as it is, instead of starting and stopping one per chunk.
    """
    import ray

    if ray.is_initialized():
        return False
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)  # reads RAY_ADDRESS
    return True


def line_of(head: dict, row: dict, fleet_dir: Path, stages: tuple[str, ...] = DEFAULT_STAGES) -> dict:
    """A model's JSON line from its fleet row (status, seconds, verdicts) and its manifest (ExecuTorch's details)."""
    line = {k: head[k] for k in ("model", "input_shape", "note", "setup_seconds") if k in head}
    line["stages"] = {}
    if row["status"] == "error" and not row.get("stages"):  # the checkpoint never reached its stages
        line["stages"][_first_stage(stages)] = {"status": f"error ({row['error']})"}
    manifest_path = fleet_dir / row["folder"] / "manifest.json"
    artifacts = json.loads(manifest_path.read_text()).get("stages", {}) if manifest_path.exists() else {}
    for name, st in row.get("stages", {}).items():
        status = f"fail ({st['reason']})" if st["status"] == "fail" and st.get("reason") else st["status"]
        cell = {
            "status": status,
            "seconds": round(st["seconds"], 1),
            "cached": st.get("cached", False),
            "max_rel_err": st.get("max_rel_err"),
            "cosine": st.get("cosine"),
            "top1": st.get("top1_agreement"),
        }
        details = (artifacts.get(name) or {}).get("details", {})
        for key in ("portable_ops", "delegated_subgraphs"):  # ExecuTorch: what XNNPACK did not take
            if key in details:
                cell[key] = details[key]
        line["stages"][name] = cell
    line["seconds"] = round(head.get("setup_seconds", 0) + row.get("seconds", 0), 1)
    return line


def extras(line: dict, head: dict, stages: tuple[str, ...], out: Path) -> None:
    """What a recipe does not build: Core ML at batch 1 where a flexible batch failed, the legacy ONNX, a broken artifact."""
    flexible = "error (coremltools cannot convert this model with a flexible batch"
    wanted = (
        "onnx_legacy" in stages
        or ("broken" in stages and head["model"] in BROKEN)
        or ("coreml" in stages and line["stages"].get("coreml", {}).get("status", "").startswith(flexible))
    )
    if not wanted or not line["stages"] or "error (" in str(line["stages"].get("onnx")):
        return  # nothing to do: the checkpoint is not loaded again
    from exporter import export_artifact, load_checkpoint
    from exporter.errors import CnnexportError
    from exporter.pipeline import VerifyOptions

    ckpt = out / "checkpoints" / head["checkpoint"]
    section = head["model_section"]
    stem = head["checkpoint"].removesuffix(".pt")
    scratch = out / "extras" / stem
    started = time.perf_counter()
    try:
        loaded = load_checkpoint(
            ckpt,
            arch=section.get("arch"),
            arch_kwargs=section.get("arch_kwargs") or {},
            spec_overrides={"input_shape": tuple(head["input_shape"])},
        )
    except CnnexportError as exc:
        line["stages"]["onnx_legacy"] = {"status": f"error ({exc})"}
        return
    coreml = line["stages"].get("coreml", {})
    if "coreml" in stages and coreml.get("status", "").startswith(flexible):  # what the error tells the user to do
        t0 = time.perf_counter()
        why = coreml["status"].split(" (", 2)[2].split("); the model", 1)[0]
        try:
            fixed = export_artifact(
                "coreml", loaded, scratch / f"{stem}.mlpackage", {"batch": "1"}, VerifyOptions(batch_sizes=(1,), precision="fp16")
            )
            status = fixed.verification.status if fixed.verification.status != "fail" else f"fail ({fixed.verification.reason})"
        except CnnexportError as exc:
            status = f"error ({exc})"
        line["stages"]["coreml"] = {
            "status": f"{status} (batch 1 only; a flexible batch: {why})",
            "seconds": round(time.perf_counter() - t0, 1),
        }
    if "onnx_legacy" in stages:
        t0 = time.perf_counter()
        try:
            verdict = export_artifact("onnx", loaded, scratch / f"{stem}.onnx", {"exporter": "legacy"}).verification
            v = verdict.to_dict()
            line["stages"]["onnx_legacy"] = {
                "status": verdict.status if verdict.status != "fail" else f"fail ({verdict.reason})",
                "seconds": round(time.perf_counter() - t0, 1),
                "max_rel_err": v.get("max_rel_err"),
                "cosine": v.get("cosine"),
            }
        except CnnexportError as exc:
            line["stages"]["onnx_legacy"] = {"status": f"error ({exc})", "seconds": round(time.perf_counter() - t0, 1)}
    onnx_file = next(
        (
            out / group / stem / f"{stem}.onnx"
            for group in ("fleet", f"fleet-{stem}")
            if (out / group / stem / f"{stem}.onnx").exists()
        ),
        None,
    )
    if "broken" in stages and head["model"] in BROKEN and onnx_file is not None:
        line["stages"]["broken"] = _broken_caught(onnx_file, loaded, scratch / "broken.onnx")
    line["seconds"] = round(line["seconds"] + time.perf_counter() - started, 1)


def _broken_caught(onnx_file: Path, loaded, target: Path) -> dict:
    """The ONNX with its classifier's first class negated: verification must fail it."""
    import onnx
    from onnx import numpy_helper

    from exporter import verify_existing

    classes = loaded.spec.num_classes
    broken = onnx.load(str(onnx_file))
    # the classifier's (or the class-map head's) first class negated: a random-init net can have early
    # channels that barely reach the output, so perturbing an early weight may change nothing measurable
    heads = [i for i in broken.graph.initializer if len(i.dims) in (2, 4) and classes in (i.dims[0], i.dims[-1])]
    init = heads[-1]
    arr = numpy_helper.to_array(init).copy()
    if arr.shape[0] == classes:  # Gemm weight [classes, features], Conv weight [classes, C, k, k]
        arr[0] *= -1
    else:  # MatMul weight [features, classes]
        arr[..., 0] *= -1
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(broken, str(target))
    verdict = verify_existing(target, loaded, write=False)
    caught = verdict.verification.status == "fail"
    return {"status": "caught" if caught else "MISSED", "reason": verdict.verification.reason}


def _first_stage(stages) -> str:
    """Where a model that never reached its stages records why (onnx in the full sweep)."""
    return "onnx" if "onnx" in stages else stages[0]


def _smp_entry(name: str, factory: Path):
    """A registry-like entry for an smp model built by the factory file (classes=3, 256x256 by default)."""
    from exporter import architectures
    from exporter.loading.modules import resolve_user_arch

    return architectures.ArchEntry(
        name,
        lambda num_classes=3: resolve_user_arch(f"{factory}:build", {"num_classes": num_classes}),
        3,
        3,
        256,
        256,
        source="smp",
        task="segment",
    )


def render(lines: list[dict], not_run: list[str] | None = None, timm_run: bool = False, what: str | None = None) -> str:
    present = [s for s in STAGES if any(s in line["stages"] for line in lines)]
    android = bool(present) and set(present) <= set(ANDROID_STAGES)
    what = what or ("`--source timm`: a sample of timm's CNN families (TIMM_SAMPLE)" if timm_run else "every registry model")
    if android:
        out = [
            "# Zoo coverage — Android targets" + (" (timm)" if timm_run else ""),
            "",
            f"Produced by `benchmarks/zoo.py --android` {what}, random weights with BatchNorm statistics recalibrated "
            "on real data, through the ExecuTorch (.pte, XNNPACK delegate; fp32 and pt2e int8) and LiteRT (.tflite, "
            "litert-torch; fp32 and ai-edge-quantizer static int8) stages, each verified by its own runtime against "
            "PyTorch (ExecuTorch at batch 1, 2 and its planned maximum 32; LiteRT at batch 1 and 2; fp32 rules, int8 "
            "rules on the held-out calibration split).",
            "",
        ]
    else:
        out = [
            "# Zoo coverage" + (" — timm" if timm_run else ""),
            "",
            f"Produced by `benchmarks/zoo.py` {what}, random weights with BatchNorm statistics "
            "recalibrated on real data, through every stage, verified at batch 1 and 2 (fp32 rules for ONNX/TorchScript, "
            "int8/fp16 rules for quantized models). "
            "`broken` is an ONNX with one weight perturbed after export: it must be caught.",
            "",
        ]
    totals = {s: [0, 0, 0, 0.0] for s in present}  # passed, run, skipped, seconds
    for line in lines:
        for s in present:
            st = line["stages"].get(s, {}).get("status")
            if not st:
                continue
            if st.startswith("skipped"):  # did not run here: never counted as run, let alone passed
                totals[s][2] += 1
                continue
            totals[s][1] += 1
            totals[s][0] += st in ("pass", "caught") or st.startswith("pass (")
            totals[s][3] += line["stages"][s].get("seconds") or 0.0
    per_model = sorted(line["seconds"] for line in lines if isinstance(line.get("seconds"), (int, float)))
    if per_model:
        out += [
            f"{len(lines)} models; seconds per model (checkpoint preparation and every stage, summed over the "
            f"stages however many ran at once): median {per_model[len(per_model) // 2]:.1f}, mean "
            f"{sum(per_model) / len(per_model):.1f}, max {per_model[-1]:.1f}; all models {sum(per_model):.0f} s.",
            "",
        ]
    out.append("| stage | passed / run | skipped | seconds, all models |")
    out.append("|---|---|---:|---:|")
    for s in present:
        out.append(f"| {s} | {totals[s][0]} / {totals[s][1]} | {totals[s][2]} | {totals[s][3]:.0f} |")
    out += ["", "| model | input | " + " | ".join(present) + " | seconds |", "|---" * (len(present) + 3) + "|"]
    for line in sorted(lines, key=lambda row: row["model"]):
        cells = []
        for s in present:
            st = line["stages"].get(s)
            if st is None:
                cells.append("-")
                continue
            text = st["status"].replace("|", "/").replace("\n", " ")
            if android:  # the model's scratch folder says nothing
                text = re.sub(r"/tmp/\S+/", "", text)
            if len(text) > 160:
                text = text[:157] + "…"
            if st.get("cached"):  # built by an earlier, interrupted run of the sweep: its time is not this run's
                cells.append(f"{text} (cached)")
            else:
                cells.append(f"{text} ({st['seconds']}s)" if st.get("seconds") is not None else text)
        shape = "x".join(map(str, line.get("input_shape", []))) + (" ¹" if line.get("note") else "")
        out.append(f"| {line['model']} | {shape} | " + " | ".join(cells) + f" | {line.get('seconds', '-')} |")
    if not_run:
        out += ["", f"Not run yet ({len(not_run)}; `--models` runs them): " + ", ".join(not_run)]
    notes = [f"- {line['model']}: {line['note']}" for line in sorted(lines, key=lambda row: row["model"]) if line.get("note")]
    if notes:
        out += ["", "¹ Run at its native input size, because the sweep's smaller size does not fit the model:", "", *notes]
    if android:
        out += _android_sections(lines, present)
    return "\n".join(out) + "\n"


# what names an operator in ExecuTorch's, torch.export's and litert-torch's messages
OP_NAME = re.compile(
    r"\b(?:(?:aten|prims|quantized_decomposed|dim_order_ops)(?:::|\.|_)|torchvision::|tfl\.|stablehlo\.)"
    r"[A-Za-z0-9_.]*[A-Za-z0-9]"
)


def refusal(status: str) -> tuple[str, str]:
    """(operator or "-", reason) of a stage that did not pass, from its status line."""
    text = status
    for wrapper in ("error (", "fail ("):
        if text.startswith(wrapper):
            text = text[len(wrapper) :].removesuffix(")")
    for inner, label in (
        ("ExecuTorch could not lower the model (", "ExecuTorch lowering"),
        ("torch.export refused the model (", "torch.export"),
        ("cannot be loaded by the LiteRT interpreter (", "LiteRT interpreter"),
    ):
        if inner in text:
            text = f"{label}: " + text.partition(inner)[2].removesuffix(")")
    if "failed in the litert environment" in text:  # the converter's last stderr line
        text = "litert-torch: " + text.split("): ", 1)[-1]
    text = re.sub(r"/tmp/\S+", "…", text)
    ops = OP_NAME.findall(text)
    return (ops[0] if ops else "-"), text


def _android_sections(lines: list[dict], present: list[str]) -> list[str]:
    """Every failure with the operator or reason refused; the operators ExecuTorch left outside XNNPACK."""
    from collections import Counter

    out = ["", "## Failures", ""]
    rows, reasons = [], Counter()
    for line in sorted(lines, key=lambda row: row["model"]):
        for s in present:
            st = line["stages"].get(s, {}).get("status", "")
            if not st or st == "pass" or st.startswith(("pass (", "skipped")):
                continue
            op, why = refusal(st)
            if st.startswith(("error (process", "error (time limit")):  # the model's process, not this stage alone
                s = "all (model process)"
            rows.append(f"| {line['model']} | {s} | {op} | {why[:300].replace('|', '/')} |")
            reasons[(s, op, re.sub(r"\b\d+(\.\d+)?\b", "N", why)[:160])] += 1
    if rows:
        out += [
            "| model | stage | operator | reason |",
            "|---|---|---|---|",
            *rows,
            "",
            "By reason (numbers as N):",
            "",
            "| stage | operator | reason | models |",
            "|---|---|---|---:|",
        ]
        out += [f"| {s} | {op} | {why.replace('|', '/')} | {n} |" for (s, op, why), n in reasons.most_common()]
    else:
        out.append("None.")
    for s in ("executorch", "executorch_int8"):
        programs = [line["stages"][s] for line in lines if "portable_ops" in line["stages"].get(s, {})]
        if not programs:
            continue
        models, nodes = Counter(), Counter()
        for st in programs:
            for op, n in st["portable_ops"].items():
                models[op] += 1
                nodes[op] += n
        subgraphs = sorted(st.get("delegated_subgraphs", 0) for st in programs)
        out += [
            "",
            f"## Operators outside XNNPACK ({s}, {len(programs)} programs)",
            "",
            "From each program's `portable_ops` (the nodes ExecuTorch's portable kernels run, not XNNPACK); "
            f"{sum(1 for st in programs if not st['portable_ops'])} programs have none; XNNPACK subgraphs per program: "
            f"{subgraphs[0]} to {subgraphs[-1]} (median {subgraphs[len(subgraphs) // 2]}). `alloc` is the memory node "
            "planned for a portable op's output.",
            "",
            "| operator | programs | nodes, all programs |",
            "|---|---:|---:|",
        ]
        out += [f"| {op} | {models[op]} | {nodes[op]} |" for op, _ in models.most_common()]
    return out


def timm_smallest(count: int, cache: Path) -> list[str]:
    """The ``count`` timm architectures with the fewest parameters (counted on the meta device, no weights built)."""
    import timm
    import torch

    sizes = json.loads(cache.read_text()) if cache.exists() else {}
    missing = [n for n in timm.list_models() if n not in sizes]
    for n in missing:
        try:
            with torch.device("meta"):
                sizes[n] = sum(p.numel() for p in timm.create_model(n).parameters())
        except Exception:  # noqa: BLE001 - e.g. a model that needs pretrained weights' config to build
            sizes[n] = None
    if missing:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(sizes, indent=0, sort_keys=True))
    buildable = sorted((n for n, size in sizes.items() if size), key=lambda n: (sizes[n], n))
    return ["timm:" + n for n in buildable[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated registry names (default: all)")
    parser.add_argument(
        "--input-shape", help="override C,H,W of the torchvision and timm models (e.g. 3,64,64 for a quick sweep)"
    )
    parser.add_argument("--samples", type=int, default=64, help="INT8 calibration samples")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--resume", action="store_true", help="skip models that already have a line in the JSONL")
    parser.add_argument(
        "--source",
        choices=["registry", "timm", "timm-smallest"],
        default="registry",
        help="registry: every built-in entry; timm: TIMM_SAMPLE (needs timm) into zoo_timm_sample.jsonl / "
        "ZOO_TIMM_SAMPLE.md; timm-smallest: timm's --count architectures with the fewest parameters, into "
        "zoo_timm.jsonl / ZOO_TIMM.md",
    )
    parser.add_argument("--count", type=int, default=300, help="how many architectures --source timm-smallest takes")
    parser.add_argument(
        "--stages",
        help="comma-separated stages to run (default: every stage of the full sweep: "
        + ",".join(DEFAULT_STAGES)
        + "); onnx_legacy and broken only when named",
    )
    parser.add_argument(
        "--android",
        action="store_true",
        help="--stages "
        + ",".join(ANDROID_STAGES)
        + " into zoo_android.jsonl / ZOO_ANDROID.md (zoo_timm_android.jsonl / ZOO_TIMM_ANDROID.md for timm)",
    )
    parser.add_argument("--engine", default="auto", help="the fleet's engine: auto (Ray where installed), local or ray")
    parser.add_argument("--chunk", type=int, default=24, help="models prepared and submitted as one fleet at a time")
    parser.add_argument(
        "--out",
        type=Path,
        help="checkpoints and fleets (kept, so a re-run rebuilds only what is missing; "
        "default ~/.cache/cnnexport/zoo/<jsonl name>)",
    )
    parser.add_argument("--jsonl", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    timm_run = args.source != "registry"
    if args.android and args.stages:
        parser.error("--android sets --stages; give one of them")
    stages = ANDROID_STAGES if args.android else tuple(args.stages.split(",")) if args.stages else DEFAULT_STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    suffix = "_android" if args.android else ""
    # the 74-family sample came first; the 300 smallest architectures are the timm sweep
    table = {"registry": "zoo", "timm": "zoo_timm_sample" if not args.android else "zoo_timm", "timm-smallest": "zoo_timm"}[
        args.source
    ]
    args.jsonl = args.jsonl or JSONL.with_name(f"{table}{suffix}.jsonl")
    args.markdown = args.markdown or MARKDOWN.with_name(table.upper() + suffix.upper() + ".md")
    out = args.out or Path.home() / ".cache" / "cnnexport" / "zoo" / args.jsonl.stem
    shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None
    sys.path.insert(0, str(REPO))
    from exporter import architectures

    if args.source == "timm-smallest":
        everything = timm_smallest(args.count, out.parent / "timm_params.json")
    elif timm_run:
        everything = ["timm:" + n for n in TIMM_SAMPLE]
    else:
        from benchmarks.coreml_coverage import param_count

        everything = sorted(architectures.names(), key=param_count)
    if not args.report_only:
        names = args.models.split(",") if args.models else everything
        if args.resume and args.jsonl.exists():
            done_before = {json.loads(raw)["model"] for raw in args.jsonl.read_text().splitlines() if raw.strip()}
            names = [n for n in names if n not in done_before]

        def save(line: dict) -> None:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            print(f"{line['model']}: " + ", ".join(f"{k}={v['status'][:40]}" for k, v in line["stages"].items()), flush=True)

        sweep(names, out, shape, args.samples, stages, args.engine, args.chunk, save)
    lines = {}
    if args.jsonl.exists():
        for raw in args.jsonl.read_text().splitlines():
            if raw.strip():
                entry = json.loads(raw)
                lines[entry["model"]] = entry  # the latest line per model wins
    what = None
    if args.source == "timm-smallest":
        what = f"`--source timm-smallest --count {args.count}`: timm's {args.count} architectures with the fewest parameters"
    # a table of its own (e.g. the dense models): only what it holds
    if args.jsonl == JSONL.with_name("zoo_android.jsonl") and len(lines) < len(everything):
        what = (
            f"on {len(lines)} of the registry's models (a subset: one or two per torchvision family, "
            "the others listed under Not run yet)"
        )
    if args.jsonl not in (JSONL, JSONL.with_name("zoo_android.jsonl")) and not timm_run:
        everything, what = (
            list(lines),
            f"on the models in `{args.jsonl.relative_to(REPO) if args.jsonl.is_relative_to(REPO) else args.jsonl.name}`",
        )
    args.markdown.write_text(render(list(lines.values()), [n for n in everything if n not in lines], timm_run, what))
    print(f"wrote {args.markdown} ({len(lines)} models)")


if __name__ == "__main__":
    main()
