"""The table of artifact kinds: every registered row, read by the pipeline, recipes, `run`, bench and the CLI.

Everything that used to be an if-chain over kind names (runners.detect_kind / open_runner, bench's
folder globs and runner choice, the recipe bench's CPU kinds, the CLI's verbs) is read from these
rows (their records: exporter/rows.py). Importing this module registers the rows of
exporter/targets/' folders and of installed plug-ins (the ``cnnexport.targets`` entry point group,
see ``load_plugins``; docs/architecture.md, "Adding a target").
"""

from __future__ import annotations

from exporter.rows import REFERENCE_PACKAGES, ArtifactKind, Format, resolve

__all__ = ["REFERENCE_PACKAGES", "ArtifactKind", "Format", "resolve"]  # the records, where the table's users find them

KINDS: list[ArtifactKind] = []  # filled from exporter/targets/ (load_builtin_targets) and plug-ins (load_plugins)
BY_NAME = {k.name: k for k in KINDS}
PLUGIN_GROUP = "cnnexport.targets"


def register(row: ArtifactKind) -> ArtifactKind:
    """Add a row to the table (a plug-in's target); its verb, recipe section, runner and bench follow."""
    if row.name in BY_NAME:
        raise ValueError(f"artifact kind {row.name!r} is already registered")
    KINDS.append(row)
    BY_NAME[row.name] = row
    return row


def load_builtin_targets() -> None:
    """The rows of exporter/targets/' folders: registered as a plug-in's are, in their ORDER."""
    from exporter.targets import row_modules

    for module in row_modules():
        for row in module.ROWS:
            if row.name not in BY_NAME:
                register(row)


def load_plugins() -> None:
    """Rows from installed packages: each ``cnnexport.targets`` entry point names an ArtifactKind (or a list)."""
    from importlib.metadata import entry_points

    for point in entry_points(group=PLUGIN_GROUP):
        try:
            found = point.load()
            rows = list(found) if isinstance(found, (list, tuple)) else [found]
            if not all(isinstance(row, ArtifactKind) for row in rows):
                raise TypeError(f"{point.value} is not an ArtifactKind (or a list of them)")
        except Exception as exc:  # noqa: BLE001 - a broken plug-in must not take every verb down with it
            import sys

            print(
                f"cnnexport: ignoring the target plug-in {point.name} ({point.value}): {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            continue
        for row in rows:
            if row.name not in BY_NAME:
                register(row)


def formats() -> list[Format]:
    """Every Format some row uses, in table order."""
    return list({row.format.name: row.format for row in KINDS}.values())


def runtime_of(kind: str) -> str:
    """What executes an artifact kind (a Format's name; "pytorch" is the eager baseline, run by torch)."""
    found = next((f for f in formats() if f.name == kind), None)
    return "torch" if found is None and kind == "pytorch" else (found.runtime or found.name) if found else kind


def versioned_packages() -> tuple[str, ...]:
    """Every backend some row names, in table order: what reports list and caches key on."""
    out: list[str] = []
    for row in KINDS:
        out += [p for p in row.versioned() if p not in out]
    return tuple(out)


def get(name: str) -> ArtifactKind:
    from exporter.errors import BadInputError

    if name not in BY_NAME:
        raise BadInputError(f"unknown artifact kind {name!r}; choose one of {', '.join(BY_NAME)}")
    return BY_NAME[name]


load_builtin_targets()
load_plugins()
