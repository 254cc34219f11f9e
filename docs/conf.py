"""Sphinx configuration: Markdown pages (MyST), the furo theme, autodoc on a set-up Django.

Build with ``make docs`` (warnings are errors): ``docs/_build/html/index.html``.
"""

import os
import sys
from pathlib import Path

import django

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

# Autodoc imports the models, and the REST endpoint page asks drf-spectacular for the
# schema: both need Django set up, here with the test project's settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django.setup()

import django_workflows  # noqa: E402

project = "django-workflows"
author = "the django-workflows authors"
copyright = author
version = release = django_workflows.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "openapi_endpoints",  # docs/_ext: the REST endpoint table from the OpenAPI schema
    "readme_links",  # docs/_ext: the README's absolute links, as links between pages
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# Links such as [text](concepts.md#routing-tokens) resolve to the heading's anchor.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# The optional backends' libraries are not needed to document their engines.
autodoc_mock_imports = ["celery", "saq", "django_tasks"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"undoc-members": False}

html_theme = "furo"
html_title = f"django-workflows {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
