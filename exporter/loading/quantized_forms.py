"""What torch.ao quantization leaves in a checkpoint, and how much of it cnnexport can use.

- A model *prepared* by ``torch.ao.quantization.prepare_qat`` / ``prepare_qat_fx`` (or ``prepare``
  for post-training calibration) holds its float weights plus observer and fake-quantize buffers
  (``activation_post_process.*``, ``weight_fake_quant.*``: ``min_val``/``max_val``, which stay
  +inf/-inf until an observer runs, ``scale``, ``zero_point``, ``eps``, ``fake_quant_enabled``,
  ``observer_enabled``). Those buffers are not weights: they are left out, and the float network is
  what gets exported. ``fuse_modules_qat`` folds a BatchNorm into the conv before it
  (``ConvBn2d``, ``ConvBnReLU2d``): the conv weight stays under ``N.weight`` and the BatchNorm's
  parameters move to ``N.bn.*`` while the BatchNorm itself becomes an ``Identity``; they are moved
  back to the BatchNorm of the float architecture.
- A *converted* model (``torch.ao.quantization.convert`` / ``convert_fx``) holds int8 tensors with
  ``scale``/``zero_point`` and ``_packed_params``: there is no float network left in it, so it is
  refused with a sentence that says what to pass instead.
"""

from __future__ import annotations

import re

# module names torch.ao gives observers and fake-quantize modules (eager: activation_post_process,
# FX: activation_post_process_N; QAT weights: weight_fake_quant)
_OBSERVER_PART = re.compile(r"^(activation_post_process(_\d+)?|weight_fake_quant|bias_fake_quant)$")
_BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# packages of the modules torch.ao.quantization.convert puts in place of float ones
_QUANTIZED_PACKAGES = (
    "torch.ao.nn.quantized",
    "torch.nn.quantized",
    "torch.ao.nn.intrinsic.quantized",
    "torch.nn.intrinsic.quantized",
    "torch.ao.nn.quantized.dynamic",
    "torch.ao.nn.quantized.reference",
)

QUANTIZED_ADVICE = (
    "cnnexport exports float models: pass the float checkpoint (the state_dict saved before prepare/convert) "
    "and use `cnnexport quantize` for an int8 artifact"
)


def observer_keys(state_dict: dict) -> list[str]:
    """Keys of observer / fake-quantize buffers (any module on the key's path is one)."""
    return [k for k in state_dict if any(_OBSERVER_PART.match(part) for part in str(k).split(".")[:-1])]


def is_quantized_state_dict(obj) -> bool:
    """A converted (int8) model's state_dict: quantized tensors, or packed Linear/conv parameters."""
    import torch

    if not isinstance(obj, dict) or not obj:
        return False
    if any(isinstance(v, torch.Tensor) and v.is_quantized for v in obj.values()):
        return True
    return any(str(k).endswith(("_packed_params._packed_params", "_packed_params.dtype")) for k in obj)


def quantized_module_names(module) -> list[str]:
    """Class names of the converted (quantized) modules inside ``module``.

    Walks ``_modules`` through ``vars`` only: a converted model unpickled by torch.load misses
    attributes (even ``_modules`` on its quantized convolutions), so ``modules()`` itself raises.
    """
    found, stack, seen = [], [module], set()
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        qualified = _class_path(m)
        if qualified.startswith(_QUANTIZED_PACKAGES):
            found.append(qualified.rsplit(".", 1)[-1])
        children = vars(m).get("_modules") if hasattr(m, "__dict__") else None
        try:  # a dict, or a ScriptModule's OrderedModuleDict
            stack.extend(c for c in children.values() if c is not None)  # type: ignore[union-attr]  # None: caught below
        except Exception:  # noqa: BLE001 - no children to walk
            pass
    return sorted(set(found))


def _class_path(module) -> str:
    """``package.module.Class`` of a module; a TorchScript module's is its scripted class's."""
    script = vars(module).get("_c") if hasattr(module, "__dict__") else None
    if script is not None:
        try:
            name = script._type().qualified_name()
        except Exception:  # noqa: BLE001 - not a ScriptModule after all
            name = ""
        if name:
            return re.sub(r"\.___torch_mangle_\d+", "", name.removeprefix("__torch__."))
    cls = type(module)
    return f"{cls.__module__}.{cls.__name__}"


def quantized_globals(path) -> list[str]:
    """Converted-module classes a pickled file references (read from its pickle opcodes; nothing runs)."""
    import zipfile

    import torch

    if zipfile.is_zipfile(path):
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - an odd zip: nothing to say
            return []
    else:
        names = _legacy_pickle_globals(path)
    return [n for n in names if n.startswith(_QUANTIZED_PACKAGES)]


