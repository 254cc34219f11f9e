"""The README's links to the documentation, as links between pages when the index
includes the README.

README.md is also the project's page on the package index, where a relative link is
dead, so it links to the published documentation with absolute URLs
(``[project.urls] Documentation`` of pyproject.toml). Included into ``index.md``, those
links would leave the site being built (another version, or a site not yet published):
on ``include-read``, ``<Documentation>page.html#anchor`` becomes ``docs/page.md#anchor``,
which the include's ``:relative-docs: docs/`` resolves to the page here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def documentation_url() -> str:
    return tomllib.loads(PYPROJECT.read_text())["project"]["urls"]["Documentation"]


def local_links(text: str, base: str) -> str:
    """``](<base>page.html#anchor)`` -> ``](docs/page.md#anchor)``; ``](<base>)`` -> the index."""

    def local(match: re.Match[str]) -> str:
        page = match["page"] or "index"
        return f"](docs/{page}.md{match['anchor'] or ''})"

    pattern = re.escape(base) + r"(?:(?P<page>[\w/\-]+)\.html)?(?P<anchor>#[\w\-]+)?\)"
    return re.sub(r"\]\(" + pattern, local, text)


def on_include_read(
    app: Sphinx, relative_path: Path, parent_docname: str, content: list[str]
) -> None:
    if relative_path.name == "README.md":
        content[0] = local_links(content[0], documentation_url())


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("include-read", on_include_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
