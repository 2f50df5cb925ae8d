"""Robustness in one run: the bad-input corpus and the verifier's fault matrix, summarized.

Run:  .venv/bin/python benchmarks/robustness.py [--json] [--keep DIR]

Uses the same case definitions as the tests (tests/corpus/make_corpus.py, tests/faults.py):
every corpus case goes through the real CLI (in process) and is judged on its exit code, its one
`error:` line, tracebacks, files left behind and hostile payloads; every fault is planted in a
freshly built artifact and checked with `cnnexport verify`, and every unmodified artifact is
checked too (a failure there is a false alarm). Prints the counts and the kill rate; exits 1 if
any traceback, partial file, payload run, missed fault or false alarm was seen.
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

    cases = make_corpus(root)
    verdicts = [run_case(case, root) for case in cases]
    return {
        "cases_tried": len(verdicts),
        "clean_errors": sum(v.clean for v in verdicts),
        "tracebacks": sum(v.traceback for v in verdicts),
        "partial_files": sum(bool(v.partial_files) for v in verdicts),
        "harmed_inputs": sum(bool(v.harmed_inputs) for v in verdicts),
        "payloads_run": sum(v.payload_ran for v in verdicts),
        "by_input": {kind: sum(c.input == kind for c in cases) for kind in sorted({c.input for c in cases})},
        "problems": {v.case.id: v.problems for v in verdicts if not v.clean},
    }


def run_faults(folder: Path) -> dict:
    from tests.faults import FAULTS, KINDS, build_artifacts, faulty_name, matrix, verify_cli

    ckpt, artifacts, heldout = build_artifacts(folder)
    false_alarms = {kind: verify_cli(path, ckpt, kind, heldout) for kind, path in artifacts.items()}
    false_alarms = {kind: o.reason or f"exit {o.exit_code}" for kind, o in false_alarms.items() if o.exit_code != 0}
    cells, missed = {}, {}
    faulty_dir = folder / "faulty"
    faulty_dir.mkdir(exist_ok=True)
    for fault, kind in matrix():
        faulty = faulty_dir / faulty_name(artifacts[kind], fault)
        FAULTS[fault].inject(artifacts[kind], faulty, kind)
        outcome = verify_cli(faulty, ckpt, kind, heldout)
        caught = outcome.exit_code == 1
        cells[f"{fault} / {kind}"] = "caught" if caught else f"MISSED (exit {outcome.exit_code})"
        if not caught:
            missed[f"{fault} / {kind}"] = outcome.reason or outcome.stderr[-300:]
    injected = len(cells)
    caught = injected - len(missed)
    return {
        "artifact_kinds": list(KINDS),
        "faults": list(FAULTS),
        "faults_injected": injected,
        "faults_caught": caught,
        "false_alarms": len(false_alarms),
        "kill_rate": caught / injected if injected else 0.0,
        "cells": cells,
        "missed": missed,
        "false_alarm_reasons": false_alarms,
    }


def table(faults: dict) -> str:
    from tests.faults import FAULTS, KINDS

    width = max(len(f) for f in FAULTS) + 2
    lines = ["fault".ljust(width) + "".join(k.rjust(12) for k in KINDS)]
    for fault in FAULTS:
        row = fault.ljust(width)
        for kind in KINDS:
            cell = faults["cells"].get(f"{fault} / {kind}")
            row += ("-" if cell is None else "caught" if cell == "caught" else "MISSED").rjust(12)
        lines.append(row)
    lines.append("clean".ljust(width) + "".join(("FALSE ALARM" if k in faults["false_alarm_reasons"] else "pass").rjust(12)
                                               for k in KINDS))
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
    summary = {"corpus": corpus, "faults": faults, "seconds": {"corpus": round(corpus_seconds, 1), "faults": round(fault_seconds, 1)}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"bad-input corpus ({corpus_seconds:.0f}s): " + ", ".join(f"{k} {v}" for k, v in corpus["by_input"].items()))
        print(f"  cases tried      {corpus['cases_tried']}")
        print(f"  clean errors     {corpus['clean_errors']}")
        print(f"  tracebacks       {corpus['tracebacks']}  (must be 0)")
        print(f"  partial files    {corpus['partial_files']}  (must be 0)")
        print(f"  harmed inputs    {corpus['harmed_inputs']}  (must be 0)")
        print(f"  payloads run     {corpus['payloads_run']}  (must be 0)")
        for case_id, problems in corpus["problems"].items():
            print(f"  ! {case_id}: {'; '.join(problems)}")
        print(f"verifier fault injection ({fault_seconds:.0f}s)")
        print("  " + table(faults).replace("\n", "\n  "))
        print(f"  faults injected  {faults['faults_injected']}")
        print(f"  faults caught    {faults['faults_caught']}  (must be all)")
        print(f"  false alarms     {faults['false_alarms']}  (must be 0)")
        print(f"  kill rate        {faults['kill_rate']:.0%}")
        for cell, reason in faults["missed"].items():
            print(f"  ! missed {cell}: {reason}")
        for kind, reason in faults["false_alarm_reasons"].items():
            print(f"  ! false alarm on clean {kind}: {reason}")
    bad = (corpus["tracebacks"] or corpus["partial_files"] or corpus["harmed_inputs"] or corpus["payloads_run"] or corpus["clean_errors"] != corpus["cases_tried"]
           or faults["missed"] or faults["false_alarms"])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
