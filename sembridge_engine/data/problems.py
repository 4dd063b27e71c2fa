"""Problems found in user imagery: reported and skipped, never fatal to a whole run."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One skipped or suspicious input, named by its path so the user can fix it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class ImageReadError(ValueError):
    """An image file that cannot be used; carries the file and the reason separately."""

    def __init__(self, path, message: str) -> None:
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")

    def to_problem(self) -> Problem:
        return Problem(self.path, self.message)
