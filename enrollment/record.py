"""The enrollment record: demographics as on the Vietnamese chip ID card, capture metadata,
and one entry per biometric sample. Versioned; its JSON Schema is exported to docs/.

Text is stored NFC-normalised with runs of white space collapsed, so that "Nguyễn" typed on
two keyboards (precomposed or combining marks) is one name to the registry.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from enrollment import modalities
from enrollment.reference import ETHNIC_GROUPS

RECORD_VERSION = 1


def normalise_text(value: object) -> object:
    """NFC, with white space collapsed; other types pass through for pydantic to reject."""
    if isinstance(value, str):
        return " ".join(unicodedata.normalize("NFC", value).split())
    return value


Name = Annotated[
    str, BeforeValidator(normalise_text), StringConstraints(min_length=1, max_length=100)
]
Text = Annotated[
    str, BeforeValidator(normalise_text), StringConstraints(min_length=1, max_length=200)
]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]

_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def parse_partial_date(value: str) -> tuple[int, int | None, int | None]:
    """'1990', '1990-04' or '1990-04-30' -> (year, month, day); ValueError otherwise."""
    m = _PARTIAL_DATE.match(value)
    if not m:
        raise ValueError("expected YYYY, YYYY-MM or YYYY-MM-DD")
    year = int(m[1])
    month = int(m[2]) if m[2] else None
    day = int(m[3]) if m[3] else None
    if year < 1850:
        raise ValueError("year before 1850")
    if month is not None and not 1 <= month <= 12:
        raise ValueError("month must be 01-12")
    if day is not None:
        date(year, month or 1, day)  # raises ValueError for 2021-02-30
    return year, month, day


def _check_partial_date(value: str) -> str:
    parse_partial_date(value)
    return value


PartialDate = Annotated[
    str,
    StringConstraints(pattern=_PARTIAL_DATE.pattern),
    AfterValidator(_check_partial_date),
    Field(description="Date of birth as known: YYYY, YYYY-MM or YYYY-MM-DD"),
]


def youngest_age_on(date_of_birth: str, on: date) -> int:
    """Age in whole years on ``on``, taking the latest date a partial date allows.

    Eligibility rules (age >= 14) must not admit someone who may be too young.
    """
    year, month, day = parse_partial_date(date_of_birth)
    month_ = month or 12
    if day is None:
        day = 31 if month_ == 12 else (date(year, month_ + 1, 1) - date(year, month_, 1)).days
    born = date(year, month_, day)
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


class Sex(StrEnum):
    male = "M"
    female = "F"


class DivisionScheme(StrEnum):
    """Administrative structure a code belongs to."""

    # 63 provinces / districts / communes, as in the 2021 rollout (2016 code table).
    pre_2025 = "pre-2025"
    # 34 provinces / communes after the 2025 merger (no district level).
    y2025 = "2025"


class AdministrativeArea(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: DivisionScheme = DivisionScheme.pre_2025
    province_code: Annotated[str, StringConstraints(pattern=r"^\d{2}$")]
    district_code: Annotated[str, StringConstraints(pattern=r"^\d{3}$")] | None = None
    commune_code: Annotated[str, StringConstraints(pattern=r"^\d{5}$")]
    province_name: Text | None = None
    district_name: Text | None = None
    commune_name: Text | None = None

    @model_validator(mode="after")
    def _levels(self) -> AdministrativeArea:
        if self.scheme is DivisionScheme.pre_2025 and self.district_code is None:
            raise ValueError("the pre-2025 structure needs a district code")
        if self.scheme is DivisionScheme.y2025 and self.district_code is not None:
            raise ValueError("the 2025 structure has no district level")
        return self


class Address(BaseModel):
    """A place: the area codes in one or both structures, and the street-level detail."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detail: Text | None = Field(None, description="house number, street, hamlet or village")
    areas: list[AdministrativeArea] = Field(min_length=1, max_length=2)

    @model_validator(mode="after")
    def _one_per_scheme(self) -> Address:
        schemes = [a.scheme for a in self.areas]
        if len(set(schemes)) != len(schemes):
            raise ValueError("at most one area per division scheme")
        return self

    def area(self, scheme: DivisionScheme = DivisionScheme.pre_2025) -> AdministrativeArea | None:
        return next((a for a in self.areas if a.scheme is scheme), None)


