"""No hidden signatures: every "module:function" hook of every row and Format binds to its documented call.

A row names its stage, build flow, option check, recipe hook and batch-size hook, and a Format its
runner factory, file detector and kit checker, as strings (a row imports nothing heavy). Here each is
resolved and bound to the call exporter.hooks.ROW_HOOKS / FORMAT_HOOKS describe, so a wrong
signature fails the suite rather than a user's run (issue 41: the TensorRT row's `stage` named
a function no stage call could take, and nothing noticed).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter import hooks, kinds


@pytest.mark.parametrize("row", kinds.KINDS, ids=[r.name for r in kinds.KINDS])
def test_every_hook_of_every_row_binds_to_its_call(row):
    assert hooks.hook_problems(row) == []
    assert row.stage or row.build not in ("exporter.build:from_checkpoint", "exporter.build:from_onnx"), (
        f"{row.name} has no stage, so its build flow must make the artifact itself"
    )


@pytest.mark.parametrize("fmt", kinds.formats(), ids=[f.name for f in kinds.formats()])
def test_every_hook_of_every_format_binds_to_its_call(fmt):
    assert hooks.hook_problems(fmt) == []


def test_a_wrong_signature_or_a_missing_function_is_named():
    onnx_row = kinds.get("onnx")
    wrong = replace(onnx_row, stage="exporter.targets.onnx.stage:export")  # export(loaded, staging_dir, name, ...)
    (problem,) = hooks.hook_problems(wrong)
    assert problem.startswith("ArtifactKind onnx: stage='exporter.targets.onnx.stage:export' cannot be called as stage(request)")
    missing = replace(onnx_row, check="exporter.targets.onnx.stage:no_such_check")
    assert "does not resolve" in hooks.hook_problems(missing)[0]
    runner = replace(kinds.get("onnx").format, runner="exporter.targets.onnx.stage:make")  # make(req): takes no threads / device
    assert "cannot be called as runner(path, threads, device)" in hooks.hook_problems(runner)[0]


def test_a_row_without_a_stage_says_so_when_asked_for_one():
    with pytest.raises(ValueError, match="its build flow makes the artifact"):
        kinds.get("tensorrt").stage_function()


def test_the_files_beside_an_artifact_come_from_its_format():
    from exporter.build import companions

    def names(path):
        return [str(p) for p in companions(path)]

    common = ["m.xml.report.json", "m.rejected.xml", "m.rejected.xml.report.json"]
    assert names("m.xml") == [*common, "m.bin", "m.rejected.bin"]  # OpenVINO: the weights beside
    assert names("m.onnx")[-1] == "m.onnx.data" and names("m.plan")[-1] == "m.plan.json"
    assert names("m.pte") == ["m.pte.report.json", "m.rejected.pte", "m.rejected.pte.report.json"]


def test_mypy_sees_every_built_in_hook_through_exporter_hook_types():
    """exporter/hook_types.py assigns each built-in hook to its protocol, so mypy (a CI gate) fails a wrong
    signature; this keeps the file current with the rows (regenerate: hooks.typed_hooks_source)."""
    from pathlib import Path

    import exporter

    records = [*kinds.KINDS, *kinds.formats()]
    written = (Path(exporter.__file__).parent / "hook_types.py").read_text(encoding="utf-8")
    expected = hooks.typed_hooks_source(records)
    assert written == expected, (
        "exporter/hook_types.py is stale: write hooks.typed_hooks_source([*kinds.KINDS, *kinds.formats()]) into it"
    )
    assert written.count(": OneArgument = ") >= len(kinds.KINDS) and "RunnerFactory = " in written
    assert hooks.protocol_of(("path",), ("threads", "device")) == "RunnerFactory"
    assert hooks.protocol_of(("options", "section", "out_dir", "base"), ()) == "FourArguments"
