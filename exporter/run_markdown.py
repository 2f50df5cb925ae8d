"""report.md of a recipe run: the stage table, the pass rules and the bench, for people (the manifest is for machines)."""

from __future__ import annotations


def run_markdown(result) -> str:
    """report.md of a recipe run (an exporter.run.RunResult): the stage table, the pass rules, the bench."""
    m = result.manifest
    lines = [
        f"# cnnexport run: {m['recipe']['name']}",
        "",
        f"checkpoint `{m['checkpoint']['file']}` (sha256 {m['checkpoint']['sha256'][:12]}…)"
        + (
            f", model {m['model']['arch']} {m['model']['input_shape']}, {m['model']['num_classes']} classes"
            if m.get("model")
            else ""
        ),
        "",
        "| stage | artifact | status | max err/range | cosine | agreement | time | cached |",
        "|---|---|---|---|---|---|---|---|",
    ]
    from exporter.report import agreement_text, worst_error

    for o in result.outcomes:
        v = o.entry.get("verification", {}) if o.entry else {}
        files = ", ".join(f"`{f['path']}`" for f in o.entry.get("files", [])) if o.entry else "-"

        def fmt(x, spec):
            return "-" if x is None else format(x, spec)

        lines.append(
            f"| {o.name} | {files or '-'} | {o.status} | {fmt(worst_error(v), '.2e')} | {fmt(v.get('cosine'), '.6f')} "
            f"| {agreement_text(v)} | {o.seconds:.1f}s | {'yes' if o.cached else 'no'} |"
        )
    rules = sorted(
        {
            f"{o.entry['verification']['precision']}: {o.entry['verification']['rule']}"
            for o in result.outcomes
            if o.entry and o.entry.get("verification", {}).get("rule")
        }
    )
    lines += ["", *[f"- pass rule {r}" for r in rules], ""]
    if result.bench is not None:
        from exporter.measure.recommend import describe

        lines += [
            f"**{describe(result.bench['recommended'])}** (timings in `bench.json`; one run on a shared machine is noisy)",
            "",
            "| artifact | batch | images/s | vs onnxruntime fp32 |",
            "|---|---|---|---|",
        ]
        for r in result.bench["rows"]:
            if r["status"] == "ok":
                lines.append(
                    f"| {r['target']} | {r['batch']} | {r['images_per_s']:.1f} | "
                    f"{'-' if r['speedup'] is None else format(r['speedup'], '.2f') + 'x'} |"
                )
        lines.append("")
    return "\n".join(lines)
