"""Where the files shipped with Stepline are: templates, static assets and the example scenarios.

They stay at the top of the repository and are installed inside the package (`web.templates`,
`web.static`, `web.shipped_scenarios`: see pyproject.toml), so an installed wheel and a checkout find
them the same way, from any working directory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# The folder `web` is imported from: a child process started there runs this very package.
IMPORT_ROOT = Path(__file__).resolve().parent.parent


def shipped(package: str) -> Path:
    """The directory of a shipped data package, e.g. `shipped("templates")`."""
    # Installed packages are plain directories (wheels are unpacked), so this is a real path.
    return Path(str(files(f"web.{package}")))


TEMPLATES = shipped("templates")
STATIC = shipped("static")
SCENARIOS = shipped("shipped_scenarios")
