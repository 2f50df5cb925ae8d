"""Checkpoint forms torch itself writes that cnnexport must refuse: exit 2 with a sentence, never exit 4.

``write_torch_form_cases(root)`` writes each file under ``root`` (real torch.save output of a
small registry model, simple_cnn; nothing binary is committed) and returns the cases as
``(case_id, cnnexport args, expected exit code, words the error line must contain)``:

* a torch.ao *converted* (int8) model: its state_dict, a training dict holding it, the whole
  model saved with torch.save (zip and legacy format), with and without ``--trust-pickle``,
  and its TorchScript archive;
* a model built on the meta device: its state_dict, and the whole model (``--trust-pickle``).

The forms cnnexport reads (TorchScript of torchvision models, QAT-prepared state_dicts, fp16 and
bf16 weights) are exported and verified by tests/test_checkpoint_torch_forms.py. Loading fails
before any output is written, so the commands write nothing under ``root``.
"""

from __future__ import annotations

from pathlib import Path

EXIT_BAD_INPUT = 2

QUANTIZED_WORDS = ("quantized", "torch.ao", "float checkpoint", "cnnexport quantize")
META_WORDS = ("holds no weight values", "meta device")


def simple_cnn(seed: int = 0):
    import torch

    from exporter import architectures

    torch.manual_seed(seed)
    return architectures.get("simple_cnn").build().eval()


def converted_simple_cnn():
    """simple_cnn through eager-mode QAT (QuantWrapper, fuse_modules_qat, prepare_qat, one batch) and convert."""
    import warnings

    import torch
    import torch.ao.quantization as tq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        model = tq.QuantWrapper(simple_cnn()).train()
        model.qconfig = tq.get_default_qat_qconfig("fbgemm")
        groups = [[f"module.features.{i}.{j}" for j in range(3)] for i in (0, 2, 4)]
        prepared = tq.prepare_qat(tq.fuse_modules_qat(model, groups))
        torch.manual_seed(1)
        prepared(torch.rand(4, 3, 32, 32))
        return tq.convert(prepared.eval())


def meta_simple_cnn():
    import torch

    from exporter import architectures

    with torch.device("meta"):
        return architectures.get("simple_cnn").build()


def write_torch_form_cases(root: Path) -> list[tuple[str, list[str], int, tuple[str, ...]]]:
    """Write the refused torch forms under ``root``; return (case_id, args, exit code, words) for each."""
    import warnings

    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, list[str], int, tuple[str, ...]]] = []

    def add(case_id: str, args: list, words: tuple[str, ...], code: int = EXIT_BAD_INPUT) -> None:
        cases.append((case_id, [str(a) for a in args], code, words))

    converted = converted_simple_cnn()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_sd = root / "quantized_state_dict.pt"
        torch.save(converted.state_dict(), quant_sd)
        quant_train = root / "quantized_training_dict.pth"
        torch.save({"model": converted.state_dict(), "epoch": 3}, quant_train)
        quant_module = root / "quantized_module.pt"
        torch.save(converted, quant_module)
        quant_legacy = root / "quantized_module_legacy.pt"
        torch.save(converted, quant_legacy, _use_new_zipfile_serialization=False)
        quant_script = root / "quantized_scripted.pt"
        torch.jit.script(converted).save(str(quant_script))

    add("torch-quantized-state-dict", ["inspect", quant_sd], ("quantized_state_dict.pt", *QUANTIZED_WORDS))
    add("torch-quantized-state-dict-arch", ["onnx", quant_sd, "--arch", "simple_cnn"], QUANTIZED_WORDS)
    add("torch-quantized-training-dict", ["inspect", quant_train], QUANTIZED_WORDS)
    add("torch-quantized-module", ["inspect", quant_module], ("whole quantized model", *QUANTIZED_WORDS))
    add("torch-quantized-module-trusted", ["onnx", quant_module, "--trust-pickle"], ("whole quantized model", *QUANTIZED_WORDS))
    add("torch-quantized-module-legacy", ["inspect", quant_legacy, "--trust-pickle"], ("whole quantized model", *QUANTIZED_WORDS))
    add("torch-quantized-torchscript", ["onnx", quant_script], ("whole quantized model", *QUANTIZED_WORDS))

    meta = meta_simple_cnn()
    meta_sd = root / "meta_state_dict.pt"
    torch.save(meta.state_dict(), meta_sd)
    meta_module = root / "meta_module.pt"
    torch.save(meta, meta_module)
    add("torch-meta-state-dict", ["inspect", meta_sd], ("meta_state_dict.pt", *META_WORDS))
    add("torch-meta-state-dict-arch", ["onnx", meta_sd, "--arch", "simple_cnn"], META_WORDS)
    add("torch-meta-module-trusted", ["inspect", meta_module, "--trust-pickle"], META_WORDS)
    add("torch-meta-module", ["inspect", meta_module], ("pickled Python objects", "--trust-pickle"))
    return cases


if __name__ == "__main__":  # pragma: no cover - python -m tests.corpus.torch_forms /tmp/forms
    import shlex
    import sys

    for case_id, args, code, words in write_torch_form_cases(Path(sys.argv[1] if len(sys.argv) > 1 else "torch-forms")):
        print(f"{case_id}: cnnexport {' '.join(shlex.quote(a) for a in args)}  -> exit {code}, words {words}")
