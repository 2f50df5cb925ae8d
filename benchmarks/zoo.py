"""Zoo coverage: every registry architecture through every stage that runs here.

Run:  .venv/bin/python benchmarks/zoo.py [--models a,b,...] [--timeout 900] [--input-shape 3,64,64] [--resume]
      .venv/bin/python benchmarks/zoo.py --report-only        # rebuild ZOO.md from zoo.jsonl
      .venv/bin/python benchmarks/zoo.py --source timm        # timm's CNN families -> zoo_timm.jsonl, ZOO_TIMM.md
      .venv/bin/python benchmarks/zoo.py --models smp:Unet/resnet18,... --input-shape 3,128,128   # segmentation_models_pytorch

Each model runs in its own process (`--child`), under a time limit: a random-init model with
BatchNorm statistics recalibrated on real data (photo crops, or the digits for 1-channel
models), saved as a checkpoint, then `cnnexport run` with every stage that can run here
(TorchScript, ONNX with the dynamo exporter, simplify, INT8-CPU, FP16, plus Core ML and
TensorRT when this version has them) verified at two batch sizes, and ONNX once more with the
legacy exporter. A few models also get a deliberately broken artifact (the classifier weights of
one class negated after export), which must fail verification. One JSON line per model is appended to
benchmarks/zoo.jsonl; benchmarks/ZOO.md is the model x stage table with timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JSONL = REPO / "benchmarks" / "zoo.jsonl"
MARKDOWN = REPO / "benchmarks" / "ZOO.md"
BROKEN = {"lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "smp:Unet/resnet18", "smp:FPN/resnet18",
          "resnet18", "mobilenet_v2", "lenet5", "lenet_mnist", "efficientnet_b0", "timm:resnet18", "timm:efficientnet_b0",
          "timm:mobilenetv3_small_050", "timm:convnext_atto", "timm:fastvit_t8"}
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
SMP_SAMPLE = ["smp:Unet/resnet18", "smp:Unet/mobilenet_v2", "smp:FPN/resnet18", "smp:DeepLabV3Plus/resnet18",
              "smp:DeepLabV3Plus/mobilenet_v2"]
SMP_FACTORY = """import segmentation_models_pytorch as smp


def build(num_classes=3):
    return smp.{cls}(encoder_name={encoder!r}, encoder_weights=None, classes=num_classes)
