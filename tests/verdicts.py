"""What a test may call "passes" and "refused": the verdict in the JSON report, the refusal's own words.

Exit 0 is also what a `skipped (reason)` verdict returns, and exit 2 is every bad input, so an
exit code alone cannot tell a verified artifact from an unverified one, or the refusal a test
means from any other error. These helpers read what the tool actually said.
"""

from __future__ import annotations

import json
import math
import re

# the numbers a pass rests on, per task of the output they judge
METRICS = ("max_rel_err", "cosine")


def _report(result) -> dict:
    """A CLI result (CliRunner or subprocess, with --json), its stdout text, or a report dict."""
    if isinstance(result, dict):
        return result
    stdout = getattr(result, "stdout", result)
    try:
        return json.loads(stdout)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"no JSON report on stdout (was --json given?): {str(stdout)[-500:]!r}") from exc


def _exit_code(result) -> int | None:
    for name in ("exit_code", "returncode"):
        if hasattr(result, name):
            return getattr(result, name)
    return None


def artifacts_of(report: dict) -> list[dict]:
    """The artifacts of a verb's report, or the stages of a run (its manifest, or --json's {"manifest": ...})."""
    if "artifacts" in report:
        return report["artifacts"]
    manifest = report.get("manifest", report)
    if "stages" in manifest:
        return [{"kind": name, **stage} for name, stage in manifest["stages"].items() if "verification" in stage]
    raise AssertionError(f"not a cnnexport report: keys {sorted(report)}")


def assert_verdict_pass(verification: dict, metrics: tuple[str, ...] = METRICS, where: str = "") -> dict:
    """One verification block says pass, and the numbers it rests on were measured (finite)."""
    assert verification["status"] == "pass", f"{where}: {verification['status']} ({verification.get('reason')})"
    for metric in metrics:
        value = verification.get(metric)
        assert value is not None and math.isfinite(value), f"{where}: pass without a measured {metric} ({value!r})"
    assert verification.get("checks"), f"{where}: pass without a single check"
    return verification


def passed(result, kind: str | None = None, metrics: tuple[str, ...] = METRICS, every: bool = True) -> dict:
    """Exit 0 and the verdict ``pass`` (with its metrics measured) for the artifact(s); returns the report.

    ``kind``: only that artifact (the last of that kind); else every artifact (``every``) or the last.
    """
    code = _exit_code(result)
    report = _report(result)
    assert code in (None, 0), f"exit {code}: {getattr(result, 'stderr', '')[-800:]}"
    artifacts = artifacts_of(report)
    assert artifacts, "the report lists no artifact"
    if kind is not None:
        chosen = [a for a in artifacts if a["kind"] == kind][-1:]
        assert chosen, f"no {kind} artifact among {[a['kind'] for a in artifacts]}"
    else:
        chosen = artifacts if every else artifacts[-1:]
    for artifact in chosen:
        assert_verdict_pass(artifact["verification"], metrics, artifact.get("path") or artifact["kind"])
    return report


def refused(result, code: int, *patterns: str, stream: str = "stderr") -> str:
    """The exit code, exactly one ``error:`` line (for our refusals) matching every regex pattern; returns it.

    Any other error (another message, a traceback, a usage error) fails the test.
    """
    text = getattr(result, stream)
    assert _exit_code(result) == code, f"exit {_exit_code(result)}, expected {code}: {text[-800:]}"
    assert "Traceback" not in text, text[-1500:]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"{len(errors)} error lines: {text[-800:]}"
    for pattern in patterns:
        assert re.search(pattern, errors[0]), f"{pattern!r} not in {errors[0]!r}"
    return errors[0]


def verified(verification: dict) -> dict:
    """``assert verified(art["verification"]) and ...``: pass, with its numbers measured; returns the block."""
    return assert_verdict_pass(verification)
