"""Who may use the dashboard, and the headers and tokens that keep a browser safe.

- Authentication (:class:`Auth`): HTTP Basic, checked on every request. A ``token``
  (any user name, the token as the password; or ``Authorization: Bearer TOKEN``) and/or
  ``users``: ``NAME:HASH`` with HASH made by :func:`hash_password` (PBKDF2-SHA256).
- The bind rule (:func:`check_bind`): a loopback address needs no credentials; any other
  needs some, or the explicit ``insecure_no_auth``.
- CSRF (:class:`Csrf`): a random cookie per browser (SameSite=Strict, HttpOnly) and, in
  every form, an HMAC of it under a key of this process; every POST must carry both,
  and an ``Origin`` header, when sent, must name this host.
- Headers (:data:`HEADERS`): a Content-Security-Policy without inline script, no framing
  by other sites, no MIME sniffing, no referrer to other sites.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError

#: PBKDF2 rounds of a new hash (OWASP's figure for PBKDF2-HMAC-SHA256, 2023).
ROUNDS = 600_000
COOKIE = "rt_csrf"

#: Sent with every page; a profile's frame gets its own (runtime.dashboard.pages).
HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "SAMEORIGIN",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


def hash_password(password: str, rounds: int = ROUNDS) -> str:
    """``pbkdf2_sha256$ROUNDS$SALT$HASH`` (hex) of ``password``, for ``--user NAME:HASH``."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"pbkdf2_sha256${rounds}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Does ``password`` match ``stored`` (made by :func:`hash_password`)? False for a
    malformed hash."""
    try:
        scheme, rounds, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(rounds))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


@dataclass
class Auth:
    """Credentials the dashboard accepts: a ``token`` and/or ``users`` (name -> hash)."""

    token: str | None = None
    users: dict[str, str] = field(default_factory=dict)
    #: sha256 of credentials already verified -> user name (PBKDF2 runs once per password)
    _seen: dict[bytes, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, token: str | None, users: Sequence[str]) -> Auth:
        """From ``--token`` and ``--user NAME:HASH`` values. Raises ConfigError for a user
        entry that is not NAME:pbkdf2_sha256$..."""
        found: dict[str, str] = {}
        for item in users:
            name, sep, stored = item.partition(":")
            if not sep or not name or not stored.startswith("pbkdf2_sha256$") or stored.count("$") != 3:
                raise ConfigError(f"dashboard user {name or item!r}: give NAME:HASH, HASH from "
                                  "`runtime dashboard --hash-password`")
            found[name] = stored
        if token is not None and len(token) < 16:
            raise ConfigError("the dashboard token must be 16 characters or more (e.g. python -c "
                              "'import secrets; print(secrets.token_urlsafe())')")
        return cls(token or None, found)

    @property
    def configured(self) -> bool:
        return bool(self.token or self.users)

    def user(self, authorization: str | None) -> str | None:
        """The user an ``Authorization`` header names, once checked; None when it fails.
        ``token`` for the token; ``anonymous`` when no credentials are configured."""
        if not self.configured:
            return "anonymous"
        if not authorization:
            return None
        kind, _, value = authorization.partition(" ")
        if kind.lower() == "bearer":
            return "token" if self.token and hmac.compare_digest(value.strip(), self.token) else None
        if kind.lower() != "basic":
            return None
        try:
            name, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        key = hashlib.sha256(f"{name}\0{password}".encode()).digest()
        if key in self._seen:
            return self._seen[key]
        if self.token and hmac.compare_digest(password, self.token):
            who = name or "token"
        elif name in self.users and verify_password(password, self.users[name]):
            who = name
        else:
            return None
        self._seen[key] = who
        return who


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address or ``localhost``?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth: Auth, insecure_no_auth: bool) -> None:
    """Raise ConfigError when the dashboard would serve ``host`` (not loopback) to anyone."""
    if is_loopback(host) or auth.configured or insecure_no_auth:
        return
    raise ConfigError(f"refusing to serve the dashboard on {host} without credentials; give --token or --user "
                      "(or --insecure-no-auth to let anyone who reaches it see and change every job)")


class Csrf:
    """CSRF tokens: a form token is the HMAC of the browser's cookie under this key."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or os.urandom(32)

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_hex(16)

    def token(self, cookie: str) -> str:
        """The form token for the browser holding ``cookie``."""
        return hmac.new(self.key, cookie.encode(), hashlib.sha256).hexdigest()

    def valid(self, cookie: str | None, token: str | None) -> bool:
        """Does the form ``token`` belong to the browser's ``cookie``?"""
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.token(cookie), token)
