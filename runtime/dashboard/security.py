"""Who may use the dashboard, and the headers and tokens that keep a browser safe.

- Authentication (:class:`Auth`): HTTP Basic, checked on every request. A ``token``
  (any user name, the token as the password, recorded as the user ``token``; or
  ``Authorization: Bearer TOKEN``) and/or ``users``: ``NAME:HASH`` with HASH made by
  :func:`hash_password` (PBKDF2-SHA256). An unknown user name costs the same PBKDF2 as
  a wrong password (against a dummy hash), so timing does not tell which names exist.
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
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError

#: PBKDF2 rounds of a new hash (OWASP's figure for PBKDF2-HMAC-SHA256, 2023).
ROUNDS = 600_000
COOKIE = "rt_csrf"
#: In allowed hosts: a Host header that is an IP address (not a name) is allowed.
ANY_IP = "<any-ip>"
#: A user name of ``--user``: it is written into job histories, so a short plain name.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

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
        entry that is not NAME:pbkdf2_sha256$..., or a NAME outside letters, digits and
        ``_.@-`` (up to 64, starting with a letter or digit)."""
        found: dict[str, str] = {}
        for item in users:
            name, sep, stored = item.partition(":")
            if not sep or not name or not stored.startswith("pbkdf2_sha256$") or stored.count("$") != 3:
                raise ConfigError(f"dashboard user {name or item!r}: give NAME:HASH, HASH from "
                                  "`runtime dashboard --hash-password`")
            if not USER_NAME.fullmatch(name):
                raise ConfigError(f"dashboard user {name!r}: a name is letters, digits and _.@- (up to 64)")
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
        found, pending = self.quick(authorization)
        return found if pending is None else self.slow(*pending)

    @staticmethod
    def claimed(authorization: str | None) -> str | None:
        """The user name Basic credentials in ``authorization`` claim, read before any check
        (what the throttle counts them under); None for a bearer token or anything else."""
        kind, _, value = (authorization or "").partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return None

    def quick(self, authorization: str | None) -> tuple[str | None, tuple[str, str] | None]:
        """What can be told without PBKDF2: ``(user or None, None)``; or ``(None, (name,
        password))`` when only :meth:`slow` can tell (a user's password not checked yet)."""
        if not self.configured:
            return "anonymous", None
        if not authorization:
            return None, None
        kind, _, value = authorization.partition(" ")
        if kind.lower() == "bearer":
            return ("token" if self.token and hmac.compare_digest(value.strip(), self.token) else None), None
        if kind.lower() != "basic":
            return None, None
        try:
            name, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, None
        if self.token and hmac.compare_digest(password.encode(), self.token.encode()):
            return "token", None  # whatever user name came with it: the client chose that
        key = hashlib.sha256(f"{name}\0{password}".encode()).digest()
        if key in self._seen:
            return self._seen[key], None
        return None, (name, password)

    def slow(self, name: str, password: str) -> str | None:
        """``name`` when ``password`` is its password (PBKDF2, ~0.25 s; remembered), else
        None; an unknown ``name`` costs the same, checked against a dummy hash."""
        stored = self.users.get(name)
        if stored is None:
            verify_password(password, self._dummy())
            return None
        if not verify_password(password, stored):
            return None
        self._seen[hashlib.sha256(f"{name}\0{password}".encode()).digest()] = name
        return name

    def _dummy(self) -> str:
        """A hash of nothing anyone knows, with as many rounds as the users' hashes."""
        rounds = max((int(h.split("$")[1]) for h in self.users.values() if h.split("$")[1].isdigit()),
                     default=ROUNDS)
        cached = self.__dict__.get("_dummy_hash")
        if cached is None or cached.split("$")[1] != str(rounds):
            cached = self.__dict__["_dummy_hash"] = hash_password(secrets.token_hex(16), rounds)
        return str(cached)


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address or ``localhost``?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Does the Host header ``host`` (``name``, ``name:port``, ``[v6]:port``) name one of
    ``allowed`` (lower-case names or addresses; ``*`` any; ``*.example.com`` any of its
    subdomains; :data:`ANY_IP` any IP address)? A request naming another host came by
    another name: DNS rebinding (which needs a name: an address is never rebound)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if not name:
        return False
    for pattern in allowed:
        if pattern == "*" or pattern.strip("[]") == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
        if pattern == ANY_IP and _is_ip(name):
            return True
    return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def default_hosts(bind: str, extra: Iterable[str] = ()) -> list[str]:
    """What a served dashboard answers to: ``localhost``, 127.0.0.1, ::1, its bind address
    (bound to every address, 0.0.0.0 or ::: any IP address), and ``extra`` (``--allowed-host``)."""
    hosts = ["localhost", "127.0.0.1", "::1", *(h.strip().lower() for h in extra if h.strip())]
    hosts.append(ANY_IP if bind.strip("[]") in ("0.0.0.0", "::", "") else bind.strip("[]").lower())
    return hosts


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
