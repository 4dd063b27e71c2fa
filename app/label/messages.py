"""Engine messages reworded for the Label map panel: the engine speaks to command-line users
("--bands 3,2,1"); a panel user has widgets, not flags. Raw OS errors become a sentence."""
from __future__ import annotations

import re

# (engine wording, panel wording); applied in order.
REWORDINGS = (
    (r"choose them with --bands, 1-based, e\.g\. --bands 3,2,1", "choose them under 'Scene bands fed to the model'"),
    (r"--bands lists", "the band choice lists"),
    (r"or --force-scale to label anyway", "or tick 'Label anyway at this scale'"),
    (r"--force-scale", "'Label anyway at this scale'"),
    (r"set --tile / --footprint", "set the window size (Window) by hand"),
    (r"set --tile to", "set the window size (Window) to"),
    (r"use --device auto or cpu", "choose the automatic device or the CPU in File > Settings"),
    (r"re-export it with 'sembridge export RUN_DIR' or use --backend torch",
     "export the run again (Projects & runs > Classify with this model)"),
    (r"\(sembridge classify\)", "(on the Classify page)"),
    (r"\[Errno \d+\] ([^:\[\]]+): '([^']+)'", r"\1: \2"),
    (r"\[Errno \d+\] ", ""),
)
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z-]*)")


def for_the_panel(message: str) -> str:
    """``message`` without command-line flags or raw errno prefixes."""
    for pattern, replacement in REWORDINGS:
        message = re.sub(pattern, replacement, message)
    return FLAG.sub(lambda match: f"the '{match.group(1).replace('-', ' ')}' option", message)


def plan_html(lines: list[str]) -> str:
    """The engine's pre-flight lines in the panel's words, warnings in red."""
    shown = []
    for line in map(for_the_panel, lines):
        if line.startswith(("warning:", "stopped:")):
            line = f"<span style='color:#b00020'>⚠ {line}</span>"
        shown.append(line)
    return "<br>".join(shown)
