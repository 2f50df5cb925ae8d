"""Where output goes, and how a typed error becomes one sentence and an exit code."""

from __future__ import annotations

import logging
import sys
import warnings

import typer
from rich.markup import escape

from exporter.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_VERIFICATION_FAILED, CnnexportError

QUIET_LOGGERS = ("torch.utils._pytree", "torch.utils.cpp_extension")  # shown with -v


class Ui:
    """Tables and progress; on stderr when --json owns stdout."""

    def __init__(self, json_out: bool = False, quiet: bool = False, verbose: bool = False, junit=None, title: str = "cnnexport"):
        from rich.console import Console

        self.json_out, self.quiet, self.verbose = json_out, quiet, verbose
        self.junit, self.title = junit, title  # --junit FILE, and the suite / step-summary title
        width = None if sys.stdout.isatty() else 160
        self.out = Console(stderr=json_out, quiet=quiet, highlight=False, width=width)
        self.err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
        if not verbose:
            # torch's TorchScript/exporter deprecation chatter is not the user's problem.
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="torch")
            # torch's own log lines, printed on import by what other libraries load (torchao's Enum
            # registration in torch.utils._pytree, "No CUDA runtime is found" in cpp_extension)
            for name in QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)

    def progress(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[dim]• {escape(message)}[/dim]")

    def emit(self, report: dict) -> None:
        from exporter.report import render_table, to_json

        if self.json_out:
            self.json(report, to_json(report))
        else:
            render_table(report, self.out, all_outputs=self.verbose)
        if "artifacts" in report:
            from exporter.release.ci import rows_of_report

            self.publish(rows_of_report(report))

    def refuse_junit_on(self, *inputs) -> None:
        """--junit FILE must not be one of the files the command reads (exit 2 before any work)."""
        if self.junit is not None:
            from exporter.guard import refuse_clobbering

            refuse_clobbering([(self.junit, False)], [i for i in inputs if i[1] is not None], "--junit")

    def publish(self, rows: list[dict]) -> None:
        """--junit FILE, and the table in GitHub's step summary where $GITHUB_STEP_SUMMARY is set."""
        from exporter.release.ci import publish

        publish(rows, self.junit, self.title)

    def json(self, data, text: str | None = None) -> None:
        import json

        sys.stdout.write((text if text is not None else json.dumps(data, indent=2)) + "\n")
        sys.stdout.flush()


def fail(ui: Ui, message: str, code: int) -> None:
    ui.err.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (e.g. a CI timeout) cleans up like Ctrl-C instead of dying mid-write."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def run_guarded(ui: Ui, body) -> None:
    """Map typed errors to one sentence and an exit code; tracebacks only with -v."""
    _terminate_like_ctrl_c()
    try:
        body()
    except typer.Exit:
        raise
    except CnnexportError as exc:
        if ui.verbose:
            ui.err.print_exception()
        fail(ui, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail(ui, "interrupted; nothing was written under a final name", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - last line of defence: a bug, said plainly
        if ui.verbose:
            ui.err.print_exception()
        fail(
            ui,
            f"unexpected {type(exc).__name__}: {exc} (this is a bug in cnnexport; re-run with -v and report it)",
            EXIT_INTERNAL,
        )


def finish(ui: Ui, results: list, loaded=None, spec=None) -> None:
    """Emit one report for the artifacts made; exit 1 if any failed verification."""
    from exporter.report import build_report, failure_sentence

    ui.emit(build_report(results, loaded, spec))
    failed = [r for r in results if r.verification.status == "fail"]
    if failed:
        fail(ui, failure_sentence(failed[0]), EXIT_VERIFICATION_FAILED)
    if not ui.json_out and len(results) == 1 and results[0].files:
        ui.progress(f"wrote {results[0].path} and {results[0].path.name}.report.json")


def render_eval(ui: Ui, evaluation: dict) -> None:
    """An eval report's table, drawn by the task that made it (exporter/tasks/)."""
    from exporter import tasks

    tasks.render_eval(evaluation, ui.out)
