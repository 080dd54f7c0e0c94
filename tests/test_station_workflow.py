"""The enrollment workflow on a provisioned, synced station (no devices: captures come
from the synthetic kits as the capture loops would deliver them), against a registry
process whose pipeline runs: eligibility, consent first, approvals, the citizen-is-operator
check, packaging into the outbox, upload, the registry's verdict mirrored back (issued,
recapture reopening the case), and a power cut while packaging."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from biometrics.fingerprint.iso19794 import encode_minutiae
from biometrics.fingerprint.minutiae import extract_minutiae
from enrollment import images
from enrollment.ids import new_package_id
from station.cases import CaseState, FaceEntry, FingerEntry
from station.runtime import StationRuntime
from station.workflow import EnrollmentWorkflow, WorkflowError
from tests import processkit, registrykit, stationkit
from tests.registrykit import ADMIN


@dataclass
class Registry:
    url: str
    client: httpx.Client
    admin: dict[str, str]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("registry")
    port = processkit.free_port()
    env = processkit.registry_env(
        tmp,
        f"sqlite:///{tmp / 'registry.db'}",
        ADMIN,
        {"REGISTRY_WORKER__IN_PROCESS": "true", "REGISTRY_WORKER__IDLE_POLL_SECONDS": "0.2"},
    )
    process = processkit.RegistryProcess(
        "registry", ["serve", "--port", str(port)], env, tmp / "registry.log"
    )
    url = f"http://127.0.0.1:{port}"
    with processkit.ProcessSet() as processes:
        processes.add(process).start()
        process.wait_http(f"{url}/readyz")
        with httpx.Client(base_url=url, timeout=60) as client:
            yield Registry(url, client, registrykit.login(client, *ADMIN))


@pytest.fixture(scope="module")
def station(
    registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StationRuntime]:
    tmp = tmp_path_factory.mktemp("station")
    office = stationkit.setup_office(registry.client, registry.admin, commune_code="00001")
    token = stationkit.station_token(registry.client, registry.admin, office, "WF-001")
    settings = stationkit.station_settings(tmp, uploader={"status_poll_s": 0.3})
    runtime = StationRuntime(settings).start()
    runtime.provision(registry.url, token)
    runtime.sync_now()
    yield runtime
    runtime.stop()


OFFICER, SUPERVISOR = stationkit.staff("00001")
AREA = {"province_code": "01", "district_code": "001", "commune_code": "00001"}


def _finger(person: int, position: int, *, blank: bool = False) -> FingerEntry:
    data, width, height = registrykit.finger_wsq(person, position, 0)
    template: bytes | None = encode_minutiae(
        extract_minutiae(images.decode_wsq(data)), position=position
    )
    if blank:
        import numpy as np

        data = images.encode_wsq(np.full((height, width), 200, np.uint8))
        template = None
    return FingerEntry(
        position=position,
        wsq=data,
        width=width,
        height=height,
        quality=70,
        attempts=1,
        template=template,
    )


def _face(person: int) -> FaceEntry:
    jpeg, width, height = registrykit.portrait_jpeg(person, 0)
    return FaceEntry(jpeg=jpeg, width=width, height=height, quality=80, frames=20, seconds=2.0)


def _demographics(workflow: EnrollmentWorkflow, case_id: str) -> dict[str, Any]:
    proposal = workflow.proposal(case_id)
    assert proposal is not None
    return {**proposal, "ethnicity": "01", "religion": "Không"}


def _capture_all(
    workflow: EnrollmentWorkflow, case_id: str, person: int, blank: tuple[int, ...] = ()
) -> None:
    workflow.store_face(case_id, OFFICER[0], _face(person))
    for position in range(1, 11):
        workflow.store_finger(
            case_id, OFFICER[0], _finger(person, position, blank=position in blank)
        )


def _wait_state(runtime: StationRuntime, case_id: str, states: set[str], timeout: float) -> Any:
    workflow = runtime.workflow()
    uploader = runtime.online.uploader  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while True:
        uploader.run_once()
        case = workflow.get(case_id)
        if case.state.value in states:
            return case
        if time.monotonic() > deadline:
            raise AssertionError(f"case {case_id} stayed {case.state} ({case.registry_state})")
        time.sleep(0.3)


def test_resident_enrolled_end_to_end(station: StationRuntime, registry: Registry) -> None:
    workflow = station.workflow()
    case = workflow.open_case(OFFICER[0], resident_ref="DC01-0001", ticket="A-001")
    with pytest.raises(WorkflowError) as refused:
        workflow.store_face(case.id, OFFICER[0], _face(1))
    assert refused.value.code == "consent_missing"
    # The same resident cannot be opened twice at this station.
    with pytest.raises(WorkflowError) as twice:
        workflow.open_case(OFFICER[0], resident_ref="DC01-0001")
    assert twice.value.code == "not_eligible"
    saved = workflow.save_demographics(case.id, OFFICER[0], _demographics(workflow, case.id))
    assert saved.full_name == "Lê Văn Cường"
    assert saved.resident_list_ref == "DC01-0001"
    workflow.record_consent(case.id, OFFICER[0])
    _capture_all(workflow, case.id, person=1)
    review = workflow.review(case.id)
    assert review.can_submit, review.as_json()
    result = workflow.submit(case.id, OFFICER[0])
    assert result.case.state is CaseState.queued
    assert station.outbox.get(result.package_id) is not None
    issued = _wait_state(station, case.id, {"issued", "rejected"}, 240)
    assert issued.state is CaseState.issued, issued
    assert issued.receipt_number
    # Biometric drafts are gone once the registry holds the package.
    assert workflow.face(case.id) is None
    # The registry now lists the resident as enrolled; after a sync, the station knows.
    station.sync_now()
    resident = station.residents.get("DC01-0001")
    assert resident is not None
    assert resident.status == "enrolled"


def test_eligibility_and_bad_input(station: StationRuntime) -> None:
    workflow = station.workflow()
    with pytest.raises(WorkflowError) as young:
        workflow.open_case(OFFICER[0], resident_ref="DC01-0003")  # born 2015
    assert young.value.code == "not_eligible"
    assert young.value.details == ["under_age"]
    with pytest.raises(WorkflowError) as unknown:
        workflow.open_case(OFFICER[0], resident_ref="DC01-9999")
    assert unknown.value.code == "resident_not_found"
    case = workflow.open_case(OFFICER[0])  # a walk-in not on the list
    with pytest.raises(WorkflowError) as invalid:
        workflow.save_demographics(case.id, OFFICER[0], {"full_name": "", "sex": "X"})
    assert invalid.value.code == "invalid_demographics"
    fields = {d["field"] for d in invalid.value.details}
    assert {"full_name", "sex", "date_of_birth"} <= fields
    listed = _open_listed(workflow, "DC01-0002")
    proposal = _demographics(workflow, listed)
    workflow.cancel(listed, OFFICER[0], "opened only to borrow the list's address")
    with pytest.raises(WorkflowError) as child:
        workflow.save_demographics(case.id, OFFICER[0], {**proposal, "date_of_birth": "2020-01-01",
                                                         "resident_list_ref": None})  # fmt: skip
    assert child.value.code == "not_eligible"
    with pytest.raises(WorkflowError) as bad:
        workflow.store_finger(case.id, OFFICER[0], FingerEntry(position=11, wsq=b"x"))
    assert bad.value.code == "bad_position"
    workflow.cancel(case.id, OFFICER[0], "test")
    with pytest.raises(WorkflowError) as closed:
        workflow.record_consent(case.id, OFFICER[0])
    assert closed.value.code == "case_not_editable"


def test_an_approval_covers_only_what_was_approved(station: StationRuntime) -> None:
    workflow = station.workflow()
    case = workflow.open_case(OFFICER[0], resident_ref="DC01-0004")
    form = _demographics(workflow, case.id)
    workflow.save_demographics(case.id, OFFICER[0], {**form, "full_name": "Vũ Thị Lành"})
    workflow.record_consent(case.id, OFFICER[0])
    assert [i.code for i in workflow.review(case.id).needs_approval] == ["demographics"]
    workflow.approve(case.id, SUPERVISOR[0], ["demographics"])
    assert workflow.review(case.id).needs_approval == []
    # Edited again after the approval: it must be approved again.
    workflow.save_demographics(case.id, OFFICER[0], {**form, "full_name": "Vũ Thị Lãnh"})
    assert [i.code for i in workflow.review(case.id).needs_approval] == ["demographics"]
    # Someone who captured for the case cannot approve it either.
    workflow.store_face(case.id, SUPERVISOR[0], _face(6))
    with pytest.raises(WorkflowError) as own:
        workflow.approve(case.id, SUPERVISOR[0], ["demographics"])
    assert own.value.code == "self_approval"
    workflow.cancel(case.id, OFFICER[0], "test")


def _open_listed(workflow: EnrollmentWorkflow, ref: str) -> str:
    return workflow.open_case(OFFICER[0], resident_ref=ref).id


def test_exceptions_need_a_supervisor_and_the_officer_is_not_the_citizen(
    station: StationRuntime,
) -> None:
    workflow = station.workflow()
    case = workflow.open_case(OFFICER[0], resident_ref="DC01-0004")
    workflow.save_demographics(case.id, OFFICER[0], _demographics(workflow, case.id))
    workflow.record_consent(case.id, OFFICER[0])
    _capture_all(workflow, case.id, person=6)
    workflow.store_finger(
        case.id,
        OFFICER[0],
        FingerEntry(position=4, exception_code="bandaged", exception_reason="cut on the ring"),
    )
    review = workflow.review(case.id)
    assert [i.code for i in review.needs_approval] == ["finger:4"]
    with pytest.raises(WorkflowError) as early:
        workflow.submit(case.id, OFFICER[0])
    assert early.value.code == "not_ready"
    with pytest.raises(WorkflowError) as own:
        workflow.approve(case.id, OFFICER[0], ["finger:4"])
    assert own.value.code == "self_approval"
    workflow.approve(case.id, SUPERVISOR[0], ["finger:4"])
    assert workflow.review(case.id).can_submit

    # The officer's own index finger among the citizen's: refused at submit.
    officer_finger = stationkit.finger_image(OFFICER[2], 2, 1)
    workflow.store_finger(
        case.id,
        OFFICER[0],
        FingerEntry(
            position=2,
            wsq=images.encode_wsq(officer_finger),
            width=officer_finger.shape[1],
            height=officer_finger.shape[0],
            quality=70,
            attempts=1,
            template=encode_minutiae(extract_minutiae(officer_finger), position=2),
        ),
    )
    with pytest.raises(WorkflowError) as me:
        workflow.submit(case.id, OFFICER[0])
    assert me.value.code == "citizen_is_operator"
    workflow.store_finger(case.id, OFFICER[0], _finger(6, 2))
    result = workflow.submit(case.id, OFFICER[0])
    assert result.case.supervisor_id == SUPERVISOR[0]


def test_recapture_reopens_the_case(station: StationRuntime) -> None:
    workflow = station.workflow()
    case = workflow.open_case(OFFICER[0], resident_ref="DC01-0002")
    workflow.save_demographics(case.id, OFFICER[0], _demographics(workflow, case.id))
    workflow.record_consent(case.id, OFFICER[0])
    _capture_all(workflow, case.id, person=10, blank=(3,))
    # Quality 70 is the station's (simulated) score: the registry's NFIQ 2 sees the blank.
    first = workflow.submit(case.id, OFFICER[0])
    reopened = _wait_state(station, case.id, {"open", "issued", "rejected"}, 240)
    assert reopened.state is CaseState.open, reopened
    assert reopened.recapture_of == first.package_id
    assert reopened.package_id is None
    assert 3 not in reopened.fingers
    assert 3 not in workflow.fingers(case.id)  # its old print is not taken again
    assert 1 in reopened.fingers
    assert {r["position"] for r in reopened.recapture} == {3}
    workflow.store_finger(case.id, OFFICER[0], _finger(10, 3))
    second = workflow.submit(case.id, OFFICER[0])
    assert second.package_id != first.package_id


def test_power_cut_while_packaging_rebuilds_under_the_same_id(station: StationRuntime) -> None:
    workflow = station.workflow()
    case = workflow.open_case(OFFICER[0])
    demographics = {
        "full_name": "Trịnh Văn Mạnh",
        "date_of_birth": "1990-02-03",
        "sex": "M",
        "place_of_origin": {"areas": [AREA]},
        "permanent_residence": {"detail": "Số 3 phố Phúc Xá", "areas": [AREA]},
        "ethnicity": "01",
    }
    workflow.save_demographics(case.id, OFFICER[0], demographics)
    workflow.record_consent(case.id, OFFICER[0])
    _capture_all(workflow, case.id, person=1)
    # What a power cut between "packaging" and "queued" leaves: the case holds its id,
    # the outbox has no row (maybe a staged file).
    package_id = new_package_id()
    with station.db.write() as c:
        c.execute(
            "UPDATE enrollment_case SET state = 'packaging', package_id = ?, completed_at = ? "
            "WHERE id = ?",
            (package_id, datetime.now(UTC).isoformat(), case.id),
        )
    done = workflow.recover()
    assert done == [case.id]
    after = workflow.get(case.id)
    assert after.state is CaseState.queued
    assert after.package_id == package_id
    entry = station.outbox.get(package_id)
    assert entry is not None
    assert entry.case_id == case.id


def test_a_failed_build_can_be_submitted_again(station: StationRuntime) -> None:
    workflow = station.workflow()
    case = workflow.open_case(OFFICER[0])
    demographics = {
        "full_name": "Phan Văn Tài",
        "date_of_birth": "1988-08-08",
        "sex": "M",
        "ethnicity": "01",
        "place_of_origin": {"areas": [AREA]},
        "permanent_residence": {"detail": "Số 8 phố Phúc Xá", "areas": [AREA]},
    }
    workflow.save_demographics(case.id, OFFICER[0], demographics)
    workflow.record_consent(case.id, OFFICER[0])
    _capture_all(workflow, case.id, person=6)
    context = workflow.station

    def broken() -> Any:
        raise OSError("the package key could not be read")

    workflow.station = dataclasses.replace(context, package_key=broken)
    try:
        with pytest.raises(WorkflowError) as failed:
            workflow.submit(case.id, OFFICER[0])
        assert failed.value.code == "packaging_failed"
        assert workflow.get(case.id).state is CaseState.packaging
    finally:
        workflow.station = context
    result = workflow.submit(case.id, OFFICER[0])  # the same id, packaged now
    assert result.case.state is CaseState.queued
    assert result.package_id == workflow.get(case.id).package_id
