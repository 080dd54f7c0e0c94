"""A synthetic population of residents and their enrollments, with planted duplicates.

Every person is clearly synthetic (ids start with ``SYN-``). People live in households that
share an address; children carry their parents' names; a chosen fraction of people enroll
twice, the second time with new impressions and the demographic drift real duplicates
show (no diacritics, a year-only birth date, a new address, a forgotten old ID), so dedup
has ground truth to be scored against.

Deterministic from a seed: the same seed gives the same population, byte for byte.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from biometrics.synth.names import (
    ETHNIC_SHARES,
    FAMILY_NAMES,
    GIVEN_FEMALE,
    GIVEN_MALE,
    MIDDLE_FEMALE,
    MIDDLE_MALE,
    RELIGION_SHARES,
)
from enrollment import divisions
from enrollment.divisions import Commune
from enrollment.record import Address, Demographics, DivisionScheme, Sex, youngest_age_on

MIN_AGE = 14  # the chip ID card is issued from age 14


@dataclass(frozen=True)
class Person:
    """A synthetic resident: who they really are (ground truth)."""

    person_id: str
    household_id: str
    demographics: Demographics
    finger_seed: int  # seed of the ten master fingers (finger position -> master)
    face_seed: int  # which source photo and which variation


@dataclass(frozen=True)
class Enrollment:
    """One enrollment attempt: what was declared, and whose fingers were scanned."""

    enrollment_id: str
    person_id: str  # ground truth
    declared: Demographics
    impression_seed: int  # new impressions of the person's fingers for this attempt
    duplicate_of: str | None = None  # first enrollment of the same person, if any


@dataclass
class Population:
    seed: int
    people: list[Person] = field(default_factory=list)
    enrollments: list[Enrollment] = field(default_factory=list)


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _choice(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _name(rng: np.random.Generator, sex: Sex, family: str | None = None) -> str:
    family = family or _pick(rng, FAMILY_NAMES)
    middle = _choice(rng, MIDDLE_MALE if sex is Sex.male else MIDDLE_FEMALE)
    given = _choice(rng, GIVEN_MALE if sex is Sex.male else GIVEN_FEMALE)
    return f"{family} {middle} {given}"


def _birth_date(rng: np.random.Generator, on: date, age_range: tuple[int, int]) -> date:
    lo, hi = age_range
    # Flat to 55, then thinning to the oldest: a rough shape of Viet Nam's adult pyramid.
    ages = np.arange(lo, hi + 1)
    weights = np.where(ages <= 55, 1.0, np.clip((95 - ages) / 40, 0.02, 1.0))
    age = int(rng.choice(ages, p=weights / weights.sum()))
    # Exactly ``age`` whole years old on ``on``: the birthday fell 1-364 days before it.
    last_birthday = date(on.year - age, on.month, min(on.day, 28))
    return last_birthday - timedelta(days=int(rng.integers(0, 364)))


def _date_text(rng: np.random.Generator, born: date, on: date) -> str:
    # Most records have a full date; older paper records often only a year or month.
    roll = rng.random()
    text = born.isoformat()
    if roll < 0.02 or (born.year < 1950 and roll < 0.15):
        text = f"{born.year:04d}"
    elif roll < 0.05:
        text = f"{born.year:04d}-{born.month:02d}"
    # A partial date must not make an eligible person look under age.
    return text if youngest_age_on(text, on) >= MIN_AGE else born.isoformat()


def _address(commune: Commune, detail: str | None) -> Address:
    areas = [commune.area()]
    successor = divisions.load().successor(commune.code)
    if successor is not None:
        areas.append(successor.area())
    return Address(detail=detail, areas=areas)


def _street(rng: np.random.Generator, commune: Commune) -> str:
    if commune.name.startswith("Xã"):
        return f"Thôn {int(rng.integers(1, 15))}"
    return f"Số {int(rng.integers(1, 300))}, ngõ {int(rng.integers(1, 120))}"


def strip_diacritics(text: str) -> str:
    """'Nguyễn Thị Ánh' -> 'Nguyen Thi Anh' (đ -> d too), as typed on a keyboard without
    a Vietnamese layout: the commonest drift between two enrollments of one person."""
    base = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in base if unicodedata.category(c) != "Mn")


def generate(
    people: int, *, seed: int = 0, duplicate_fraction: float = 0.02, on: date | None = None
) -> Population:
    """``people`` residents in households, each enrolled once, a fraction twice."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    on = on or date(2021, 3, 1)
    table = divisions.load()
    communes = list(table.iter_communes(DivisionScheme.pre_2025))
    pop = Population(seed)
    used_ids: set[str] = set()
    household = 0
    while len(pop.people) < people:
        household += 1
        home = communes[int(rng.integers(len(communes)))]
        origin = home if rng.random() < 0.6 else communes[int(rng.integers(len(communes)))]
        street = _street(rng, home)
        family = _pick(rng, FAMILY_NAMES)
        ethnicity = _pick(rng, ETHNIC_SHARES)
        religion = _pick(rng, RELIGION_SHARES)
        head_sex = Sex.male if rng.random() < 0.8 else Sex.female
        head_name = _name(rng, head_sex, family)
        spouse_sex = Sex.female if head_sex is Sex.male else Sex.male
        has_spouse = rng.random() < 0.8
        spouse_name = _name(rng, spouse_sex) if has_spouse else None
        children = int(rng.integers(0, 4))
        members: list[tuple[Sex, str, tuple[int, int], dict[str, str | None]]] = [
            (head_sex, head_name, (30, 90), {"spouse_name": spouse_name}),
        ]
        if has_spouse and spouse_name:
            members.append((spouse_sex, spouse_name, (28, 85), {"spouse_name": head_name}))
        father, mother = (
            (head_name, spouse_name) if head_sex is Sex.male else (spouse_name, head_name)
        )
        for _ in range(children):
            sex = Sex.male if rng.random() < 0.51 else Sex.female
            members.append(
                (
                    sex,
                    _name(rng, sex, family if father == head_name else None),
                    (MIN_AGE, 27),
                    {"father_name": father, "mother_name": mother},
                )
            )
        for sex, name, ages, links in members:
            if len(pop.people) >= people:
                break
            born = _birth_date(rng, on, ages)
            old_id = None
            if born < on - timedelta(days=365 * 17) or rng.random() < 0.3:
                while old_id is None or old_id in used_ids:
                    old_id = f"{int(rng.integers(0, 10**9)):09d}"
                used_ids.add(old_id)
            demographics = Demographics(
                full_name=name,
                date_of_birth=_date_text(rng, born, on),
                sex=sex,
                ethnicity=ethnicity,
                religion=religion,
                place_of_birth=_address(origin, None),
                place_of_origin=_address(origin, None),
                permanent_residence=_address(home, street),
                old_id_number=old_id,
                father_name=links.get("father_name"),
                mother_name=links.get("mother_name"),
                spouse_name=links.get("spouse_name"),
            )
            index = len(pop.people)
            pop.people.append(
                Person(
                    person_id=f"SYN-{seed}-{index:07d}",
                    household_id=f"SYN-HH-{seed}-{household:06d}",
                    demographics=demographics,
                    finger_seed=int(rng.integers(2**62)),
                    face_seed=int(rng.integers(2**62)),
                )
            )
    for person in pop.people:
        pop.enrollments.append(
            Enrollment(
                f"E-{person.person_id}-1",
                person.person_id,
                person.demographics,
                int(rng.integers(2**62)),
            )
        )
    twice = rng.choice(
        len(pop.people), size=round(duplicate_fraction * len(pop.people)), replace=False
    )
    for index in sorted(int(i) for i in twice):
        person = pop.people[index]
        pop.enrollments.append(
            Enrollment(
                f"E-{person.person_id}-2",
                person.person_id,
                drift(rng, person.demographics, communes),
                int(rng.integers(2**62)),
                duplicate_of=f"E-{person.person_id}-1",
            )
        )
    return pop


