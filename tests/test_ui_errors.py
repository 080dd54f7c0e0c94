"""The kiosk's errors: every error code the station API can answer with has the officer's
sentence (found by reading the station's source, so a new code cannot slip by), and the
kiosk's own refusals of a form (a field left out, nothing ticked for approval) say in
words what to do, with a way back to where the officer was: through the service's
TestClient, and once in the browser (the message area shows a 422 refusal).

The code walk starts where every API error answer is made (``_error_response`` in
station/api.py) and follows the code argument back: literal codes, helpers that pass
their ``code`` on, and exceptions whose ``.code`` the API answers with (their class
attributes, subclasses, constructor calls and defaults)."""

from __future__ import annotations

import ast
import html
import importlib
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

import station
from station.api import create_app
from station.runtime import StationRuntime
from station.ui import errors, i18n, pages
from station.ui.app import _way_back
from tests import stationkit, uikit
from tests.uikit import Kiosk

STATION = Path(station.__file__).parent
ROOT_SINK = "_error_response"
"""station/api.py's one maker of error answers: ``_error_response(status, code, ...)``."""

NEVER_SHOWN = {
    # The simulated card slot (/api/simulator/card) is driven by tests and the demo's
    # hand, never by a kiosk screen.
    "not_simulated": "the simulator's card slot has no kiosk screen",
    # A card spoiled after writing: the cards screen says "put a new blank card" whatever
    # the chip's reason (the code shows beneath for the technician).
    "station_error": "a spoiled card: the cards screen words every spoil the same way",
    "dg1_unreadable": "a spoiled card: the cards screen words every spoil the same way",
    "dg1_malformed": "a spoiled card: the cards screen words every spoil the same way",
    "dg1_mismatch": "a spoiled card: the cards screen words every spoil the same way",
    "no_active_authentication": "a spoiled card: the cards screen words every spoil the same way",
}
"""Codes the API has that no kiosk screen meets, each with why."""
NEVER_SHOWN.update(
    {
        # Caught by the provisioning route and answered as ``already_provisioned``.
        "provisioned": "station/api.py's _provision answers already_provisioned instead",
        # Constructed only with a code of their own (``code`` is a required argument).
        "card_refused": "CardRefused always carries the refusal's own code",
        "card_spoiled": "CardSpoiled always carries the spoil's own code",
        # Spoiled at start-up (a write cut short): the cards list shows it, no API answer.
        "interrupted": "a spoiled card: the cards screen words every spoil the same way",
    }
)

HIDDEN_FIELDS = {
    "challenge": "the login's second step carries it from the first",
}
"""Required form fields the officer never fills in (so no label names them)."""


# --- reading the station's source ------------------------------------------------------------


@dataclass
class Sink:
    """A callable whose argument becomes the code of an error answer."""

    position: int | None  # among the arguments a caller passes (self not counted)
    keyword: str = "code"


@dataclass
class Found:
    codes: dict[str, str] = field(default_factory=dict)  # code -> where (file:line)
    unresolved: list[str] = field(default_factory=list)  # code arguments the walk cannot read


def _modules(root: Path) -> dict[str, ast.Module]:
    """The station's modules the API can raise from (the kiosk itself excluded)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        if rel.parts[1] != "ui":
            out[str(rel)] = ast.parse(path.read_text(encoding="utf-8"), str(rel))
    return out


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _text(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    args = [*fn.args.posonlyargs, *fn.args.args]
    return args[1:] if args and args[0].arg in ("self", "cls") else args


def _code_param(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[Sink, str | None] | None:
    """``fn``'s ``code`` parameter as a sink, and its default when it is a literal."""
    positional = _params(fn)
    defaults = [None] * (len(positional) - len(fn.args.defaults)) + list(fn.args.defaults)
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        if arg.arg == "code":
            return Sink(index), _text(default)
    for arg, kw_default in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True):
        if arg.arg == "code":
            return Sink(None), _text(kw_default)
    return None


Caught = dict[str, list[str]]
"""Per node: the exception classes each ``except T as name`` around it binds."""


