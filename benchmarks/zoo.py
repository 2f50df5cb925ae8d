"""Zoo coverage: every registry architecture through every stage that runs here.

Run:  .venv/bin/python benchmarks/zoo.py [--models a,b,...] [--timeout 900] [--input-shape 3,64,64] [--resume]
      .venv/bin/python benchmarks/zoo.py --report-only        # rebuild ZOO.md from zoo.jsonl
      .venv/bin/python benchmarks/zoo.py --source timm        # timm's CNN families -> zoo_timm.jsonl, ZOO_TIMM.md
      .venv/bin/python benchmarks/zoo.py --models smp:Unet/resnet18,... --input-shape 3,128,128   # segmentation_models_pytorch
      .venv/bin/python benchmarks/zoo.py --android --input-shape 3,64,64 --resume   # ExecuTorch + LiteRT only -> ZOO_ANDROID.md

Each model runs in its own process (`--child`), under a time limit: a random-init model with
BatchNorm statistics recalibrated on real data (photo crops, or the digits for 1-channel
models), saved as a checkpoint, then `cnnexport run` with every stage that can run here
(TorchScript, ONNX with the dynamo exporter, simplify, INT8-CPU, FP16, plus Core ML and
TensorRT when this version has them) verified at two batch sizes, and ONNX once more with the
legacy exporter. A few models also get a deliberately broken artifact (the classifier weights of
one class negated after export), which must fail verification. One JSON line per model is appended to
benchmarks/zoo.jsonl; benchmarks/ZOO.md is the model x stage table with timings.

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
STAGES = ["torchscript", "onnx", "onnx_legacy", "simplify", "int8", "fp16", "coreml", "tensorrt", "broken",
          "executorch", "executorch_int8", "litert", "litert_int8"]
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


def child(name: str, out: Path, input_shape: tuple[int, int, int] | None, samples: int,
          stages: tuple[str, ...] = DEFAULT_STAGES) -> dict:
    """Everything for one model (``stages`` of it), in this process; returns the JSON line."""
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
    enabled = {s: {"enabled": True} for s in stages if s in available}
    enabled.setdefault("onnx", {"enabled": False})  # on by default in a recipe
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
            details = o.entry.get("details", {}) if o.entry else {}
            for key in ("portable_ops", "delegated_subgraphs"):  # ExecuTorch: what XNNPACK did not take
                if key in details:
                    line["stages"][o.name][key] = details[key]
    except CnnexportError as exc:
        line["stages"][_first_stage(stages)] = {"status": f"error ({exc})"}
    if not {"coreml", "onnx_legacy", "broken"} & set(stages):
        line["seconds"] = round(time.perf_counter() - started, 1)
        return line

    from exporter import export_artifact, load_checkpoint, verify_existing

    loaded = load_checkpoint(ckpt, arch=arch, arch_kwargs=arch_kwargs, spec_overrides={"input_shape": spec.input_shape})
    coreml = line["stages"].get("coreml", {})
    flexible = "error (coremltools cannot convert this model with a flexible batch"
    if "coreml" in stages and coreml.get("status", "").startswith(flexible):
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

    if "onnx_legacy" in stages:
        t0 = time.perf_counter()
        try:
            legacy = export_artifact("onnx", loaded, out / "legacy" / f"{stem}.onnx", {"exporter": "legacy"})
            verdict = legacy.verification
            status = verdict.status if verdict.status != "fail" else f"fail ({verdict.reason})"
            v = verdict.to_dict()
            line["stages"]["onnx_legacy"] = {"status": status, "seconds": round(time.perf_counter() - t0, 1),
                                             "max_rel_err": v.get("max_rel_err"), "cosine": v.get("cosine")}
        except CnnexportError as exc:
            line["stages"]["onnx_legacy"] = {"status": f"error ({exc})", "seconds": round(time.perf_counter() - t0, 1)}

    onnx_file = out / "dist" / f"{stem}.onnx"
    if "broken" in stages and name in BROKEN and onnx_file.exists():
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


def _first_stage(stages) -> str:
    """Where a model that never reached its stages records why (onnx in the full sweep)."""
    return "onnx" if "onnx" in stages else stages[0]


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
    android = bool(present) and set(present) <= set(ANDROID_STAGES)
    what = what or ("`--source timm`: a sample of timm's CNN families (TIMM_SAMPLE)" if timm_run else "every registry model")
    if android:
        out = ["# Zoo coverage — Android targets" + (" (timm)" if timm_run else ""), "",
               f"Produced by `benchmarks/zoo.py --android` {what}, random weights with BatchNorm statistics recalibrated "
               "on real data, through the ExecuTorch (.pte, XNNPACK delegate; fp32 and pt2e int8) and LiteRT (.tflite, "
               "litert-torch; fp32 and ai-edge-quantizer static int8) stages, each verified by its own runtime against "
               "PyTorch (ExecuTorch at batch 1, 2 and its planned maximum 32; LiteRT at batch 1 and 2; fp32 rules, int8 "
               "rules on the held-out calibration split).", ""]
    else:
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
            if android:  # the model's scratch folder says nothing
                text = re.sub(r"/tmp/\S+/", "", text)
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
    if android:
        out += _android_sections(lines, present)
    return "\n".join(out) + "\n"


# what names an operator in ExecuTorch's, torch.export's and litert-torch's messages
OP_NAME = re.compile(r"\b(?:(?:aten|prims|quantized_decomposed|dim_order_ops)(?:::|\.|_)|torchvision::|tfl\.|stablehlo\.)"
                     r"[A-Za-z0-9_.]*[A-Za-z0-9]")


def refusal(status: str) -> tuple[str, str]:
    """(operator or "-", reason) of a stage that did not pass, from its status line."""
    text = status
    for wrapper in ("error (", "fail ("):
        if text.startswith(wrapper):
            text = text[len(wrapper):].removesuffix(")")
    for inner, label in (("ExecuTorch could not lower the model (", "ExecuTorch lowering"),
                         ("torch.export refused the model (", "torch.export"),
                         ("cannot be loaded by the LiteRT interpreter (", "LiteRT interpreter")):
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
        out += ["| model | stage | operator | reason |", "|---|---|---|---|", *rows, "",
                "By reason (numbers as N):", "", "| stage | operator | reason | models |", "|---|---|---|---:|"]
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
        out += ["", f"## Operators outside XNNPACK ({s}, {len(programs)} programs)", "",
                "From each program's `portable_ops` (the nodes ExecuTorch's portable kernels run, not XNNPACK); "
                f"{sum(1 for st in programs if not st['portable_ops'])} programs have none; XNNPACK subgraphs per program: "
                f"{subgraphs[0]} to {subgraphs[-1]} (median {subgraphs[len(subgraphs) // 2]}). `alloc` is the memory node "
                "planned for a portable op's output.", "",
                "| operator | programs | nodes, all programs |", "|---|---:|---:|"]
        out += [f"| {op} | {models[op]} | {nodes[op]} |" for op, _ in models.most_common()]
    return out


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
    parser.add_argument("--stages", help="comma-separated stages to run (default: every stage of the full sweep: "
                        + ",".join(DEFAULT_STAGES) + "); onnx_legacy and broken only when named")
    parser.add_argument("--android", action="store_true", help="--stages " + ",".join(ANDROID_STAGES)
                        + " into zoo_android.jsonl / ZOO_ANDROID.md (zoo_timm_android.jsonl / ZOO_TIMM_ANDROID.md for timm)")
    parser.add_argument("--jsonl", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    timm_run = args.source == "timm"
    if args.android and args.stages:
        parser.error("--android sets --stages; give one of them")
    stages = ANDROID_STAGES if args.android else tuple(args.stages.split(",")) if args.stages else DEFAULT_STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    suffix = "_android" if args.android else ""
    args.jsonl = args.jsonl or (JSONL.with_name(f"zoo_timm{suffix}.jsonl") if timm_run else JSONL.with_name(f"zoo{suffix}.jsonl"))
    args.markdown = args.markdown or MARKDOWN.with_name(("ZOO_TIMM" if timm_run else "ZOO") + suffix.upper() + ".md")
    shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None

    if args.child:
        print(json.dumps(child(args.child, args.child_out, shape, args.samples, stages)))
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
                if stages != DEFAULT_STAGES:
                    cmd += ["--stages", ",".join(stages)]
                started = time.perf_counter()
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=REPO)
                    if done.returncode == 0 and done.stdout.strip():
                        line = json.loads(done.stdout.strip().splitlines()[-1])
                    else:
                        why = f"error ({child_death(done.returncode, done.stderr)})"
                        line = {"model": name, "stages": {_first_stage(stages): {"status": why}}}
                except subprocess.TimeoutExpired as exc:
                    told = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
                    steps = [s[2:] for s in told.splitlines() if s.startswith("• ")]
                    where = f"; last reported: {steps[-1][:120]}" if steps else ""
                    why = f"error (time limit of {args.timeout}s{where})"
                    line = {"model": name, "stages": {_first_stage(stages): {"status": why}}}
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
    # a table of its own (e.g. the dense models): only what it holds
    if args.jsonl == JSONL.with_name("zoo_android.jsonl") and len(lines) < len(everything):
        what = (f"on {len(lines)} of the registry's models (a subset: one or two per torchvision family, "
                "the others listed under Not run yet)")
    if args.jsonl not in (JSONL, JSONL.with_name("zoo_android.jsonl")) and not timm_run:
        everything, what = list(lines), f"on the models in `{args.jsonl.relative_to(REPO) if args.jsonl.is_relative_to(REPO) else args.jsonl.name}`"
    args.markdown.write_text(render(list(lines.values()), [n for n in everything if n not in lines], timm_run, what))
    print(f"wrote {args.markdown} ({len(lines)} models)")


if __name__ == "__main__":
    main()
