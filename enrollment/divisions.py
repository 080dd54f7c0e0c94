"""Vietnam's administrative divisions, in both structures records carry.

- pre-2025: 63 provinces, ~700 districts, ~10,000 communes (the 2021 rollout's structure,
  the General Statistics Office code table: province 2 digits, district 3, commune 5);
- 2025: 34 provinces and ~3,300 communes, no district level.

The tables come from the pinned ``vietnamadminunits`` package (MIT): we read its SQLite
data file directly and never import the package (its parser needs GIS libraries).
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from enrollment.record import AdministrativeArea, DivisionScheme

PACKAGE = "vietnamadminunits"


@dataclass(frozen=True)
class Commune:
    """A commune-level unit (xã / phường / thị trấn) with its parents."""

    scheme: DivisionScheme
    province_code: str
    province_name: str
    district_code: str | None
    district_name: str | None
    code: str
    name: str

    def area(self) -> AdministrativeArea:
        return AdministrativeArea(
            scheme=self.scheme,
            province_code=self.province_code,
            province_name=self.province_name,
            district_code=self.district_code,
            district_name=self.district_name,
            commune_code=self.code,
            commune_name=self.name,
        )


def _data_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {PACKAGE} package is not installed: run make bootstrap")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@dataclass(frozen=True)
class Divisions:
    communes: dict[DivisionScheme, dict[str, Commune]]
    # legacy commune code -> 2025 commune code (the default successor when one was split)
    successors: dict[str, str]

    def commune(self, code: str, scheme: DivisionScheme = DivisionScheme.pre_2025) -> Commune:
        try:
            return self.communes[scheme][code]
        except KeyError:
            raise KeyError(f"no {scheme.value} commune with code {code}") from None

    def provinces(self, scheme: DivisionScheme = DivisionScheme.pre_2025) -> dict[str, str]:
        """Province code -> name."""
        return {c.province_code: c.province_name for c in self.communes[scheme].values()}

    def iter_communes(self, scheme: DivisionScheme = DivisionScheme.pre_2025) -> Iterator[Commune]:
        return iter(self.communes[scheme].values())

    def successor(self, legacy_code: str) -> Commune | None:
        """The 2025 commune a pre-2025 commune became part of."""
        new = self.successors.get(legacy_code)
        return self.communes[DivisionScheme.y2025].get(new) if new else None

    def check(self, area: AdministrativeArea) -> list[str]:
        """What is wrong with an area's codes (empty when they exist and nest correctly)."""
        commune = self.communes[area.scheme].get(area.commune_code)
        if commune is None:
            return [f"commune {area.commune_code} does not exist ({area.scheme.value})"]
        problems = []
        if commune.province_code != area.province_code:
            problems.append(
                f"commune {commune.code} is in province {commune.province_code}, "
                f"not {area.province_code}"
            )
        if commune.district_code != area.district_code:
            problems.append(
                f"commune {commune.code} is in district {commune.district_code}, "
                f"not {area.district_code}"
            )
        return problems


@cache
def load() -> Divisions:
    """Both code tables and the legacy -> 2025 mapping (about 0.2 s, then cached)."""
    data = _data_dir()
    uri = f"file:{data / 'dataset.db'}?mode=ro&immutable=1"
    legacy: dict[str, Commune] = {}
    current: dict[str, Commune] = {}
    legacy_keys: dict[str, str] = {}
    current_keys: dict[tuple[str, str], str] = {}
    with sqlite3.connect(uri, uri=True) as db:
        for row in db.execute(
            "SELECT provinceCode, province, districtCode, district, wardCode, ward, "
            "provinceKey, districtKey, wardKey FROM admin_units_legacy "
            "WHERE wardCode IS NOT NULL AND districtCode IS NOT NULL"
        ):
            pc, pn, dc, dn, wc, wn, pk, dk, wk = row
            legacy[wc] = Commune(DivisionScheme.pre_2025, pc, pn, dc, dn, wc, wn)
            legacy_keys[f"{pk}_{dk}_{wk}"] = wc
        for pc, pn, wc, wn, pk, wk in db.execute(
            "SELECT provinceCode, province, wardCode, ward, provinceKey, wardKey FROM admin_units"
        ):
            current[wc] = Commune(DivisionScheme.y2025, pc, pn, None, None, wc, wn)
            current_keys[(pk, wk)] = wc
    converter = json.loads((data / "converter_2025.json").read_text(encoding="utf-8"))
    successors: dict[str, str] = {}
    for new_province, wards in converter["DICT_PROVINCE_WARD_NO_DIVIDED"].items():
        for new_ward, old_keys in wards.items():
            new_code = current_keys.get((new_province, new_ward))
            for old in old_keys:
                if new_code and old in legacy_keys:
                    successors[legacy_keys[old]] = new_code
    for new_province, splits in converter["DICT_PROVINCE_WARD_DIVIDED"].items():
        for old, options in splits.items():
            default = next((o for o in options if o.get("isDefaultNewWard")), options[0])
            new_code = current_keys.get((new_province, default["newWardKey"]))
            if new_code and old in legacy_keys:
                successors[legacy_keys[old]] = new_code
    return Divisions({DivisionScheme.pre_2025: legacy, DivisionScheme.y2025: current}, successors)


def personal_number_province(province_code: str) -> str:
    """The personal number's 3-digit province part: the 2-digit GSO code, zero-padded."""
    if len(province_code) != 2 or not province_code.isdigit():
        raise ValueError(f"province code {province_code!r} is not two digits")
    return "0" + province_code
