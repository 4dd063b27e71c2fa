"""What the Label map panel keeps per scene, and the engine jobs it runs in workers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.label.messages import for_the_panel


@dataclass
class SceneEntry:
    """One scene of the list: its header, the user's band choice and area of interest (None: the
    engine's choice, the whole scene), its latest plan or problem, and its outputs once labelled."""

    path: str
    info: Any = None          # labelling.source.SceneInfo
    bands: tuple[int, ...] | None = None
    area: Any = None          # labelling.options.PixelWindow
    plan: Any = None          # labelling.scene.ScenePlan
    error: str = ""
    result: Any = None        # labelling.scene.LabelResult

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def ready(self) -> bool:
        return self.plan is not None and not self.plan.blocked and not self.error


@dataclass
class PlanOutcome:
    path: str
    info: Any = None
    plan: Any = None
    error: str = ""


def plan_job(bundle, path: str, options) -> PlanOutcome:
    """describe_scene + plan_scene (worker thread); a problem with the scene is reported, not raised."""
    from sembridge_engine.labelling.scene import plan_scene
    from sembridge_engine.labelling.source import describe_scene

    outcome = PlanOutcome(path)
    try:
        outcome.info = describe_scene(path)
        outcome.plan = plan_scene(bundle, path, options)
    except (OSError, ValueError) as error:
        outcome.error = for_the_panel(str(error))
    return outcome


def existing_outputs(jobs: list[tuple[str, Any]], out_dir: Path) -> list[Path]:
    """Files that labelling these (scene, options) jobs into ``out_dir`` would replace."""
    from sembridge_engine.labelling.scene import output_paths

    return [path for scene, options in jobs for path in output_paths(out_dir, Path(scene), options).values()
            if path.exists()]


def label_job(bundle, jobs: list[tuple[str, Any]], out_dir: Path, callback, cancel) -> list:
    """label_scene for each (scene, options) in turn (worker thread); stops at the first failure."""
    from sembridge_engine.labelling.scene import label_scene

    return [label_scene(bundle, scene, out_dir, options, callback=callback, cancel=cancel) for scene, options in jobs]