def _own(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[tuple[ast.AST, Caught]]:
    """The nodes of ``fn``'s own body (a nested function is a scope of its own), each with
    the names the ``except`` clauses around it bind."""
    todo: list[tuple[ast.AST, Caught]] = [(node, {}) for node in fn.body]
    while todo:
        node, caught = todo.pop()
        yield node, caught
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
            kinds = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            caught = {**caught, node.name: [n for k in kinds if (n := _name(k))]}
        todo.extend((child, caught) for child in ast.iter_child_nodes(node))


def _declared(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Caught:
    """The exception class a parameter holds: annotated ``exc: T``, or the exception of an
    ``@app.exception_handler(T)``."""
    types: Caught = {}
    for arg in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]:
        if arg.annotation is not None and (n := _name(arg.annotation)):
            types.setdefault(arg.arg, []).append(n)
    for deco in fn.decorator_list:
        if isinstance(deco, ast.Call) and _name(deco.func) == "exception_handler":
            handled = [n for a in deco.args[:1] if (n := _name(a))]
            for arg in _params(fn)[1:2]:  # (request, exc)
                types[arg.arg] = handled
    return types


def api_error_codes(root: Path = STATION) -> Found:
    """Every error code the station API can answer with, read from the source."""
    modules = _modules(root)
    classes: dict[str, tuple[ast.ClassDef, str]] = {}
    # Each function with the functions around it, innermost first (a closure's ``code``).
    functions: list[tuple[list[ast.FunctionDef | ast.AsyncFunctionDef], str]] = []
    for where, tree in modules.items():
        todo: list[tuple[ast.AST, list[ast.FunctionDef | ast.AsyncFunctionDef]]] = [(tree, [])]
        while todo:
            node, around = todo.pop()
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, (node, where))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                around = [node, *around]
                functions.append((around, where))
            todo.extend((child, around) for child in ast.iter_child_nodes(node))

    sinks: dict[str, Sink] = {ROOT_SINK: Sink(1)}
    sources: set[str] = set()  # exception classes whose .code the API answers with
    found = Found()

    def init_of(name: str) -> ast.FunctionDef | None:
        """The ``__init__`` a class has, its own or inherited from a class of the station."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop(0)
            if current in seen or current not in classes:
                continue
            seen.add(current)
            node = classes[current][0]
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return item
            todo.extend(n for b in node.bases if (n := _name(b)))
        return None

    def code_argument(call: ast.Call, sink: Sink) -> ast.expr | None:
        for kw in call.keywords:
            if kw.arg == sink.keyword:
                return kw.value
        if sink.position is not None and sink.position < len(call.args):
            return call.args[sink.position]
        return None

    changed = True
    while changed:
        changed = False
        # Subclasses of a source are sources: their ``code`` attribute is answered too.
        for name, (cls, _where) in classes.items():
            if name not in sources and any(_name(b) in sources for b in cls.bases):
                sources.add(name)
                changed = True
        for name in sorted(sources):
            if name not in classes:
                continue  # a class from elsewhere (Exception, a library's)
            cls, where = classes[name]
            for item in cls.body:
                targets = (
                    item.targets
                    if isinstance(item, ast.Assign)
                    else [item.target]
                    if isinstance(item, ast.AnnAssign)
                    else []
                )
                value = getattr(item, "value", None)
                if any(_name(t) == "code" for t in targets) and (code := _text(value)):
                    found.codes.setdefault(code, f"{where}:{item.lineno}")
            init = init_of(name)
            param = _code_param(init) if init is not None else None
            if param is not None and name not in sinks:
                sinks[name] = param[0]
                changed = True
                if param[1]:
                    found.codes.setdefault(param[1], f"{where}:{init.lineno if init else 0}")
        for chain, where in functions:
            fn = chain[0]
            declared = _declared(fn)
            # Whose ``code`` a bare name ``code`` is: this function's, or an enclosing one's.
            owner = next((f for f in chain if _code_param(f) is not None), None)
            for call, caught in _own(fn):
                if not isinstance(call, ast.Call):
                    continue
                scope = {**declared, **caught}
                sink = sinks.get(_name(call.func) or "")
                if sink is None:
                    continue
                arg = code_argument(call, sink)
                if arg is None:
                    continue  # the callable's own default (collected with it)
                holder: ast.expr | None = None
                if isinstance(arg, ast.Attribute) and arg.attr == "code":
                    holder = arg.value  # exc.code
                elif (
                    isinstance(arg, ast.Call)
                    and _name(arg.func) == "getattr"
                    and len(arg.args) == 3
                    and _text(arg.args[1]) == "code"
                ):
                    holder = arg.args[0]  # getattr(exc, "code", "default"): and the default
                    if code := _text(arg.args[2]):
                        found.codes.setdefault(code, f"{where}:{call.lineno}")
                if code := _text(arg):
                    found.codes.setdefault(code, f"{where}:{call.lineno}")
                elif isinstance(arg, ast.Name) and arg.id == "code" and owner is not None:
                    # A helper passing its own ``code`` on: its callers' codes count.
                    param = _code_param(owner)
                    if owner.name not in sinks and param is not None:
                        sinks[owner.name] = param[0]
                        changed = True
                        if param[1]:
                            found.codes.setdefault(param[1], f"{where}:{owner.lineno}")
                elif isinstance(holder, ast.Name) and scope.get(holder.id):
                    # An exception's own code: every code that class (and its kind) has.
                    for kind in scope[holder.id]:
                        if kind not in sources:
                            sources.add(kind)
                            changed = True
                else:
                    place = f"{where}:{call.lineno}: {ast.unparse(arg)}"
                    if place not in found.unresolved:
                        found.unresolved.append(place)
    return found


def _load_screens() -> None:
    """Every screen registers the codes it meets when its module is imported."""
    for info in pkgutil.iter_modules(pages.__path__):
        importlib.import_module(f"{pages.__name__}.{info.name}")


# --- the codes ----------------------------------------------------------------------------------


def test_every_api_error_code_has_the_officers_sentence() -> None:
    _load_screens()
    found = api_error_codes()
    # The walk reads what it should (a code from each kind of source): an empty or
    # shrunken walk must not pass for "all registered".
    for code in ("foreign_origin", "login_required", "case_not_found", "no_devices",
                 "not_provisioned", "card_present", "technician_required", "no_reader",
                 "card_used", "operator_locked", "camera_busy", "dg1_mismatch"):  # fmt: skip
        assert code in found.codes, f"the walk no longer finds {code!r}"
    assert found.unresolved == [], (
        "an error code the walk cannot read (make it a literal, or teach this test): "
        + "; ".join(found.unresolved)
    )
    registered = errors.registered()
    missing = {c: w for c, w in found.codes.items() if c not in registered and c not in NEVER_SHOWN}
    assert missing == {}, (
        "API error codes without the officer's sentence: register them in "
        f"station/ui/errors.py (or the screen that meets them): {missing}"
    )
    stale = {c for c in NEVER_SHOWN if c not in found.codes or c in registered}
    assert stale == set(), f"NEVER_SHOWN codes the API no longer has, or now explained: {stale}"


def test_the_walk_finds_a_new_code(tmp_path: Path) -> None:
    """A code added anywhere the API raises from is found (proof the test above can fail)."""
    copy = tmp_path / "station"
    for path in STATION.rglob("*.py"):
        if "ui" not in path.relative_to(STATION).parts[:1]:
            target = copy / path.relative_to(STATION)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    workflow = copy / "workflow.py"
    workflow.write_text(
        workflow.read_text(encoding="utf-8")
        + '\n\ndef _later() -> None:\n    raise WorkflowError("brand_new_code", "new")\n',
        encoding="utf-8",
    )
    cards = copy / "cards.py"
    cards.write_text(
        cards.read_text(encoding="utf-8")
        + "\n\nclass _Later(CardIssuanceError):\n    code = 'another_new_code'\n",
        encoding="utf-8",
    )
    found = api_error_codes(copy)
    assert {"brand_new_code", "another_new_code"} <= set(found.codes)
    assert not {"brand_new_code", "another_new_code"} & errors.registered()


# --- the kiosk's own refusals ---------------------------------------------------------------

CASE = "0123456789abcdef0123456789abcdef"
JARGON = ("Field required", "missing", "body", "loc", "string_too_short", "pydantic")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The station service with its kiosk, without devices or a registry (nobody logged
    in: the refusals tested here come before any API call)."""
    tmp = tmp_path_factory.mktemp("kiosk-errors")
    runtime = StationRuntime(stationkit.station_settings(tmp)).start()
    try:
        with TestClient(create_app(runtime)) as client:
            yield client
    finally:
        runtime.stop()


