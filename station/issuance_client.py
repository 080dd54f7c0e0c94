# ruff: noqa: N818 -- RegistryUnavailable and RegistryRefused read as conditions
"""The registry's card endpoints, as the station calls them (signed, over HTTP).

    client = IssuanceClient(registry_url, identity.auth())
    issuance = client.fetch_issuance(package_id)      # None: not issued yet
    state = client.report_card(package_id, serial)    # "card_encoded"

``GET /v1/packages/{id}/issuance`` gives the chip data of an issued package (the
deterministic CBOR in ``chip_cbor``, decoded with the shared codec
:class:`enrollment.icao.chip_data.ChipData`, so the station writes exactly what the
registry signed); ``POST /v1/packages/{id}/card {"card_serial"}`` records the card that
was encoded and verified. Reporting is idempotent at the registry: the same serial twice
answers the same state, so a report whose answer was lost is simply sent again.

Errors are split by what the caller should do: :class:`RegistryUnavailable` (the link is
down, the registry is busy or failing, or refused this station's signature: try again
later) and :class:`RegistryRefused` (the registry said no for good: a person must look).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from enrollment.icao.chip_data import ChipData, ChipDataError

__all__ = ["Issuance", "IssuanceClient", "RegistryRefused", "RegistryUnavailable"]


class RegistryUnavailable(Exception):
    """The registry could not answer now; ``retry_after`` (seconds) when it said when."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RegistryRefused(Exception):
    """The registry refused for good: ``code`` and ``detail`` as it sent them."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"the registry refused ({status} {code}): {detail}")
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Issuance:
    """What the registry issued for one package: the number and the card's chip data."""

    package_id: str
    personal_number: str
    document_number: str
    issued_at: datetime
    chip: ChipData

    @classmethod
    def from_json(cls, body: Any) -> Issuance:
        """Read the issuance answer; ValueError when it is malformed or inconsistent (the
        JSON fields must agree with the chip data they come with)."""
        try:
            chip = ChipData.from_bytes(base64.b64decode(body["chip_cbor"], validate=True))
            issuance = cls(
                package_id=str(body["package_id"]),
                personal_number=str(body["personal_number"]),
                document_number=str(body["document_number"]),
                issued_at=datetime.fromisoformat(str(body["issued_at"]).replace("Z", "+00:00")),
                chip=chip,
            )
        except (KeyError, TypeError, binascii.Error, ChipDataError) as exc:
            raise ValueError(f"the issuance answer is malformed: {exc}") from exc
        if (chip.personal_number, chip.document_number) != (
            issuance.personal_number,
            issuance.document_number,
        ):
            raise ValueError("the issuance answer's numbers differ from its chip data's")
        return issuance


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
        return str(body["error"]), str(body.get("detail", ""))
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}", response.text[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


class IssuanceClient:
    """The two card calls over one httpx client; ``auth`` signs as the station."""

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        client: httpx.Client | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._own = client is None
        self._client = client or httpx.Client(base_url=base_url, timeout=timeout_s)
        self._auth = auth

    def close(self) -> None:
        if self._own:
            self._client.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=body, auth=self._auth)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"the registry cannot be reached: {exc}") from exc
        status = response.status_code
        if status >= 500 or status == 429:
            code, detail = _error_of(response)
            raise RegistryUnavailable(
                f"the registry is busy or failing ({status} {code}): {detail}",
                retry_after=_retry_after(response),
            )
        if status in (401, 403):
            # The station's signature or certificate was refused: a clock or enrollment
            # problem a technician fixes, after which the same call succeeds.
            code, detail = _error_of(response)
            raise RegistryUnavailable(f"the registry refused this station ({code}): {detail}")
        return response

    def fetch_issuance(self, package_id: str) -> Issuance | None:
        """The issuance of ``package_id``; None while the registry has not issued it."""
        response = self._call("GET", f"/v1/packages/{package_id}/issuance", None)
        if response.status_code == 409:
            code, detail = _error_of(response)
            if code == "not_issued":
                return None
            raise RegistryRefused(409, code, detail)
        if response.status_code != 200:
            raise RegistryRefused(response.status_code, *_error_of(response))
        try:
            issuance = Issuance.from_json(response.json())
        except ValueError as exc:
            raise RegistryUnavailable(f"the registry's answer cannot be used: {exc}") from exc
        if issuance.package_id != package_id:
            raise RegistryUnavailable(
                f"asked for package {package_id}, the registry answered {issuance.package_id}"
            )
        return issuance

    def report_card(self, package_id: str, card_serial: str) -> str:
        """Record the encoded card; the package's state at the registry afterwards."""
        response = self._call(
            "POST", f"/v1/packages/{package_id}/card", {"card_serial": card_serial}
        )
        if response.status_code != 200:
            raise RegistryRefused(response.status_code, *_error_of(response))
        try:
            return str(response.json()["state"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryUnavailable(f"the registry's answer cannot be used: {exc}") from exc
