"""A readable rendering of a plan; the doctor view is ``edgeglm.hardware.doctor``'s.

A real ``Plan`` renders with the planner's own ``render_plan`` (every
decision with its reason, as ``edgeglm plan`` prints it); any other plan
object renders generically, with fields named like ``reason``/``why`` set
apart so each choice still shows its reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import RenderableType
from rich.text import Text
from rich.tree import Tree

_REASON_KEYS = ("reason", "reasons", "why", "because", "notes", "explanation")


def plan_view(plan: Any) -> RenderableType:
    """The planner's own rendering (``edgeglm plan``) for its Plan; anything else as a tree."""
    try:
        from edgeglm.planner.explain import render_plan
        from edgeglm.planner.plan import Plan
    except ImportError:
        pass
    else:
        if isinstance(plan, Plan):
            return render_plan(plan)
    tree = Tree(Text("Plan", style="bold"))
    _add(tree, _plain(plan))
    return tree


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _add(node: Tree, value: Any) -> None:
    if isinstance(value, dict):
        for key, v in value.items():
            if v is None or v == [] or v == {}:
                continue
            if key.lower() in _REASON_KEYS:
                for r in v if isinstance(v, list) else [v]:
                    node.add(Text(f"why: {r}", style="italic cyan"))
            elif isinstance(v, dict | list):
                _add(node.add(Text(key, style="bold")), v)
            else:
                node.add(Text.assemble((f"{key}: ", "dim"), str(v)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, dict | list):
                _add(node.add(Text(f"#{i + 1}", style="bold")), v)
            else:
                node.add(str(v))
    else:
        node.add(str(value))
