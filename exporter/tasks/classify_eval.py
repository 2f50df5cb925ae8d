"""`cnnexport eval` of a classifier: top-1 / top-k of every runner on labelled images, and its table."""

from __future__ import annotations


def evaluate_output(runners: dict, data, spec, output, batch_size: int, top: int, progress) -> dict:
    """Top-1 / top-k of every runner on labelled images (exporter/measure/eval.py streams them)."""
    from exporter.inputs import open_source
    from exporter.measure.eval import evaluate

    source = open_source(data, spec, split="test")
    progress(f"evaluating {len(runners)} model(s) on {source.description}")
    return evaluate(runners, source, batch_size, min(top, spec.num_classes), spec.labels)


def render(evaluation: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"accuracy on {escape(evaluation['source'])} ({evaluation['samples']} samples)", title_justify="left")
    for col in ("model", "top-1", f"top-{evaluation.get('top', 5)}", "agrees with reference", "top-1 drop"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, r in evaluation["results"].items():
        top5 = r.get(f"top{evaluation.get('top', 5)}")
        table.add_row(
            escape(name),
            f"{r['top1'] * 100:.2f}%",
            "-" if top5 is None else f"{top5 * 100:.2f}%",
            f"{r['agreement_with_reference'] * 100:.2f}%",
            f"{r['top1_drop_points']:+.2f} pts",
        )
    console.print(table)
    for name, r in list(evaluation["results"].items())[1:]:
        if r["disagreements"]:
            pairs = ", ".join(f"{d['reference']}->{d['artifact']} x{d['count']}" for d in r["disagreements"])
            console.print(f"[dim]{escape(name)} disagrees with the reference on: {escape(pairs)}[/dim]")