def _said(lang: str, msgid: str, **values: str) -> str:
    i18n.use(lang)
    return i18n.gettext(msgid, **values)


def _english(client: TestClient) -> None:
    """English pages (a browser with cookies names its origin: the API's origin check)."""
    client.cookies.set("station_lang", "en")
    client.headers["origin"] = "http://testserver"


def _message(response: httpx.Response) -> str:
    """The message area's text (what the officer reads)."""
    found = re.search(r'<div class="message message-error">(.*?)</div>', response.text, re.S)
    assert found, response.text
    return html.unescape(re.sub(r"<[^>]+>", " ", found[1]))


def _flash(response: httpx.Response) -> None:
    """An htmx answer shown in the page's message area, whatever the form targeted."""
    assert response.headers["hx-retarget"] == "#flash"
    assert response.headers["hx-reswap"] == "innerHTML"
    assert "<html" not in response.text


def test_a_form_left_out_names_its_fields(service: TestClient) -> None:
    service.cookies.clear()
    htmx = {"hx-request": "true", "hx-current-url": f"http://testserver/cases/{CASE}/review"}
    r = service.post(f"/cases/{CASE}/approve", data={"items": "finger:4"}, headers=htmx)
    assert r.status_code == 422
    _flash(r)
    fields = f"{_said('vi', 'Supervisor ID')}, {_said('vi', 'PIN or password')}"
    assert _said("vi", "The form was not complete: %(fields)s.", fields=fields) in r.text
    assert not [word for word in JARGON if word in _message(r)]

    # Without htmx: the error page, in English here, with the way back into the case.
    _english(service)
    r = service.post(f"/cases/{CASE}/approve", data={"secret": "1234", "items": "finger:4"})
    assert r.status_code == 422
    assert "The form was not complete: Supervisor ID." in r.text
    assert f'href="/cases/{CASE}">Back to where you were</a>' in r.text
    assert 'href="/">Start screen</a>' in r.text
    assert not [word for word in JARGON if word in _message(r)]

    # Outside a case: only the start screen. A field without a label: the whole form.
    r = service.post("/login", data={"secret": "1234"})
    assert r.status_code == 422
    assert "The form was not complete: Officer ID." in r.text
    assert "Back to where you were" not in r.text
    assert 'href="/">Start screen</a>' in r.text
    r = service.post("/login/finger", data={})
    assert r.status_code == 422
    assert "The form was not complete. Fill in every field and send it again." in r.text

    # Filled in wrongly (longer than the form allows) is not "left out".
    r = service.post(
        f"/cases/{CASE}/approve",
        data={"supervisor_id": "x" * 65, "secret": "1234", "items": "finger:4"},
    )
    assert "Check these fields and send the form again: Supervisor ID." in r.text
    # An address the officer did not type: no field to name.
    r = service.get(f"/cases/{CASE}/fingers", params={"at": "seven"})
    assert r.status_code == 422
    assert "This page's address is not valid:" in _message(r)

    # The API keeps its JSON answer (FastAPI's list of problems, for programs).
    r = service.post("/api/login/secret", json={})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json()["detail"], list)
    service.cookies.clear()


