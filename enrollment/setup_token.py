"""The station setup code: what the QR code on a station's token sheet holds.

    vneid-setup:1?registry=https%3A%2F%2Fregistry.example.vn&token=Q2xhc3NpYy...

The registry prints it with a station's one-time enrollment token (``python -m central
stations token STATION --registry-url URL --qr sheet.png``); at first boot the station reads
it with its camera and fills its setup form. Both sides import this module, so the format
and its limits are written once.

- ``vneid-setup`` is the scheme (compared without regard to case, as URI schemes are);
  ``1`` the format version: a station refuses a version it does not know rather than
  guess (an incompatible change gets a new number; a new optional field does not).
- ``registry`` is the registry's address, percent-encoded: https, or plain http only to
  this machine or a private-network IP address (a test or a field team's local registry);
  no user name, query or fragment. The same rule checks an address typed at the station.
- ``token`` is the one-time token as the registry issues it (URL-safe base64, 16-200
  characters: the registry's own limits).

Fields this version does not know are ignored; a field given twice is refused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

SCHEME = "vneid-setup"
VERSION = 1
MAX_PAYLOAD = 1024
"""Characters: a code holding more is not a setup code (a real one is about 120)."""
MAX_REGISTRY_URL = 500
TOKEN_MIN, TOKEN_MAX = 16, 200
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_MAX_FIELDS = 16
# Loopback, RFC 1918, link-local, IPv6 unique local: where plain http stays off the internet.
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
        "::1/128", "fc00::/7", "fe80::/10",
    )
)  # fmt: skip


class SetupCodeError(ValueError):
    """Not a usable setup code. ``code`` is stable: ``wrong_scheme`` (another kind of
    code), ``wrong_version``, ``malformed``, ``missing_field``, ``oversized``,
    ``bad_token``, or an address problem (``bad_address``, ``insecure_address``). The
    message says what is wrong, never the token."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_registry_url(url: str) -> None:
    """Raise :class:`SetupCodeError` unless ``url`` is a registry address a station may
    enroll with: https (any host), or http only to localhost or a loopback, private or
    link-local IP address; a host name, no user name, no query or fragment."""
    if len(url) > MAX_REGISTRY_URL:
        raise SetupCodeError(
            "oversized", f"the registry address is over {MAX_REGISTRY_URL} characters"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise SetupCodeError("bad_address", f"the registry address is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SetupCodeError(
            "bad_address", "the registry address must be a full URL starting with https://"
        )
    if parts.username is not None or parts.query or parts.fragment:
        raise SetupCodeError(
            "bad_address", "the registry address takes no user name, query or fragment"
        )
    if parts.scheme == "http" and not _local(parts.hostname):
        raise SetupCodeError(
            "insecure_address",
            "plain http is only for this machine or a private-network IP address; "
            "the registry's address starts with https://",
        )


def _local(host: str) -> bool:
    """This machine or a private network: where plain http cannot leak the token to the
    internet (a test registry, a field team's registry on its own network)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: it could resolve anywhere
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Named, not ``is_private``: that also counts special blocks reachable over the internet
    # (Teredo's 2001::/32 among them) and changes between Python versions.
    return any(address in network for network in _LOCAL_NETWORKS)


@dataclass(frozen=True)
class SetupCode:
    """A registry address and a one-time token, checked on creation."""

    registry_url: str
    token: str

    def __post_init__(self) -> None:
        check_registry_url(self.registry_url)
        if not TOKEN_MIN <= len(self.token) <= TOKEN_MAX:
            code = "oversized" if len(self.token) > TOKEN_MAX else "bad_token"
            raise SetupCodeError(
                code, f"the token must be {TOKEN_MIN} to {TOKEN_MAX} characters long"
            )
        if not _TOKEN.fullmatch(self.token):
            raise SetupCodeError("bad_token", "the token has characters a registry token never has")

    def payload(self) -> str:
        """The text of the QR code."""
        query = urlencode({"registry": self.registry_url, "token": self.token}, quote_via=quote)
        return f"{SCHEME}:{VERSION}?{query}"

    def png(self, scale: int = 8) -> bytes:
        """The QR code as a PNG (black on white, the standard 4-module quiet zone)."""
        import io

        import segno

        out = io.BytesIO()
        # Level M: a printed sheet may be creased or smudged.
        segno.make(self.payload(), error="m", micro=False).save(out, kind="png", scale=scale)
        return out.getvalue()


def parse_setup_code(text: str) -> SetupCode:
    """The setup code in ``text`` (a QR code's contents); :class:`SetupCodeError` says
    why it is not one."""
    text = text.strip()
    if len(text) > MAX_PAYLOAD:
        raise SetupCodeError("oversized", f"the code is over {MAX_PAYLOAD} characters")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() != SCHEME:
        raise SetupCodeError("wrong_scheme", "this is not a station setup code")
    version, _, query = rest.partition("?")
    if not (version.isascii() and version.isdigit()):  # not '²', which int() refuses
        raise SetupCodeError("malformed", "the setup code has no version number")
    if int(version) != VERSION:
        raise SetupCodeError(
            "wrong_version",
            f"the setup code is version {int(version)}; this station reads version {VERSION}",
        )
    try:
        pairs = parse_qsl(
            query, keep_blank_values=True, strict_parsing=True, max_num_fields=_MAX_FIELDS
        )
    except ValueError:
        raise SetupCodeError("malformed", "the setup code's fields cannot be read") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            name = repr(key) if key in ("registry", "token") else "a field"
            raise SetupCodeError("malformed", f"the setup code has {name} twice")
        fields[key] = value
    for key in ("registry", "token"):
        if not fields.get(key):
            raise SetupCodeError("missing_field", f"the setup code has no {key!r}")
    return SetupCode(fields["registry"], fields["token"])


__all__ = [
    "MAX_PAYLOAD",
    "SCHEME",
    "VERSION",
    "SetupCode",
    "SetupCodeError",
    "check_registry_url",
    "parse_setup_code",
]
