"""Robustness in one run: the bad-input corpus and the verifier's fault matrix, summarized.

Run:  .venv/bin/python benchmarks/robustness.py [--json] [--keep DIR]

Uses the same case definitions as the tests (tests/corpus/make_corpus.py, tests/faults.py):
every corpus case goes through the real CLI (in process) and is judged on its exit code, its one
`error:` line, tracebacks, files left behind and hostile payloads; every fault is planted in a
freshly built artifact and checked with `cnnexport verify`, and every unmodified artifact is
checked too (a failure there is a false alarm). The faults go into two models: the small classifier
of tests/faults.py, and a YOLO11n trained by Ultralytics on drawn shapes (~40 s), judged by its boxes;
without Ultralytics the YOLO's cases and faults are reported as skipped. Prints the counts and the
kill rate; exits 1 if any traceback, partial file, payload run, missed fault or false alarm was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_corpus(root: Path) -> dict:
    from tests.corpus.make_corpus import make_corpus, run_case

    built = make_corpus(root)
    cases = [case for case in built if not case.skip]
    verdicts = [run_case(case, root) for case in cases]
    return {
        "cases_tried": len(verdicts),
        "skipped": {case.id: case.skip for case in built if case.skip},
        "clean_errors": sum(v.clean for v in verdicts),
        "tracebacks": sum(v.traceback for v in verdicts),
        "partial_files": sum(bool(v.partial_files) for v in verdicts),
        "harmed_inputs": sum(bool(v.harmed_inputs) for v in verdicts),
        "payloads_run": sum(v.payload_ran for v in verdicts),
        "by_input": {kind: sum(c.input == kind for c in cases) for kind in sorted({c.input for c in cases})},
        "problems": {v.case.id: v.problems for v in verdicts if not v.clean},
    }


def run_faults(folder: Path) -> dict:
    from tests.faults import FAULTS, KINDS, build_artifacts, matrix

    ckpt, artifacts, heldout = build_artifacts(folder)
    return run_matrix(folder, ckpt, artifacts, heldout, FAULTS, KINDS, matrix())


def run_detect_faults(folder: Path) -> dict | None:
    """The detection matrix on a YOLO trained here; None where Ultralytics is not importable."""
    from exporter.sources.ultralytics import restore_pil_open
    from tests.corpus.make_corpus import not_importable
    from tests.faults import DETECT_FAULTS, DETECT_KINDS, build_yolo_artifacts, detect_matrix

    if not_importable("ultralytics"):
        return None
    try:
        best, artifacts, heldout = build_yolo_artifacts(folder)
    finally:
        restore_pil_open()  # importing Ultralytics patched PIL's Image.open for the whole process
    return run_matrix(folder, best, artifacts, heldout, DETECT_FAULTS, DETECT_KINDS, detect_matrix())


def run_matrix(folder: Path, ckpt: Path, artifacts: dict, heldout: Path, faults: dict, kinds: dict, cells_to_try) -> dict:
    from tests.faults import faulty_name, verify_cli

    false_alarms = {kind: verify_cli(path, ckpt, kind, heldout) for kind, path in artifacts.items()}
    false_alarms = {kind: o.reason or f"exit {o.exit_code}" for kind, o in false_alarms.items() if o.exit_code != 0}
    cells, missed = {}, {}
    faulty_dir = folder / "faulty"
    faulty_dir.mkdir(exist_ok=True)
    for fault, kind in cells_to_try:
        faulty = faulty_dir / faulty_name(artifacts[kind], fault)
        faults[fault].inject(artifacts[kind], faulty, kind)
        outcome = verify_cli(faulty, ckpt, kind, heldout)
        caught = outcome.exit_code == 1
        cells[f"{fault} / {kind}"] = "caught" if caught else f"MISSED (exit {outcome.exit_code})"
        if not caught:
            missed[f"{fault} / {kind}"] = outcome.reason or outcome.stderr[-300:]
    injected = len(cells)
    caught = injected - len(missed)
    return {
        "artifact_kinds": list(kinds),
        "faults": list(faults),
        "faults_injected": injected,
        "faults_caught": caught,
        "false_alarms": len(false_alarms),
        "kill_rate": caught / injected if injected else 0.0,
        "cells": cells,
        "missed": missed,
        "false_alarm_reasons": false_alarms,
    }


def table(faults: dict) -> str:
    width = max(len(f) for f in faults["faults"]) + 2
    kinds = faults["artifact_kinds"]
    lines = ["fault".ljust(width) + "".join(k.rjust(12) for k in kinds)]
    for fault in faults["faults"]:
        row = fault.ljust(width)
        for kind in kinds:
            cell = faults["cells"].get(f"{fault} / {kind}")
            row += ("-" if cell is None else "caught" if cell == "caught" else "MISSED").rjust(12)
        lines.append(row)
    lines.append(
        "clean".ljust(width) + "".join(("FALSE ALARM" if k in faults["false_alarm_reasons"] else "pass").rjust(12) for k in kinds)
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--keep", type=Path, help="build the corpus and artifacts here and keep them")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="cnnexport-robustness-") as tmp:
        base = args.keep or Path(tmp)
        os.environ.setdefault("CNNEXPORT_CACHE", str(Path(tmp) / "cache"))  # keep the user's signature cache out of it
        started = time.perf_counter()
        corpus = run_corpus(base / "corpus")
        corpus_seconds = time.perf_counter() - started
        faults = run_faults(base / "faults")
        fault_seconds = time.perf_counter() - started - corpus_seconds
        detect = run_detect_faults(base / "detect_faults")
        detect_seconds = time.perf_counter() - started - corpus_seconds - fault_seconds
    seconds = {"corpus": round(corpus_seconds, 1), "faults": round(fault_seconds, 1), "detect_faults": round(detect_seconds, 1)}
    summary = {"corpus": corpus, "faults": faults, "detect_faults": detect, "seconds": seconds}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"bad-input corpus ({corpus_seconds:.0f}s): " + ", ".join(f"{k} {v}" for k, v in corpus["by_input"].items()))
        print(f"  cases tried      {corpus['cases_tried']}")
        if corpus["skipped"]:
            reasons = sorted(set(corpus["skipped"].values()))
            print(f"  skipped          {len(corpus['skipped'])}  ({'; '.join(reasons)})")
        print(f"  clean errors     {corpus['clean_errors']}")
        print(f"  tracebacks       {corpus['tracebacks']}  (must be 0)")
        print(f"  partial files    {corpus['partial_files']}  (must be 0)")
        print(f"  harmed inputs    {corpus['harmed_inputs']}  (must be 0)")
        print(f"  payloads run     {corpus['payloads_run']}  (must be 0)")
        for case_id, problems in corpus["problems"].items():
            print(f"  ! {case_id}: {'; '.join(problems)}")
        print_matrix(f"verifier fault injection ({fault_seconds:.0f}s)", faults)
        if detect is None:
            print("detection fault injection: skipped (ultralytics is not importable; scripts/setup.sh installs it)")
        else:
            title = f"detection fault injection: YOLO11n trained by Ultralytics, judged by its boxes ({detect_seconds:.0f}s)"
            print_matrix(title, detect)
    matrices = [faults] + ([detect] if detect else [])
    bad = (
        corpus["tracebacks"]
        or corpus["partial_files"]
        or corpus["harmed_inputs"]
        or corpus["payloads_run"]
        or corpus["clean_errors"] != corpus["cases_tried"]
        or any(m["missed"] or m["false_alarms"] for m in matrices)
    )
    return 1 if bad else 0


def print_matrix(title: str, faults: dict) -> None:
    print(title)
    print("  " + table(faults).replace("\n", "\n  "))
    print(f"  faults injected  {faults['faults_injected']}")
    print(f"  faults caught    {faults['faults_caught']}  (must be all)")
    print(f"  false alarms     {faults['false_alarms']}  (must be 0)")
    print(f"  kill rate        {faults['kill_rate']:.0%}")
    for cell, reason in faults["missed"].items():
        print(f"  ! missed {cell}: {reason}")
    for kind, reason in faults["false_alarm_reasons"].items():
        print(f"  ! false alarm on clean {kind}: {reason}")


if __name__ == "__main__":
    raise SystemExit(main())
