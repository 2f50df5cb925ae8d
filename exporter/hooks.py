"""The calls a row's and a Format's "module:function" hooks must take, and the check that binds them.

A hook is a string so that a row imports nothing heavy (exporter/kinds.py); ``hook_problems`` resolves
each and binds it to its call, so a wrong signature fails tests/test_plugin_signatures.py (and a
plug-in's own tests) instead of a user's run. mypy checks the built-in hooks too: exporter/hook_types.py
(written by ``typed_hooks_source``, kept current by a test) assigns each to its protocol below.
"""

from __future__ import annotations

from typing import Any, Protocol

from exporter.rows import ArtifactKind, Format, resolve

# how each hook is called: its positional and keyword arguments (placeholders)
FORMAT_HOOKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "runner": (("path",), ("threads", "device")),  # Format.open(path, threads=..., device=...) -> Runner
    "detect": (("path",), ()),  # -> bool: a file no suffix names is this format's
    "kit": (("folder", "progress"), ()),  # -> dict | None: a folder standing for an artifact built elsewhere
    "checks": (("path", "precision", "input_sets"), ()),  # -> [Check | None]: checks beyond the outputs
}
ROW_HOOKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "stage": (("request",), ()),  # StageRequest -> StageOutput
    "build": (("request",), ()),  # BuildRequest -> [ArtifactResult, ...]
    "check": (("options",), ()),  # refuses bad options / a missing backend
    "from_recipe": (("options", "section", "out_dir", "base"), ()),  # -> options
    "verify_batches": (("options", "batch_sizes"), ()),  # -> the batch sizes the artifact accepts
    "extra_outputs": (("options",), ()),  # -> [(path, is_folder)]: a build kit
    "needs_of": (("options",), ()),  # -> the recipe stages it can read from, given its options
    "command": (("app",), ()),  # registers its hand-made verb on the Typer app
    "rescue": (("request",), ()),  # BuildRequest -> RescueTarget: how --fallback auto keeps layers in float
}


def hook_problems(record: ArtifactKind | Format) -> list[str]:
    """What is wrong with ``record``'s hooks: a module or function that does not import, or a function whose
    signature does not take the call FORMAT_HOOKS / ROW_HOOKS describe; [] when every hook resolves and binds."""
    import inspect

    problems = []
    calls = FORMAT_HOOKS if isinstance(record, Format) else ROW_HOOKS
    for field_name, (positional, keywords) in calls.items():
        dotted = getattr(record, field_name, "")
        if not isinstance(dotted, str) or not dotted:
            continue
        where = f"{type(record).__name__} {record.name}: {field_name}={dotted!r}"
        try:
            function = resolve(dotted)
        except (ImportError, AttributeError, ValueError) as exc:
            problems.append(f"{where} does not resolve ({exc})")
            continue
        try:
            inspect.signature(function).bind(*positional, **dict.fromkeys(keywords))
        except TypeError as exc:
            problems.append(f"{where} cannot be called as {field_name}({', '.join(positional + keywords)}): {exc}")
    return problems


class OneArgument(Protocol):  # stage, build, check, verify_batches' options-only kin, extra_outputs, needs_of, command
    def __call__(self, argument: Any, /) -> Any: ...


class TwoArguments(Protocol):  # detect's kin: kit(folder, progress), verify_batches(options, batch_sizes)
    def __call__(self, first: Any, second: Any, /) -> Any: ...


class ThreeArguments(Protocol):  # checks(path, precision, input_sets)
    def __call__(self, first: Any, second: Any, third: Any, /) -> Any: ...


class FourArguments(Protocol):  # from_recipe(options, section, out_dir, base)
    def __call__(self, first: Any, second: Any, third: Any, fourth: Any, /) -> Any: ...


class RunnerFactory(Protocol):  # Format.open(path, threads=..., device=...)
    def __call__(self, path: Any, /, *, threads: Any, device: Any) -> Any: ...


def protocol_of(positional: tuple[str, ...], keywords: tuple[str, ...]) -> str:
    """The protocol above that a hook called with these arguments must satisfy."""
    if keywords:
        return "RunnerFactory"
    return ("OneArgument", "TwoArguments", "ThreeArguments", "FourArguments")[len(positional) - 1]


def typed_hooks_source(records: list[ArtifactKind | Format]) -> str:
    """exporter/hook_types.py's text: each built-in hook assigned to its protocol, for mypy to check."""
    lines, modules = [], set()
    for record in records:
        calls = FORMAT_HOOKS if isinstance(record, Format) else ROW_HOOKS
        for field_name, call in calls.items():
            dotted = getattr(record, field_name, "")
            if not isinstance(dotted, str) or not dotted:
                continue
            module, function = dotted.split(":")
            modules.add(module)
            label = f"{type(record).__name__.lower()}_{record.name}_{field_name}".replace("-", "_")
            lines.append(f"    {label}: {protocol_of(*call)} = {module}.{function}")
    header = [
        '"""Written by exporter.hooks.typed_hooks_source (tests/test_plugin_signatures.py keeps it current): mypy',
        "checks every built-in row's and Format's string hook against the call it gets. Imports nothing at run time.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import TYPE_CHECKING",
        "",
        "if TYPE_CHECKING:",
        *(f"    import {module}" for module in sorted(modules)),
        "    from exporter.hooks import FourArguments, OneArgument, RunnerFactory, ThreeArguments, TwoArguments",
        "",
    ]
    return "\n".join([*header, *lines]) + "\n"
