"""The calls a row's and a Format's "module:function" hooks must take, and the check that binds them.

A hook is a string so that a row imports nothing heavy (exporter/kinds.py); ``hook_problems`` resolves
each and binds it to its call, so a wrong signature fails tests/test_plugin_signatures.py (and a
plug-in's own tests) instead of a user's run.
"""

from __future__ import annotations

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