def test_an_approval_with_nothing_ticked_says_tick(service: TestClient) -> None:
    service.cookies.clear()
    _english(service)
    form = {"supervisor_id": "S0001", "secret": "2468", "return_to": f"/cases/{CASE}/review"}
    r = service.post(f"/cases/{CASE}/approve", data=form, headers={"hx-request": "true"})
    assert r.status_code == 200  # an htmx answer like the API's refusals: swapped as is
    _flash(r)
    assert "Tick what you approve, then press Approve again." in r.text
    r = service.post(f"/cases/{CASE}/approve", data=form)
    assert r.status_code == 422
    assert "Tick what you approve" in r.text
    assert f'href="/cases/{CASE}">Back to where you were</a>' in r.text
    service.cookies.clear()


def test_the_way_back_leads_into_the_case_unless_it_is_gone() -> None:
    assert _way_back(f"/cases/{CASE}/fingers", "camera_busy") == f"/cases/{CASE}"
    assert _way_back(f"/cases/{CASE}/approve", None) == f"/cases/{CASE}"
    assert _way_back(f"/cases/{CASE}/face", "case_not_found") is None  # nothing to go back to
    assert _way_back(f"/cases/{CASE}", "internal") is None  # the case itself failed
    assert _way_back("/cases", "not_eligible") is None
    assert _way_back("/outbox", None) is None


