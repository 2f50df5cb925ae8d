"""CI-native results: `--junit FILE` (a JUnit XML a CI server shows as tests) and, where GitHub Actions
sets $GITHUB_STEP_SUMMARY, the run's table appended there as Markdown. Exit codes are not changed by either.

A test case per artifact (classname the stage or kind, name the file) and one per output it returns
(name `FILE [output]`), failing with the verdict's reason, skipped with the reason it was not run.
"""

from __future__ import annotations

import os
from pathlib import Path

from exporter.errors import OutputError

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def rows_of_report(report: dict) -> list[dict]:
    """[{stage, name, seconds, verification}] of a verb's report (exporter.report.build_report)."""
    return [
        {"stage": a["kind"], "name": Path(a["path"]).name, "seconds": a.get("seconds", 0.0), "verification": a["verification"]}
        for a in report.get("artifacts", [])
    ]


def rows_of_run(result) -> list[dict]:
    """The same rows for a recipe run (an exporter.run.RunResult): a row per stage that ran."""
    rows = []
    for outcome in result.outcomes:
        entry = outcome.entry or {}
        files = entry.get("files") or [{"path": outcome.name}]
        verification = entry.get("verification") or {"status": "fail", "reason": outcome.status, "outputs": {}}
        rows.append({"stage": outcome.name, "name": files[0]["path"], "seconds": outcome.seconds, "verification": verification})
    return rows


def rows_of_fleet(result) -> list[dict]:
    """A row per checkpoint and stage of a fleet (an exporter.fleet.FleetResult): `FOLDER/stage`."""
    rows = []
    for member in result.rows:
        for stage, entry in (member.get("stages") or {}).items():
            status = entry.get("status", "")
            verdict = {
                "status": status if status in ("pass", "fail") else "skipped",
                "reason": "" if status == "pass" else status,
            }
            rows.append({"stage": stage, "name": f"{member['folder']}/{stage}", "seconds": 0.0, "verification": verdict})
        if member.get("error") and not member.get("stages"):
            rows.append(
                {
                    "stage": "load",
                    "name": member["folder"],
                    "seconds": 0.0,
                    "verification": {"status": "fail", "reason": member["error"]},
                }
            )
    return rows


def _case(suite, stage: str, name: str, seconds: float, status: str, reason: str, text: str = ""):
    import xml.etree.ElementTree as ET

    case = ET.SubElement(suite, "testcase", classname=stage, name=name, time=f"{seconds:.3f}")
    if status == "fail":
        ET.SubElement(case, "failure", message=reason or "verification failed", type="VerificationFailed").text = reason
    elif status != "pass":
        ET.SubElement(case, "skipped", message=reason or status)
    if text:
        ET.SubElement(case, "system-out").text = text
    return status


def junit_xml(rows: list[dict], suite_name: str) -> str:
    """The JUnit XML document of ``rows`` (one testsuite)."""
    import xml.etree.ElementTree as ET

    from exporter.verify import METRICS

    root = ET.Element("testsuites", name="cnnexport")
    suite = ET.SubElement(root, "testsuite", name=suite_name)
    statuses = []
    for row in rows:
        v = row["verification"]
        statuses.append(
            _case(
                suite, row["stage"], row["name"], row["seconds"], v.get("status", ""), v.get("reason") or "", v.get("rule") or ""
            )
        )
        for output, o in (v.get("outputs") or {}).items():
            metrics = ", ".join(f"{m} {o[m]:.6g}" for m in METRICS if isinstance(o.get(m), (int, float)))
            statuses.append(
                _case(suite, row["stage"], f"{row['name']} [{output}]", 0.0, o.get("status", ""), o.get("reason") or "", metrics)
            )
    suite.set("tests", str(len(statuses)))
    suite.set("failures", str(statuses.count("fail")))
    suite.set("skipped", str(sum(s not in ("pass", "fail") for s in statuses)))
    suite.set("errors", "0")
    suite.set("time", f"{sum(r['seconds'] for r in rows):.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, rows: list[dict], suite_name: str) -> None:
    """The JUnit file, written whole (temp file + rename); an unwritable place is exit 2."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(junit_xml(rows, suite_name))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write --junit {path} ({exc.strerror or exc})") from None


def markdown_table(rows: list[dict], title: str) -> str:
    """The rows as a Markdown table, for $GITHUB_STEP_SUMMARY."""
    from exporter.report import agreement_text, worst_error

    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"### {title}",
        "",
        "| stage | artifact | status | max err/range | cosine | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        v = row["verification"]
        status = v.get("status", "") + (f" ({v['reason']})" if v.get("status") != "pass" and v.get("reason") else "")
        lines.append(
            f"| {row['stage']} | `{row['name']}` | {status.replace('|', '/')} | {fmt(worst_error(v), '.2e')} "
            f"| {fmt(v.get('cosine'), '.6f')} | {agreement_text(v)} |"
        )
    return "\n".join(lines) + "\n\n"


def append_step_summary(text: str) -> bool:
    """Append ``text`` to $GITHUB_STEP_SUMMARY when GitHub Actions set it; whether it was written."""
    target = os.environ.get(SUMMARY_ENV)
    if not target:
        return False
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError:
        return False  # a summary is a courtesy: never the reason a verified export fails
    return True


def publish(rows: list[dict], junit: Path | None, title: str) -> None:
    """--junit FILE and the GitHub step summary for one command's rows."""
    if junit is not None:
        write_junit(junit, rows, title)
    append_step_summary(markdown_table(rows, title))
