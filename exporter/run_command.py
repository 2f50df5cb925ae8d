"""`cnnexport run`'s flow: a recipe over one checkpoint or a fleet, planned (--dry-run) or run, and how it ends.

exporter/cli/recipes.py parses the flags into a RunRequest, calls run_command and prints the RunOutcome;
the choices (which run, which folder, which error and exit code) are made here, where a test reaches them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exporter import recipe as recipe_mod
from exporter.errors import EXIT_BAD_INPUT, EXIT_VERIFICATION_FAILED, BadInputError
from exporter.fleet import FleetResult, collect, members, run_fleet
from exporter.recipe import Recipe
from exporter.run import PlannedStage, RunResult, plan, run_recipe


@dataclass(frozen=True)
class RunRequest:
    """`cnnexport run`'s flags, parsed."""

    recipe: str  # a YAML file or a shipped recipe's name
    checkpoints: list[Path] = field(default_factory=list)
    output: Path | None = None
    overrides: list[str] = field(default_factory=list)  # --set KEY=VALUE
    calib: str | None = None
    jobs: int = 1
    from_list: Path | None = None
    pattern: str | None = None  # --glob
    engine: str = "auto"
    ray_address: str | None = None
    dry_run: bool = False
    sign_key: Path | None = None  # sign each passing run folder (exporter/release/folder.py)

    @property
    def is_fleet(self) -> bool:
        """Not exactly one checkpoint, or --from, --glob or --engine ray: one folder per checkpoint, fleet.json and fleet.md."""
        return len(self.checkpoints) != 1 or self.from_list is not None or self.pattern is not None or self.engine == "ray"


@dataclass(frozen=True)
class RunPlan:
    """What --dry-run shows: each stage with its input and options and, for a fleet, each checkpoint's folder."""

    recipe: str
    out_dir: Path
    stages: list[dict]
    fleet: list[dict] | None = None  # None: one checkpoint


@dataclass(frozen=True)
class RunOutcome:
    """What `cnnexport run` did (one of plan, run, fleet) and the error it ends with: (sentence, exit code), None for 0."""

    plan: RunPlan | None = None
    run: RunResult | None = None
    fleet: FleetResult | None = None
    error: tuple[str, int] | None = None
    signed: list[dict] = field(default_factory=list)  # what --sign-key signed, a report per folder


def run_command(request: RunRequest, progress: Callable[[str], None], detail: Callable[[str], None] | None = None) -> RunOutcome:
    """The recipe loaded with the overrides and planned, then run (or only planned) over one checkpoint or a fleet.

    ``progress`` gets a line per stage (per checkpoint for a fleet); ``detail`` a fleet's per-stage lines (-v).
    """
    if request.sign_key is not None and not request.dry_run:
        from exporter.release.folder import signing_ready

        signing_ready(request.sign_key)  # a bad key or no model-signing: exit 2 / 3 before any stage runs
    overrides = [*request.overrides, *([f"calibration.data={request.calib}"] if request.calib else [])]
    recipe = recipe_mod.load(request.recipe, overrides)
    stages = plan(recipe)
    recipe_file = (("the recipe", Path(request.recipe)),) if Path(request.recipe).is_file() else ()
    if request.is_fleet:
        return _run_fleet(request, recipe, stages, recipe_file, progress, detail)
    return _run_one(request, recipe, stages, recipe_file, progress)


def _run_one(request: RunRequest, recipe: Recipe, stages: list[PlannedStage], recipe_file: tuple, progress) -> RunOutcome:
    """One checkpoint into -o (default dist/<checkpoint name>/); its first failed stage is the error."""
    checkpoint = request.checkpoints[0]
    if request.engine not in ("auto", "local"):
        raise BadInputError(f"--engine {request.engine}: choose one of auto, local, ray")
    out_dir = request.output or Path("dist") / checkpoint.name.split(".")[0]
    if request.dry_run:
        rows = [{"stage": s.spec.name, "input": s.upstream or str(checkpoint), "options": s.options} for s in stages]
        return RunOutcome(plan=RunPlan(recipe.name, out_dir, rows))
    result = run_recipe(recipe, checkpoint, out_dir, request.jobs, progress, reads=recipe_file)
    if not result.failed:
        return RunOutcome(run=result, signed=_signed(request, [out_dir], checkpoint, progress))
    first = result.failed[0]
    code = EXIT_VERIFICATION_FAILED if first.status == "fail" else EXIT_BAD_INPUT
    return RunOutcome(run=result, error=(f"stage {first.name}: {first.status}", code))


def _run_fleet(
    request: RunRequest, recipe: Recipe, stages: list[PlannedStage], recipe_file: tuple, progress, detail
) -> RunOutcome:
    """Each checkpoint of the fleet into its folder under -o (default dist/fleet/); any that did not pass is the error."""
    fleet = members(collect(list(request.checkpoints), request.from_list, request.pattern))
    out_dir = request.output or Path("dist") / "fleet"
    if request.dry_run:
        rows = [{"checkpoint": str(m.checkpoint), "folder": str(out_dir / m.folder)} for m in fleet]
        plan_rows = [{"stage": s.spec.name, "input": s.upstream or "the checkpoint", "options": s.options} for s in stages]
        return RunOutcome(plan=RunPlan(recipe.name, out_dir, plan_rows, rows))
    reads = (*recipe_file, *((("the --from list", request.from_list),) if request.from_list else ()))
    checkpoints = [m.checkpoint for m in fleet]
    result = run_fleet(recipe, checkpoints, out_dir, request.engine, request.jobs, progress, request.ray_address, reads, detail)
    if not result.failed:
        return RunOutcome(fleet=result, signed=_signed(request, [out_dir / m.folder for m in fleet], None, progress))
    summary = result.manifest["summary"]
    message = (
        f"{len(result.failed)} of {summary['checkpoints']} checkpoints did not pass "
        f"({summary['failed']} failed verification, {summary['errors']} errors); see {out_dir / 'fleet.md'}"
    )
    return RunOutcome(fleet=result, error=(message, EXIT_VERIFICATION_FAILED if result.verification_failed else EXIT_BAD_INPUT))


def _signed(request: RunRequest, folders: list[Path], checkpoint: Path | None, progress) -> list[dict]:
    """--sign-key: each run folder signed once every stage passed (a failed run is never signed)."""
    if request.sign_key is None:
        return []
    from exporter.release.folder import sign_folder

    return [sign_folder(folder, request.sign_key, checkpoint, progress) for folder in folders]
