"""Secrets out of every line runtime prints or logs, and terminals safe from what jobs wrote.

:func:`mask` hides the password of every URL (``redis://:***@host``), the user part of a
URL that has no password (a Sentry DSN's key, a token: ``https://***@host``), and the
value of ``password=``, ``token=``, ``authorization=``... pairs (URL queries, OTLP header
lists). :func:`printable` escapes the characters a terminal acts on instead of showing
(ESC, the other C0 and C1 controls, DEL, the bidirectional overrides of "Trojan Source",
CVE-2021-42574) as ``\\x1b``/``\\u202e``, keeping newlines and tabs; :func:`json_safe` does
the same inside JSON text with JSON's own escapes, so the value parsed is unchanged.
"""

from __future__ import annotations

import re
from typing import Any

#: userinfo runs to the last "@" before the host: a password with an unencoded "@" is
#: still all hidden (the user part is what comes before the first ":")
_URL_SECRET = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/?#\s]*?)(?::(?P<password>[^/?#\s]*))?@"
    r"(?=[^@/?#\s]*(?:[/?#\s]|$))")
_PAIR_SECRET = re.compile(
    r"(?i)\b(?P<key>[a-z_-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
    r"authorization|credentials?|cookie|session(?:_?id)?|jwt))(?P<sep>=|:\s*)(?P<value>(?:(?:Bearer|Basic|Token)\s+)?[^&,;\s]+)")
#: What a terminal acts on: C0 controls but newline and tab, DEL, C1 controls, and the
#: bidirectional embeddings, overrides and isolates; and lone surrogates (bytes that were
#: not UTF-8, read as surrogate escapes), which no stream can encode.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
#: The same, as they can appear in JSON text (json.dumps already escapes C0 controls).
_JSON_CONTROL = re.compile(r"[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

MASK = "***"

#: Keys of params and results whose values are secrets, shown as ``***`` by the dashboard
#: (``--redact`` replaces it) and by ``runtime job``; the params-text search never looks
#: inside them.
SECRET_KEYS = (r"(?i)pass(word|wd|phrase)?|secret|token|api[_-]?key|access[_-]?key|auth|credential|"
               r"private[_-]?key|pwd|cookie|session|bearer|jwt|ssh[_-]?key|signature|"
               r"(?<![a-z])(otp|pin|sig)(?![a-z])")
_SECRET_KEYS = re.compile(SECRET_KEYS)


def _url(m: re.Match[str]) -> str:
    if m.group("password") is not None:
        return f"{m.group('scheme')}{m.group('user')}:{MASK}@"
    return f"{m.group('scheme')}{MASK}@"


def mask(text: str) -> str:
    """``text`` with the secrets of URLs, DSNs and ``key=value`` credentials replaced by
    ``***`` (see the module's docstring). Text without any comes back unchanged."""
    if "@" in text:
        text = _URL_SECRET.sub(_url, text)
    if "=" in text or ":" in text:
        text = _PAIR_SECRET.sub(_pair, text)
    return text


def _pair(m: re.Match[str]) -> str:
    value = m.group("value")
    kept = value[len(value.rstrip(":.)")):]  # punctuation of the sentence around it
    return f"{m.group('key')}{m.group('sep')}{MASK}{kept}"


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with what a terminal would act on escaped (``\\x1b``), newlines and tabs kept.

    Fast paths (a job's print output passes here on every write): printable text comes
    back as is, and ``\\r``, the commonest control (progress bars), is replaced without
    the regex's call per match."""
    if text.isprintable():
        return text
    if "\r" in text:
        text = text.replace("\r", "\\x0d")
        if text.isprintable():
            return text
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


def json_safe(text: str) -> str:
    """JSON text (from json.dumps) with DEL, C1 controls and bidi overrides as ``\\uXXXX``
    escapes: the same value for a JSON reader, inert for a terminal."""
    return _JSON_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def redact(value: Any, pattern: re.Pattern[str] | None = None) -> Any:
    """``value`` (params, a result) with the values of keys matching ``pattern`` (default
    :data:`SECRET_KEYS`) replaced by ``***`` at any depth, and the secrets of URLs and
    ``key=value`` strings masked (:func:`mask`). ``value`` itself is not changed."""
    pattern = pattern or _SECRET_KEYS
    if isinstance(value, dict):
        return {k: MASK if pattern.search(str(k)) else redact(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, pattern) for v in value]
    if isinstance(value, str):
        return mask(value)
    return value