def test_every_required_field_of_a_kiosk_form_has_its_label() -> None:
    """A form field the kiosk requires is named by its label when left out."""
    required: dict[str, str] = {}
    for info in pkgutil.iter_modules(pages.__path__):
        module = importlib.import_module(f"{pages.__name__}.{info.name}")
        for route in module.router.routes:
            if isinstance(route, APIRoute):
                for param in route.dependant.body_params:
                    if param.field_info.is_required():
                        required.setdefault(param.alias, route.path)
    assert "supervisor_id" in required  # the walk sees the forms
    unnamed = {
        name: path
        for name, path in required.items()
        if name not in errors.field_labels() and name not in HIDDEN_FIELDS
    }
    assert unnamed == {}, f"required kiosk form fields without a label in errors.py: {unnamed}"


# --- in the browser -------------------------------------------------------------------------

PERSON = 89
"""This file's citizen (a face only: the case is never submitted)."""


def test_the_fingers_screen_shows_its_refusals_and_the_way_back(browser: Any, kiosk: Kiosk) -> None:
    """The supervisor's approval on the fingers screen with nothing ticked, then with a
    field left out (the browser's own check taken away: a 422 the message area shows),
    and an error page inside the case whose 48 px button leads back to the case's step."""
    i18n.forget_missing()
    with httpx.Client(base_url=kiosk.url, timeout=120) as api:
        uikit.api_login(kiosk, api, kiosk.officer)
        form = stationkit.walk_in_form("Lê Thị Thu Hà", "1990-05-06", "F", "Số 3 ngõ Chợ Mơ")
        case_id = stationkit.open_case(api, form)
        stationkit.capture_face(api, kiosk.camera, case_id, PERSON)
        r = api.post(
            f"/api/cases/{case_id}/fingers/4/exception",
            json={"code": "bandaged", "reason": "burn"},
        )
        assert r.status_code == 200, r.text
    page = uikit.new_page(browser, kiosk, "small")
    uikit.login(page, kiosk)
    page.goto(f"/cases/{case_id}/fingers?at=4")
    here = page.url
    boxes = page.locator(".approval input[name=items]")
    assert boxes.count() == 1
    boxes.uncheck()
    page.fill("#supervisor_id", kiosk.supervisor[0])
    page.fill("#supervisor_secret", kiosk.supervisor[3])
    page.click(".approval button[type=submit]")
    flash = page.locator("#flash .message-text")
    flash.wait_for()
    assert flash.inner_text().strip() == _said(
        "vi", "Tick what you approve, then press Approve again."
    )

    boxes.check()
    page.eval_on_selector("#supervisor_id", "field => field.removeAttribute('required')")
    page.fill("#supervisor_id", "")
    page.click(".approval button[type=submit]")
    said = _said(
        "vi", "The form was not complete: %(fields)s.", fields=_said("vi", "Supervisor ID")
    )
    page.wait_for_function(
        "text => (document.querySelector('#flash .message-text') || {}).textContent === text",
        arg=said,
    )
    assert page.url == here  # the screen stays; only the message area changed
    assert page.locator(".approval").count() == 1

    # A page of the case that fails without htmx: the error page, back into the case.
    response = page.goto(f"/cases/{case_id}/fingers?at=four")
    assert response is not None
    assert response.status == 422
    back = page.locator(f"a.btn[href='/cases/{case_id}']")
    assert back.inner_text().strip() == _said("vi", "Back to where you were")
    uikit.screenshots(page, "error-in-case")
    for size in uikit.SIZES.values():
        page.set_viewport_size({"width": size[0], "height": size[1]})
        for link in (back, page.locator("main a.btn[href='/']")):
            box = link.bounding_box()
            assert box is not None
            assert min(box["width"], box["height"]) >= 48, box
    back.click()
    page.wait_for_url(re.compile(f"/cases/{case_id}/fingers$"))
    page.context.close()
    assert i18n.missing("vi") == set()