def _check_ethnicity(code: str) -> str:
    if code not in ETHNIC_GROUPS:
        raise ValueError("ethnicity must be a GSO code 01-54")
    return code


class Demographics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    full_name: Name
    date_of_birth: PartialDate
    sex: Sex
    nationality: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "VNM"
    ethnicity: Annotated[str, AfterValidator(_check_ethnicity)] = Field(
        description="GSO ethnic group code, 01 (Kinh) to 54"
    )
    religion: Text = "Không"
    place_of_birth: Address | None = None
    place_of_origin: Address
    permanent_residence: Address
    identifying_marks: list[Text] = Field(default_factory=list, max_length=2)
    old_id_number: Annotated[str, StringConstraints(pattern=r"^\d{9}$")] | None = Field(
        None, description="the 9-digit identity card (CMND) number, if any"
    )
    father_name: Name | None = None
    mother_name: Name | None = None
    spouse_name: Name | None = None
    resident_list_ref: Identifier | None = Field(
        None, description="row in the pre-loaded resident list (DC01) this record came from"
    )


class DeviceInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["fingerprint_scanner", "camera", "card_encoder", "other"]
    model: Text
    serial: Text
    firmware: Text


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    accuracy_m: float | None = Field(None, ge=0)


class CaptureMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    station_id: Identifier
    operator_id: Identifier
    supervisor_id: Identifier | None = None
    software_version: Text
    devices: list[DeviceInfo] = Field(default_factory=list)
    started_at: AwareDatetime
    completed_at: AwareDatetime
    consent_at: AwareDatetime = Field(description="when the citizen confirmed the review")
    location: Location | None = None

    @model_validator(mode="after")
    def _order(self) -> CaptureMetadata:
        if self.completed_at < self.started_at:
            raise ValueError("completed_at is before started_at")
        return self


class QualityScore(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: Text = Field(description="e.g. NFIQ2 (fingers) or the face check suite")
    version: Text
    score: int = Field(ge=0, le=100)


class BiometricException(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    reason: Text | None = None
    approved_by: Identifier | None = Field(None, description="supervisor who approved it")


class BiometricSample(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,19}$")]
    position: int = Field(ge=0, le=99, description="ANSI/NIST FGP 1-10 for fingers; 0 for the face")
    idc: int | None = Field(
        None, ge=1, le=99, description="IDC of the ANSI/NIST-ITL record holding the image"
    )
    quality: QualityScore | None = None
    attempts: int = Field(1, ge=1, le=10)
    exception: BiometricException | None = None

    @model_validator(mode="after")
    def _image_or_exception(self) -> BiometricSample:
        modality = modalities.get(self.modality)
        if modality is not None:
            if self.position not in modality.positions:
                raise ValueError(f"position {self.position} is not valid for {self.modality}")
            if self.exception is not None:
                if self.exception.code not in modality.exceptions:
                    allowed = ", ".join(sorted(modality.exceptions))
                    raise ValueError(f"exception {self.exception.code!r} is not one of {allowed}")
                _, without_image = modality.exceptions[self.exception.code]
                if without_image and self.idc is not None:
                    raise ValueError(f"{self.exception.code} means there is no image")
        if self.idc is None and self.exception is None:
            raise ValueError("a sample without an image needs an exception code")
        return self


class EnrollmentRecord(BaseModel):
    """Everything in a package except the biometric images themselves."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"$id": "urn:vn-eid:schema:enrollment-record:1"},
    )

    record_version: Literal[1] = 1
    demographics: Demographics
    capture: CaptureMetadata
    samples: list[BiometricSample] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _accounted_for(self) -> EnrollmentRecord:
        seen: set[tuple[str, int]] = set()
        idcs: set[int] = set()
        for s in self.samples:
            if (s.modality, s.position) in seen:
                raise ValueError(f"two samples for {s.modality} position {s.position}")
            seen.add((s.modality, s.position))
            if s.idc is not None:
                if s.idc in idcs:
                    raise ValueError(f"IDC {s.idc} used by two samples")
                idcs.add(s.idc)
        for m in modalities.known():
            missing = sorted(m.required_positions - {p for mod, p in seen if mod == m.name})
            if missing:
                raise ValueError(f"{m.name} positions {missing} are not accounted for")
        return self