"""
STAGES = ["torchscript", "onnx", "onnx_legacy", "simplify", "int8", "fp16", "coreml", "tensorrt", "broken"]


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


def child(name: str, out: Path, input_shape: tuple[int, int, int] | None, samples: int) -> dict:
    """Everything for one model, in this process; returns the JSON line."""
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    from exporter import architectures
    from exporter import recipe as recipe_mod
    from exporter.errors import CnnexportError
    from exporter.kinds import KINDS as RUN_STAGES
    from exporter.run import run_recipe

    arch, arch_kwargs = name, {}
    if name.startswith("smp:"):
        cls, encoder = name[4:].split("/")
        (out / "smp_factory.py").write_text(SMP_FACTORY.format(cls=cls, encoder=encoder))
        entry = _smp_entry(name, out / "smp_factory.py")
        arch, arch_kwargs = f"{out / 'smp_factory.py'}:build", {"num_classes": 3}
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
    line: dict = {"model": name, "input_shape": list(spec.input_shape), "stages": {}}
    if note:
        line["note"] = note
    with torch.no_grad():  # ViT zero-inits its head: a constant-0 output that every artifact matches trivially
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.nn.Parameter) and weight.dim() == 2 and not weight.any():
                torch.nn.init.normal_(weight, std=weight.shape[1] ** -0.5)
    data = calibration_array(spec)
    np.save(out / "calib.npy", data)
    recalibrate_batchnorm(model, [torch.from_numpy(data[start : start + 16]) for start in range(0, min(len(data), 64), 16)])
    stem = name.replace("/", "-").replace(":", "-")  # smp:Unet/resnet18 -> smp-Unet-resnet18
    ckpt = out / f"{stem}.pt"
    torch.save(model.eval().state_dict(), ckpt)
    del model  # every stage loads the checkpoint itself: no second copy of a 2.5 GB model for the whole run
    line["setup_seconds"] = round(time.perf_counter() - started, 1)

    available = {s.name for s in RUN_STAGES}
    enabled = {s: {"enabled": True} for s in ("torchscript", "onnx", "simplify", "int8", "fp16", "coreml", "tensorrt") if s in available}
    recipe = recipe_mod.validate({
        "name": "zoo",
        "model": {"arch": arch, "arch_kwargs": arch_kwargs, "input_shape": list(spec.input_shape)},
        "verify": {"batch_sizes": [1, 2]},
        "calibration": {"data": str(out / "calib.npy"), "samples": samples, "holdout": 16},
        "stages": enabled,
    })
    try:
        result = run_recipe(recipe, ckpt, out / "dist", jobs=1, progress=lambda msg: print(f"• {msg}", file=sys.stderr, flush=True))
        for o in result.outcomes:
            v = o.entry.get("verification", {}) if o.entry else {}
            status = f"fail ({v['reason']})" if o.status == "fail" and v.get("reason") else o.status
            line["stages"][o.name] = {"status": status, "seconds": round(o.seconds, 1),
                                      "max_rel_err": v.get("max_rel_err"), "cosine": v.get("cosine"), "top1": v.get("top1_agreement"),
                                      "pixel_agreement": v.get("pixel_agreement"), "miou": v.get("miou"),
                                      "outputs": sorted(v.get("outputs") or {})}
    except CnnexportError as exc:
        line["stages"]["onnx"] = {"status": f"error ({exc})"}

    from exporter import export_artifact, load_checkpoint, verify_existing

    loaded = load_checkpoint(ckpt, arch=arch, arch_kwargs=arch_kwargs, spec_overrides={"input_shape": spec.input_shape})
    coreml = line["stages"].get("coreml", {})
    if coreml.get("status", "").startswith("error (coremltools cannot convert this model with a flexible batch"):
        # what the error tells the user to do: a fixed batch of 1
        from exporter.pipeline import VerifyOptions

        t0 = time.perf_counter()
        why = coreml["status"].split(" (", 2)[2].split("); the model", 1)[0]
        try:
            fixed = export_artifact("coreml", loaded, out / "fixed" / f"{stem}.mlpackage", {"batch": "1"},
                                    VerifyOptions(batch_sizes=(1,), precision="fp16"))
            status = fixed.verification.status if fixed.verification.status != "fail" else f"fail ({fixed.verification.reason})"
        except CnnexportError as exc:
            status = f"error ({exc})"
        line["stages"]["coreml"] = {"status": f"{status} (batch 1 only; a flexible batch: {why})",
                                    "seconds": round(time.perf_counter() - t0, 1)}

    t0 = time.perf_counter()
    try:
        legacy = export_artifact("onnx", loaded, out / "legacy" / f"{stem}.onnx", {"exporter": "legacy"})
        status = legacy.verification.status if legacy.verification.status != "fail" else f"fail ({legacy.verification.reason})"
        v = legacy.verification.to_dict()
        line["stages"]["onnx_legacy"] = {"status": status, "seconds": round(time.perf_counter() - t0, 1),
                                         "max_rel_err": v.get("max_rel_err"), "cosine": v.get("cosine")}
    except CnnexportError as exc:
        line["stages"]["onnx_legacy"] = {"status": f"error ({exc})", "seconds": round(time.perf_counter() - t0, 1)}

    onnx_file = out / "dist" / f"{stem}.onnx"
    if name in BROKEN and onnx_file.exists():
        import onnx
        from onnx import numpy_helper

        broken = onnx.load(str(onnx_file))
        # the classifier's (or the class-map head's) first class negated: a random-init net can have early
        # channels that barely reach the output, so perturbing an early weight may change nothing measurable
        heads = [i for i in broken.graph.initializer if len(i.dims) in (2, 4) and spec.num_classes in (i.dims[0], i.dims[-1])]
        init = heads[-1]
        arr = numpy_helper.to_array(init).copy()
        if arr.shape[0] == spec.num_classes:  # Gemm weight [classes, features], Conv weight [classes, C, k, k]
            arr[0] *= -1
        else:  # MatMul weight [features, classes]
            arr[..., 0] *= -1
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        onnx.save(broken, str(out / "broken.onnx"))
        verdict = verify_existing(out / "broken.onnx", loaded, write=False)
        caught = verdict.verification.status == "fail"
        line["stages"]["broken"] = {"status": "caught" if caught else "MISSED", "reason": verdict.verification.reason}
    line["seconds"] = round(time.perf_counter() - started, 1)
    return line


def _smp_entry(name: str, factory: Path):
    """A registry-like entry for an smp model built by the factory file (classes=3, 256x256 by default)."""
    from exporter import architectures
    from exporter.loading.modules import resolve_user_arch

    return architectures.ArchEntry(name, lambda num_classes=3: resolve_user_arch(f"{factory}:build", {"num_classes": num_classes}),
                                   3, 3, 256, 256, source="smp", task="segment")


def child_death(returncode: int, stderr: str) -> str:
    """Why a model's process ended without a result: the signal, and the last step it reported."""
    lines = stderr.strip().splitlines()
    steps = [line[2:] for line in lines if line.startswith("• ")]
    where = f"; last reported: {steps[-1][:120]}" if steps else ""
    if returncode == -9:
        return f"process killed (SIGKILL: out of memory on this {_memory_gib()} GiB machine?){where}"
    if returncode < 0:
        return f"process died of signal {-returncode}{where}"
    return f"process exited {returncode}: {(lines or ['no output'])[-1][:200]}{where}"