def drift(rng: np.random.Generator, d: Demographics, communes: Sequence[Commune]) -> Demographics:
    """The demographics a duplicate enrollment declares: one to three realistic changes
    (always at least one that actually differs)."""
    wanted = int(rng.integers(1, 4))
    current = d
    for kind in rng.permutation(5):
        changed = _drift_once(rng, current, int(kind), communes)
        if changed != current:
            current = changed
            wanted -= 1
            if wanted == 0:
                break
    return current


def _drift_once(
    rng: np.random.Generator, d: Demographics, kind: int, communes: Sequence[Commune]
) -> Demographics:
    if kind == 0:
        return d.model_copy(update={"full_name": strip_diacritics(d.full_name)})
    if kind == 1:
        return d.model_copy(update={"date_of_birth": d.date_of_birth[:4]})
    if kind == 2:
        moved = communes[int(rng.integers(len(communes)))]
        return d.model_copy(update={"permanent_residence": _address(moved, _street(rng, moved))})
    if kind == 3:
        return d.model_copy(update={"old_id_number": None})
    family, middle, *given = d.full_name.split()
    options = [m for m in (MIDDLE_MALE if d.sex is Sex.male else MIDDLE_FEMALE) if m != middle]
    return d.model_copy(update={"full_name": " ".join([family, _choice(rng, options), *given])})
