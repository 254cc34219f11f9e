"""Moved to ``django_workflows.admin.diagram`` (the admin is its only user); this name
stays for one release."""

from .admin.diagram import condition_label, layout, render_svg, step_states, taken_edges

__all__ = ["condition_label", "layout", "render_svg", "step_states", "taken_edges"]
