"""JSON values made storable in every MongoDB runtime supports, keeping their shape, and
read back exactly.

Valid JSON is not always storable BSON, and MongoDB 4.4 and older refuse field names with
a ``.`` or a leading ``$``. Rather than replacing a whole field by its JSON text (which
changed the field's type, so queries on it missed the job), each value is converted where
it stands, and the conversion is recorded in the document's ``converted`` list, one
``"KIND:PATH"`` string each (PATH: the stored keys and list indexes from the document's
top, joined by ``.``), so that :func:`restore` gives back the exact value:

- ``text:PATH``: a string holding a lone surrogate (not UTF-8; e.g. an undecodable file
  name in a log line) is stored with ``\\`` doubled and each lone surrogate written as
  ``\\udXXX``: still a string, readable, in the same place.
- ``int:PATH``: an integer beyond 64 bits is stored as its decimal string.
- ``keys:PATH``: the object at PATH has a key holding ``.``, ``$`` or NUL; each of its keys
  is stored percent-escaped (``%`` -> ``%25``, ``.`` -> ``%2E``, ``$`` -> ``%24``, NUL ->
  ``%00``), so ``{"a.b": 1}`` is stored ``{"a%2Eb": 1}`` and queried as ``params.a%2Eb``.
  Objects without such keys keep theirs exactly as given.

Values that need none of this (nearly all) are stored as they are, and no list is written.
"""

from __future__ import annotations

import re
from typing import Any

#: Range of a BSON int64.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_KEY_ESCAPES = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_KEY_UNESCAPES = {v: k for k, v in _KEY_ESCAPES.items()}
_KEY_CHARS = re.compile(r"[%.$\x00]")
_KEY_CODES = re.compile(r"%(?:25|2E|24|00)")
_SURROGATE = re.compile("[\ud800-\udfff]")
_TEXT_CODES = re.compile(r"\\(\\|ud[89a-f][0-9a-f]{2})")


def escape_key(key: str) -> str:
    """``key`` percent-escaped (see the module docstring)."""
    return _KEY_CHARS.sub(lambda m: _KEY_ESCAPES[m.group()], key)


def unescape_key(key: str) -> str:
    """The inverse of :func:`escape_key`."""
    return _KEY_CODES.sub(lambda m: _KEY_UNESCAPES[m.group()], key)


def _needs_escaping(key: str) -> bool:
    return "." in key or "$" in key or "\x00" in key


def escape_text(text: str) -> str:
    """``text`` with ``\\`` doubled and each lone surrogate as ``\\udXXX`` (valid UTF-8)."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text.replace("\\", "\\\\"))


def unescape_text(text: str) -> str:
    """The inverse of :func:`escape_text`."""
    return _TEXT_CODES.sub(lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1)[1:], 16)), text)


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def has_escaped_keys(value: Any) -> bool:
    """Does ``value`` hold an object with a key :func:`storable` escapes? (Iterative and
    quick: the check that lets nearly every document skip the conversion walk.)"""
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            for k in node:
                if "." in k or "$" in k or "\x00" in k:
                    return True
            stack.extend([v for v in node.values() if type(v) is dict or type(v) is list])
        elif type(node) is list:
            stack.extend([v for v in node if type(v) is dict or type(v) is list])
    return False


def storable(value: Any, path: str, converted: list[str]) -> Any:
    """``value`` (a JSON value) as MongoDB can store it, the same object when nothing had
    to change; each conversion is appended to ``converted`` (children before their
    parent object, the order :func:`restore` needs)."""
    if isinstance(value, str):
        if _utf8(value):
            return value
        converted.append(f"text:{path}")
        return escape_text(value)
    if isinstance(value, bool) or not isinstance(value, (int, dict, list)):
        return value
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return value
        converted.append(f"int:{path}")
        return str(value)
    if isinstance(value, list):
        items = [storable(v, f"{path}.{i}", converted) for i, v in enumerate(value)]
        return value if all(a is b for a, b in zip(items, value)) else items
    escape = any(_needs_escaping(k) for k in value)
    out = {}
    same = not escape
    for k, v in value.items():
        key = escape_key(k) if escape else k
        out[key] = new = storable(v, f"{path}.{key}", converted)
        same = same and new is v
    if escape:
        converted.append(f"keys:{path}")
    return value if same else out


def _parent(doc: dict[str, Any], parts: list[str]) -> tuple[Any, Any] | None:
    """(container, key or index) of the value at ``parts`` in ``doc``, or None."""
    node: Any = doc
    for part in parts[:-1]:
        node = _child(node, part)
        if node is None:
            return None
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return node, last
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node, int(last)
    return None


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


def restore(doc: dict[str, Any], converted: list[str]) -> None:
    """Undo, in place, the conversions listed in ``converted`` (from :func:`storable`).
    An entry whose path no longer leads to a value of its kind (its field was cut to fit
    the size cap) is skipped."""
    for entry in converted:
        kind, _, path = entry.partition(":")
        found = _parent(doc, path.split("."))
        if found is None:
            continue
        node, at = found
        value = node[at]
        if kind == "text" and isinstance(value, str):
            node[at] = unescape_text(value)
        elif kind == "int" and isinstance(value, str):
            node[at] = int(value)
        elif kind == "keys" and isinstance(value, dict):
            node[at] = {unescape_key(k): v for k, v in value.items()}