def _memory_gib() -> int:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)


def render(lines: list[dict], not_run: list[str] | None = None, timm_run: bool = False, what: str | None = None) -> str:
    present = [s for s in STAGES if any(s in line["stages"] for line in lines)]
    what = what or ("`--source timm`: a sample of timm's CNN families (TIMM_SAMPLE)" if timm_run else "every registry model")
    out = ["# Zoo coverage" + (" — timm" if timm_run else ""), "",
           f"Produced by `benchmarks/zoo.py` {what}, random weights with BatchNorm statistics "
           "recalibrated on real data, through every stage, verified at batch 1 and 2 (fp32 rules for ONNX/TorchScript, "
           "int8/fp16 rules for quantized models). `broken` is an ONNX with one weight perturbed after export: it must be caught.",
           ""]
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
    out.append("| stage | passed / run | skipped | seconds, all models |")
    out.append("|---|---|---:|---:|")
    for s in present:
        out.append(f"| {s} | {totals[s][0]} / {totals[s][1]} | {totals[s][2]} | {totals[s][3]:.0f} |")
    out += ["", "| model | input | " + " | ".join(present) + " | seconds |", "|---" * (len(present) + 3) + "|"]
    for line in sorted(lines, key=lambda l: l["model"]):
        cells = []
        for s in present:
            st = line["stages"].get(s)
            if st is None:
                cells.append("-")
                continue
            text = st["status"].replace("|", "/").replace("\n", " ")
            if len(text) > 160:
                text = text[:157] + "…"
            cells.append(f"{text} ({st['seconds']}s)" if st.get("seconds") is not None else text)
        shape = "x".join(map(str, line.get("input_shape", []))) + (" ¹" if line.get("note") else "")
        out.append(f"| {line['model']} | {shape} | " + " | ".join(cells) + f" | {line.get('seconds', '-')} |")
    if not_run:
        out += ["", f"Not run yet ({len(not_run)}; `--models` runs them): " + ", ".join(not_run)]
    notes = [f"- {line['model']}: {line['note']}" for line in sorted(lines, key=lambda l: l["model"]) if line.get("note")]
    if notes:
        out += ["", "¹ Run at its native input size, because the sweep's smaller size does not fit the model:", "", *notes]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated registry names (default: all)")
    parser.add_argument("--timeout", type=int, default=2400, help="seconds per model (ViT-H/14 takes about 1100 s on 2 cores)")
    parser.add_argument("--input-shape", help="override C,H,W of the torchvision and timm models (e.g. 3,64,64 for a quick sweep)")
    parser.add_argument("--samples", type=int, default=64, help="INT8 calibration samples")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--resume", action="store_true", help="skip models that already have a line in the JSONL")
    parser.add_argument("--source", choices=["registry", "timm"], default="registry",
                        help="registry: every built-in entry; timm: TIMM_SAMPLE (needs timm) into zoo_timm.jsonl / ZOO_TIMM.md")
    parser.add_argument("--jsonl", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    timm_run = args.source == "timm"
    args.jsonl = args.jsonl or (JSONL.with_name("zoo_timm.jsonl") if timm_run else JSONL)
    args.markdown = args.markdown or (MARKDOWN.with_name("ZOO_TIMM.md") if timm_run else MARKDOWN)
    shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None

    if args.child:
        print(json.dumps(child(args.child, args.child_out, shape, args.samples)))
        return
    if not args.report_only:
        sys.path.insert(0, str(REPO))
        from exporter import architectures

        from benchmarks.coreml_coverage import param_count

        default = ["timm:" + n for n in TIMM_SAMPLE] if timm_run else sorted(architectures.names(), key=param_count)
        names = args.models.split(",") if args.models else default
        if args.resume and args.jsonl.exists():
            done_before = {json.loads(raw)["model"] for raw in args.jsonl.read_text().splitlines() if raw.strip()}
            names = [n for n in names if n not in done_before]
        for name in names:
            with tempfile.TemporaryDirectory(prefix=f"zoo-{name.replace('/', '-').replace(':', '-')}-") as tmp:
                cmd = [sys.executable, __file__, "--child", name, "--child-out", tmp, "--samples", str(args.samples)]
                if args.input_shape:
                    cmd += ["--input-shape", args.input_shape]
                started = time.perf_counter()
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=REPO)
                    if done.returncode == 0 and done.stdout.strip():
                        line = json.loads(done.stdout.strip().splitlines()[-1])
                    else:
                        line = {"model": name, "stages": {"onnx": {"status": f"error ({child_death(done.returncode, done.stderr)})"}}}
                except subprocess.TimeoutExpired:
                    line = {"model": name, "stages": {"onnx": {"status": f"error (time limit of {args.timeout}s)"}}}
                line.setdefault("seconds", round(time.perf_counter() - started, 1))
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            print(f"{name}: " + ", ".join(f"{k}={v['status'][:40]}" for k, v in line["stages"].items()), flush=True)
    lines = {}
    if args.jsonl.exists():
        for raw in args.jsonl.read_text().splitlines():
            if raw.strip():
                entry = json.loads(raw)
                lines[entry["model"]] = entry  # the latest line per model wins
    sys.path.insert(0, str(REPO))
    from exporter import architectures

    everything = ["timm:" + n for n in TIMM_SAMPLE] if timm_run else architectures.names()
    what = None
    if args.jsonl != JSONL and not timm_run:  # a table of its own (e.g. the dense models): only what it holds
        everything, what = list(lines), f"on the models in `{args.jsonl.relative_to(REPO) if args.jsonl.is_relative_to(REPO) else args.jsonl.name}`"
    args.markdown.write_text(render(list(lines.values()), [n for n in everything if n not in lines], timm_run, what))
    print(f"wrote {args.markdown} ({len(lines)} models)")


if __name__ == "__main__":
    main()
