"""Reports: one JSON object for machines, a rich table for people."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Literal

from exporter.verify import Verdict


@dataclass
class ArtifactResult:
    kind: str
    path: Path
    sha256: str | None
    bytes: int | None
    seconds: float
    verification: Verdict
    details: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "files": [str(f) for f in self.files],
            "sha256": self.sha256,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "details": self.details,
            "verification": self.verification.to_dict(),
        }


def versions() -> dict:
    """cnnexport, Python and every backend a row of the stage table names (exporter.kinds), where installed."""
    from exporter import __version__
    from exporter.kinds import versioned_packages

    out = {"cnnexport": __version__, "python": platform.python_version()}
    for name in versioned_packages():
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def model_section(loaded=None, spec=None) -> dict:
    spec = spec or (loaded.spec if loaded else None)
    if spec is None:
        return {}
    section = {
        "arch": spec.arch,
        "num_classes": spec.num_classes,
        "outputs": [o.to_dict() for o in spec.outputs],
        "input_shape": list(spec.input_shape),
        "mean": list(spec.channel_mean()),
        "std": list(spec.channel_std()),
        "labels": list(spec.labels) if spec.labels else None,
        "interpolation": spec.interpolation,
        "crop_pct": spec.crop_pct,
        "resize": spec.resize,
    }
    if loaded is not None:
        section.update(
            params=loaded.params,
            checkpoint=str(loaded.path) if loaded.path else None,
            checkpoint_form=loaded.form,
            arch_source=loaded.arch_source,
            weights=loaded.weights,
            weights_prefix=loaded.prefix or None,
            left_out_keys=loaded.left_out,
            written_by=loaded.written_by,
            dropped_outputs=loaded.dropped_outputs,
            notes=list(loaded.notes),  # upcast fp16/bf16 weights, QAT buffers left out, prefixes stripped, ...
        )
    return section


def build_report(results: list[ArtifactResult], loaded=None, spec=None, extra: dict | None = None) -> dict:
    report = {
        "artifacts": [r.to_dict() for r in results],
        "model": model_section(loaded, spec),
        "versions": versions(),
    }
    if extra:
        report.update(extra)
    return report


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def agreement_text(metrics: dict) -> str:
    """The agreement column: top-1 of logits, pixels (and mIoU) of class maps, matched-box F1 (and IoU) of
    detections, each as its task writes it (exporter/tasks/); '-' for regression outputs."""
    from exporter import tasks

    return tasks.agreement_text(metrics)


def render_table(report: dict, console, all_outputs: bool = False) -> None:
    """One row per artifact with its worst output's numbers; ``all_outputs`` (-v) adds a row per output."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="cnnexport verification", title_justify="left")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("artifact", "left"),
        ("kind", "left"),
        ("size", "right"),
        ("time", "right"),
        ("status", "left"),
        ("output", "left"),
        ("max abs err", "right"),
        ("max err/range", "right"),
        ("cosine", "right"),
        ("agreement", "right"),
        ("batches", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")
    rules = []
    reasons: list[str] = []  # a status's reason goes under the table, numbered: a long one would widen every row
    for art in report["artifacts"]:
        v = art["verification"]
        colour = {"pass": "green", "fail": "red"}.get(v["status"], "yellow")
        status = v["status"]
        if status != "pass" and v.get("reason"):
            reasons.append(f"{Path(art['path']).name}: {v['reason']}")
            status = f"{status} [{len(reasons)}]"
        status = escape(status)
        outputs = v.get("outputs") or {}
        worst = v.get("worst_output")
        shown = outputs.get(worst, v) if worst else v
        label = "-" if not worst else (worst if len(outputs) == 1 else f"{worst} (worst of {len(outputs)})")
        table.add_row(
            escape(Path(art["path"]).name),
            art["kind"],
            _size(art["bytes"]),
            f"{art['seconds']:.1f}s",
            f"[{colour}]{status}[/{colour}]",
            escape(label),
            _fmt(shown.get("max_abs_err"), ".2e"),
            _fmt(shown.get("max_channel_rel_err") or shown.get("max_rel_err"), ".2e"),
            _fmt(shown.get("cosine"), ".6f"),
            agreement_text(shown),
            ",".join(map(str, v["batch_sizes"])) or "-",
        )
        if all_outputs and len(outputs) > 1:
            for name, row in outputs.items():
                colour = "green" if row["status"] == "pass" else "red"
                table.add_row(
                    "",
                    "",
                    "",
                    "",
                    f"[{colour}]{row['status']}[/{colour}]",
                    escape(f"{name} ({row['task']})"),
                    _fmt(row.get("max_abs_err"), ".2e"),
                    _fmt(row.get("max_channel_rel_err") or row.get("max_rel_err"), ".2e"),
                    _fmt(row.get("cosine"), ".6f"),
                    agreement_text(row),
                    "",
                )
        if v.get("rule") and v["rule"] not in rules:
            rules.append(f"{v['precision']}: {v['rule']}")
    console.print(table)
    for number, reason in enumerate(reasons, 1):
        console.print(escape(f"[{number}] {reason}"))
    for rule in dict.fromkeys(rules):
        console.print(f"[dim]pass rule {escape(rule)}[/dim]")
    for art in report["artifacts"]:
        for name, row in (art["verification"].get("outputs") or {}).items():
            if row.get("decided_by") == "noise":
                console.print(
                    f"[dim]{escape(Path(art['path']).name)} / {escape(name)}: error {row['max_rel_err']:.3g} x range is above "
                    f"the fixed fp32 rule but within the reference's own fp32-vs-fp64 noise "
                    f"({row['noise_rel_err']:.3g} x range); decided by the noise rule[/dim]"
                )


def install_report(result: ArtifactResult, loaded=None, spec=None, write: bool = True) -> None:
    """NAME.report.json beside an installed artifact (nothing for one that was not installed)."""
    if write and result.files:
        write_report(build_report([result], loaded, spec), result.path)


def write_report(report: dict, artifact_path: Path) -> Path:
    from exporter.fsutil import write_text_atomic

    target = Path(str(artifact_path) + ".report.json")
    write_text_atomic(target, to_json(report) + "\n")
    return target


def failure_sentence(result: ArtifactResult) -> str:
    """What a failed verification says: why, where the artifact went, and what to try."""
    where = f"kept as {result.path}" if result.files else "not written (use --keep-failed to keep it)"
    hint = ""
    if result.kind.startswith("int8") and result.details.get("method") == "minmax":
        hint = "; int8 options to try: --method percentile or entropy, --exclude OP_TYPE to keep such layers in float"
    first = result.verification.first_divergent
    if first and "module" in first:
        from exporter.rescue.debug import describe

        hint += f"; {describe(first)}; every layer: cnnexport debug ARTIFACT --checkpoint CKPT"
    return f"verification failed for {result.kind}: {result.verification.reason}; the artifact was {where}{hint}"


def worst_error(metrics: dict) -> float | None:
    """max err/range of a verdict: the whole output's, or per part / channel where only that was measured (detect)."""
    return metrics.get("max_rel_err") if metrics.get("max_rel_err") is not None else metrics.get("max_channel_rel_err")
