"""A Sphinx directive that renders the REST API's endpoints from its OpenAPI schema.

``{openapi-endpoints}`` asks drf-spectacular for the schema of ``django_workflows.api.urls``
(the same generator ``GET schema/`` serves) and renders one table row per operation:
method and path, summary and description, query parameters, response statuses. Django
must be set up (``docs/conf.py`` does it). The output depends only on the code.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

URLCONF = "django_workflows.api.urls"
METHODS = ("get", "post", "put", "patch", "delete")


def operations(urlconf: str = URLCONF) -> list[dict[str, Any]]:
    """The schema's operations in path order: method, path, summary, description, ..."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator(urlconf=urlconf).get_schema(request=None, public=True)
    result = []
    for path, item in schema["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            result.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "query": [
                        p["name"] for p in operation.get("parameters", ()) if p.get("in") == "query"
                    ],
                    "headers": [
                        p["name"]
                        for p in operation.get("parameters", ())
                        if p.get("in") == "header"
                    ],
                    "responses": sorted(operation.get("responses", {})),
                }
            )
    return result


def _one_line(text: str) -> str:
    return " ".join(text.split())


def as_list_table(ops: list[dict[str, Any]], prefix: str) -> list[str]:
    lines = [
        "```{list-table}",
        ":header-rows: 1",
        ":widths: 22 48 15 15",
        "",
        "* - endpoint",
        "  - what it does",
        "  - parameters",
        "  - responses",
    ]
    for op in ops:
        path = prefix.rstrip("/") + op["path"]
        params = [f"`{name}`" for name in op["query"]]
        params += [f"`{name}` (header)" for name in op["headers"]]
        lines += [
            f"* - `{op['method']} {path}`",
            f"  - **{op['summary']}**. {_one_line(op['description'])}",
            f"  - {', '.join(params) or 'none'}",
            f"  - {', '.join(op['responses'])}",
        ]
    lines.append("```")
    return lines


class OpenAPIEndpoints(SphinxDirective):
    has_content = False
    option_spec = {"prefix": str}

    def run(self) -> list[nodes.Node]:
        prefix = self.options.get("prefix", "")
        lines = as_list_table(operations(), prefix)
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="openapi"), self.content_offset, container)
        return container.children


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("openapi-endpoints", OpenAPIEndpoints)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
