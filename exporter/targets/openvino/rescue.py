"""How `--fallback auto` keeps layers in float in an int8 OpenVINO IR: NNCF's ignored scope.

A layer kept in float is its ONNX node's OpenVINO ops (the frontend names them after the node:
``node_Conv_98/WithoutBiases`` and its bias ``node_Conv_98``) and those of the unweighted nodes
feeding it, passed to NNCF as ignored names (``--exclude``): NNCF then puts no FakeQuantize on
their inputs. Each attempt is the row's own flow (convert, quantize, verify in OpenVINO on the
held-out split), built in a private folder.
"""

from __future__ import annotations

from exporter.rescue.flow import RescueTarget, plain_options
from exporter.rescue.search import Fix


def fixes(options) -> list[Fix]:
    """The cheap fixes, cheapest first: equalization, the other range estimator, twice the samples."""
    found = [] if options.equalize else [Fix("cross-layer equalization", {"equalize": True})]
    other = "percentile" if options.method == "minmax" else "minmax"
    return [*found, Fix(f"{other} calibration", {"method": other}), Fix("2x calibration samples", samples_factor=2)]


def openvino_names(source, by_module: dict[str, list[str]]) -> dict[str, list[str]]:
    """{module: the OpenVINO op names of its ONNX nodes} (an ONNX node N becomes ops named N or N/...)."""
    from exporter.targets.openvino.stage import import_openvino

    names = sorted(op.get_friendly_name() for op in import_openvino().convert_model(str(source)).get_ops())
    return {
        module: [name for node in nodes for name in names if name == node or name.startswith(node + "/")]
        for module, nodes in by_module.items()
    }


def target(req) -> RescueTarget:
    """The openvino row's rescue: weighted layers by module, NNCF told to ignore their ops."""
    from exporter.targets.onnx.rescue import nodes_by_module

    by_module = openvino_names(req.source, nodes_by_module(req.source))
    options = req.options

    def options_for(floated: tuple[str, ...], fix: Fix):
        names = [name for module in floated for name in by_module[module]]
        return plain_options(options, {"exclude": list(dict.fromkeys([*options.exclude, *names])), **fix.options})

    return RescueTarget([module for module, ops in by_module.items() if ops], options_for, fixes(options))