def _legacy_pickle_globals(path) -> list[str]:
    """Globals named by the pickles of a legacy (non-zip) torch.save file: its magic number,
    protocol, system info and object pickles come first, then raw storage bytes. Opcodes only."""
    import pickletools

    names: list[str] = []
    with open(path, "rb") as fh:
        for _ in range(4):
            strings: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(fh):
                    if op.name == "GLOBAL":
                        names.append(str(arg).replace(" ", "."))
                    elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                        strings.append(str(arg))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
            except Exception:  # noqa: BLE001 - not (or no more) pickles
                break
    return names


def _bn_guess(conv: str) -> str:
    """Where the BatchNorm fused into ``conv`` sat in the float model, by the usual naming.

    ``features.0.0`` -> ``features.0.1`` (nn.Sequential, torchvision's Conv2dNormActivation),
    ``layer1.0.conv1`` -> ``layer1.0.bn1``, ``conv`` -> ``bn``; otherwise ``conv.bn`` (placed
    from the architecture's own module order once it is built, see ``place_fused_batchnorms``).
    """
    parent, _, last = conv.rpartition(".")
    lead = parent + "." if parent else ""
    if last.isdigit():
        return f"{lead}{int(last) + 1}"
    if "conv" in last:
        i = last.rfind("conv")
        return lead + last[:i] + "bn" + last[i + 4 :]
    return conv + ".bn"


def drop_observers(state_dict: dict) -> tuple[dict, list[str]]:
    """(the state_dict without observer/fake-quantize buffers, the keys left out)."""
    dropped = observer_keys(state_dict)
    if not dropped:
        return state_dict, []
    gone = set(dropped)
    return {k: v for k, v in state_dict.items() if k not in gone}, dropped


def unfuse_batchnorms(state_dict: dict) -> tuple[dict, dict[str, str]]:
    """Move ``N.bn.*`` of fused conv+BatchNorm QAT modules to the BatchNorm's float name (guessed).

    Returns (state_dict, {BatchNorm prefix used: conv prefix it was fused into}).
    """
    out = dict(state_dict)
    fused: dict[str, str] = {}
    convs = [k[: -len(".bn.running_var")] for k in state_dict if str(k).endswith(".bn.running_var")]
    for conv in convs:
        if f"{conv}.weight" not in out:
            continue
        guess = _bn_guess(conv)
        if guess != conv + ".bn" and any(str(k).startswith(guess + ".") for k in out):
            guess = conv + ".bn"  # that name is taken: leave it to the architecture's module order
        for part in _BN_PARTS:
            if f"{conv}.bn.{part}" in out:
                out[f"{guess}.{part}"] = out.pop(f"{conv}.bn.{part}")
        fused[guess] = conv
    return out, fused


def prepared_note(dropped: list[str], fused: dict[str, str]) -> str:
    qat = any("fake_quant" in str(k) for k in dropped)
    how = (
        "quantization-aware training by torch.ao (prepare_qat / prepare_qat_fx)"
        if qat
        else "post-training quantization by torch.ao (prepare / prepare_fx: observers)"
    )
    return (
        f"a model prepared for {how}: left out its {len(dropped)} observer/fake-quantize buffers"
        + (f" and moved the {len(fused)} BatchNorm(s) fused into convs for QAT back to their own layers" if fused else "")
        + "; exporting the float model (use `cnnexport quantize` for an int8 artifact)"
    )


def place_fused_batchnorms(module, state_dict: dict, fused: dict[str, str]) -> dict:
    """Move fused BatchNorm weights whose guessed name is not a BatchNorm of ``module`` to the first
    free BatchNorm after their conv in the module's own order (the order its forward was written in)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if not fused:
        return state_dict
    modules = dict(module.named_modules())
    order = list(modules)
    taken = {n for n in order if isinstance(modules[n], _BatchNorm) and f"{n}.running_var" in state_dict}
    out = dict(state_dict)
    for guess, conv in fused.items():
        if isinstance(modules.get(guess), _BatchNorm) or conv not in modules or f"{guess}.running_var" not in out:
            continue
        after = order[order.index(conv) + 1 :]
        target = next((n for n in after if isinstance(modules[n], _BatchNorm) and n not in taken), None)
        if target is None:
            continue
        taken.add(target)
        for part in _BN_PARTS:
            if f"{guess}.{part}" in out:
                out[f"{target}.{part}"] = out.pop(f"{guess}.{part}")
    return out
