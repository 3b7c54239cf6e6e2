"""YAML and JSON from files mvc did not necessarily write, read safely.

Pointers, params files, settings, tensor indexes, signatures and remote recipes can come
from a hostile repository or bucket. Two documents parse but must not be read:

- YAML aliases. A safe loader never runs code, but it still expands aliases: a few
  hundred bytes of nested anchors (a "billion laughs" document) in a pointer made
  ``mvc show`` and ``mvc diff`` build hundreds of millions of values and take
  gigabytes. mvc and DVC never write anchors or aliases, so a document holding one is
  refused.
- JSON nested deeper than Python's recursion limit: ``json.loads`` raises
  ``RecursionError``, which no caller expects; it is reported as invalid JSON.
"""

from __future__ import annotations

import json
from typing import Any


def load_json(text: bytes | str) -> Any:
    """``json.loads(text)``; a document nested too deep is a :class:`json.JSONDecodeError` too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deep", text if isinstance(text, str) else "", 0) from None


def load_yaml(text: bytes | str) -> Any:
    """The document in ``text``, loaded with the safe (C when available) loader.

    Raises:
        yaml.YAMLError: invalid YAML, or a document with an alias (``*name``); for an
            alias, the error's ``problem`` is ``"alias"`` and ``problem_mark`` its place.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    has_star = b"*" in text if isinstance(text, bytes) else "*" in text
    if has_star:  # an alias needs a "*": only then are the events read first
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise yaml.MarkedYAMLError(problem="alias", problem_mark=yaml.Mark("", 0, mark.line, mark.column, None, 0) if mark else None)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
