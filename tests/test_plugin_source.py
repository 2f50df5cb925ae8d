"""A source is one row: a toy source written outside the package, registered through the ``cnnexport.sources`` entry point.

The toy reads weights saved with ``numpy.savez`` (a format no built-in source reads) and the
architecture's name stored beside them. Nothing in exporter/ knows it: the loader must ask it,
`inspect` and `onnx` must read the file through it, and the export must verify. A broken plug-in
is named on stderr and ignored. The entry points are registered at test time (importlib.metadata's
``entry_points`` answers with them), so nothing is installed.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from tests.conftest import build_model
from tests.verdicts import verified

TOY = '''
"""A toy cnnexport source: a state_dict saved with numpy.savez, its architecture's name under '__arch__'."""
import numpy as np

from exporter.loading.raw import RawCheckpoint
from exporter.loading.training_formats import Hints
from exporter.sources import Source


def recognises(found):
    return found.path.suffix == ".npz"


def read(found):
    import torch

    with np.load(found.path) as data:  # allow_pickle stays False: arrays only
        arrays = {name: data[name] for name in data.files}
    arch = str(arrays.pop("__arch__"))
    state_dict = {name: torch.from_numpy(value) for name, value in arrays.items()}
    hints = Hints(names=[(arch, "npz __arch__")])
    return RawCheckpoint(form="numpy npz", state_dict=state_dict, hints=hints, written_by="toy npz source")


SOURCE = Source(name="npz", stage="file", recognises=recognises, read=read, reads="numpy .npz weights")
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """register(name=value, ...): those ``cnnexport.sources`` entry points exist until the test ends."""
    from exporter import sources

    site = tmp_path / "site"
    site.mkdir()
    (site / "toy_source.py").write_text(TOY)
    (site / "broken_source.py").write_text("SOURCE = 'not a source'\n")
    monkeypatch.syspath_prepend(str(site))
    real = importlib.metadata.entry_points
    points: list = []

    def entry_points(**select):
        if select.get("group") == sources.PLUGIN_GROUP:
            return [p for p in points if p.group == sources.PLUGIN_GROUP]
        return real(**select)

    def register(**named: str) -> None:
        points.extend(importlib.metadata.EntryPoint(n, v, sources.PLUGIN_GROUP) for n, v in named.items())
        sources.plugins.cache_clear()

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    yield register
    sources.plugins.cache_clear()


@pytest.fixture
def npz_checkpoint(tmp_path):
    model = build_model("simple_cnn")
    arrays = {name: value.numpy() for name, value in model.state_dict().items()}
    path = tmp_path / "simple.npz"
    np.savez(path, __arch__=np.array("simple_cnn"), **arrays)
    return path, model


def test_the_toy_source_reads_its_files_and_the_export_verifies(cli, plugins, npz_checkpoint, tmp_path):
    from exporter import sources

    path, model = npz_checkpoint
    assert cli("inspect", path).exit_code == 2  # no built-in source reads an .npz
    plugins(npz="toy_source:SOURCE")
    assert [s.name for s in sources.at("file")][:2] == ["npz", "safetensors"]  # asked before the built-in sources
    r = cli("onnx", path, "-o", tmp_path / "simple.onnx", "--json")
    assert r.exit_code == 0, r
    report = r.json()
    info = report["model"]
    assert info["checkpoint_form"] == "numpy npz" and info["written_by"] == "toy npz source"
    assert info["arch"] == "simple_cnn" and info["arch_source"] == "npz __arch__"
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert verified(report["artifacts"][0]["verification"])


def test_a_broken_source_plug_in_is_named_and_skipped_not_fatal(cli, plugins, simple_cnn_ckpt, capsys):
    from exporter import sources

    plugins(broken="broken_source:SOURCE", missing="no_such_module:SOURCE")
    assert sources.plugins() == ()
    err = capsys.readouterr().err
    assert "ignoring the source plug-in broken (broken_source:SOURCE): TypeError" in err
    assert "ignoring the source plug-in missing (no_such_module:SOURCE): ModuleNotFoundError" in err
    r = cli("inspect", simple_cnn_ckpt, "--json")  # every built-in source still reads its files
    assert r.exit_code == 0, r
    assert r.json()["arch"] == "simple_cnn" and r.json()["checkpoint_form"] == "state_dict"


def test_the_built_in_sources_are_asked_in_the_order_the_docs_state():
    """docs/architecture.md's stage table is the order exporter/sources/__init__.py asks them in."""
    import re
    from pathlib import Path

    from exporter import sources

    page = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (folder|file|pickle|object) \| [^|]+ \| ([^|]+) \|$", page, re.M)
    stated = [(stage, name.strip()) for stage, names in rows for name in names.split(",")]
    assert [stage for stage, _ in rows] == list(sources.STAGES)
    assert stated == [(s.stage, s.name) for s in sources.registered()]
    assert all(s.reads for s in sources.built_in())  # each says what it reads
