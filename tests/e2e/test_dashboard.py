"""The dashboard in a real browser: headless Debian Chromium driven by Playwright, against a real
``riskstream serve`` process fed with PhysioNet sample patients.

The server has access control on (issue 12): the fixture's key (``server.key``, scopes read and
ingest) goes on every request here, and the browser signs in once through the ``#key=`` link that
``riskstream serve`` prints and once through the sign-in form.

The browser tests are skipped when Playwright's Python package or /usr/bin/chromium is missing
(they never download a browser). ``UPDATE_SCREENSHOTS=1`` also writes the screenshots to
docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from riskstream.demo import DEFAULT_DATA, load_patients
from riskstream.demo import main as demo

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, REPO
from tests.support.server import ServerProcess

try:
    from playwright import sync_api
except ImportError:  # the demo test still runs
    sync_api = None

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
browser_test = pytest.mark.skipif(
    sync_api is None or not CHROMIUM.exists(),
    reason=f"needs playwright (pip) and Debian's chromium at {CHROMIUM}",
)

VIEWPORT = {"width": 1280, "height": 800}
WAIT_MS = 10_000


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def ward(server: ServerProcess, patients: int = 14, hours: int = 60) -> dict[str, datetime]:
    """Sample patients, each last seen minutes to an hour ago; returns their last event times."""
    manifest = httpx.get(f"{server.url}/v1/model", headers=server.headers).json()
    features = [f["name"] for f in manifest["features"]]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    events: list[dict[str, Any]] = []
    last: dict[str, datetime] = {}
    for i, p in enumerate(load_patients(DEFAULT_DATA, features, patients, seed=14, admit_every=1)):
        rows = p.rows[:hours]
        end = now - timedelta(minutes=(i * 13) % 70 + 2)
        for k, (hour, values) in enumerate(rows):
            t = end - timedelta(hours=len(rows) - 1 - k)
            events.append(
                {
                    "entity_id": p.patient_id,
                    "event_id": f"h{hour}",
                    "time": iso(t),
                    "values": values,
                }
            )
        last[p.patient_id] = end
    post(server, events)
    return last


def post(server: ServerProcess, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = httpx.post(f"{server.url}/v1/events", json=events, timeout=60, headers=server.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rejected"] == 0, body
    results: list[dict[str, Any]] = body["results"]
    return results


def save(page: Any, tmp_path: Path, name: str) -> None:
    page.evaluate("document.activeElement && document.activeElement.blur()")
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("UPDATE_SCREENSHOTS"):
        target = REPO / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)


def sign_in(page: Any, key: str) -> None:
    """Through the form, as a user pasting a key."""
    page.wait_for_selector("#signin", state="visible", timeout=WAIT_MS)
    page.fill("#signin-key", key)
    page.click('#signin button[type="submit"]')
    page.wait_for_selector("#signin", state="hidden", timeout=WAIT_MS)


def rows(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#watchlist-body tr", "trs => trs.map(tr => tr.dataset.entity)"
    )
    return ids


@browser_test
def test_watchlist_updates_live_and_an_entity_opens_its_charts(
    server: ServerProcess, tmp_path: Path
) -> None:
    last = ward(server)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[Any] = []
            page.on("request", lambda r: requests.append(r))
            # signed in by the link `riskstream serve` prints (redirected from / to /ui/)
            page.goto(f"{server.url}/#key={server.key}")
            page.wait_for_selector('#conn[data-state="live"]', timeout=WAIT_MS)
            # the key left the address bar (not bookmarked, not in the history) for the tab's
            # session storage
            assert str(server.key) not in page.url and "key=" not in page.url
            assert page.evaluate("sessionStorage.getItem('riskstream.key')") == server.key
            assert page.is_hidden("#signin") and page.is_visible("#signout")
            page.wait_for_function(
                f"document.querySelectorAll('#watchlist-body tr').length === {len(last)}",
                timeout=WAIT_MS,
            )
            # highest current risk first, as the service orders it
            listed = httpx.get(f"{server.url}/v1/watchlist", headers=server.headers).json()
            assert rows(page) == [e["entity_id"] for e in listed["entities"]]
            page.evaluate("window.__sameDocument = true")

            # new scores reach the table without a reload: a new entity, and a known one's step
            top = rows(page)[0]
            top_step = int(page.inner_text(f'#watchlist-body tr[data-entity="{top}"] td.step'))
            now = datetime.now(UTC)
            post(
                server,
                [
                    {
                        "entity_id": top,
                        "event_id": "late1",
                        "time": iso(now),
                        "values": {"HR": 131},
                    },
                    *(
                        {
                            "entity_id": "bed-15",
                            "event_id": f"e{k}",
                            "time": iso(now - timedelta(minutes=40 * (3 - k))),
                            "values": {"HR": 90 + 10 * k, "Creatinine": 1.1 + 0.4 * k},
                        }
                        for k in range(3)
                    ),
                ],
            )
            page.wait_for_selector('#watchlist-body tr[data-entity="bed-15"]', timeout=WAIT_MS)
            page.wait_for_function(
                "([id, step]) => document.querySelector("
                "`#watchlist-body tr[data-entity='${id}'] td.step`)?.textContent === String(step)",
                arg=[top, top_step + 1],
                timeout=WAIT_MS,
            )
            assert page.evaluate("window.__sameDocument") is True
            assert page.inner_text('#watchlist-body tr[data-entity="bed-15"] td.step') == "3"

            # sortable: by entity, ascending
            page.click('#watchlist th[data-key="entity_id"] button')
            assert page.get_attribute('#watchlist th[data-key="entity_id"]', "aria-sort") == (
                "ascending"
            )
            assert rows(page) == sorted(rows(page))
            page.click('#watchlist th[data-key="risk"] button')
            assert page.get_attribute('#watchlist th[data-key="risk"]', "aria-sort") == (
                "descending"
            )
            save(page, tmp_path, "watchlist.png")

            # open the entity of the longest stay among the top six that went into alert
            history = {
                e: httpx.get(
                    f"{server.url}/v1/entities/{e}/scores",
                    params={"limit": 1000},
                    headers=server.headers,
                ).json()
                for e in rows(page)[:6]
            }
            raise_at = listed["thresholds"][listed["output"]]["raise"]

            def interest(e: str) -> tuple[bool, int]:
                scores = history[e]["scores"]
                peak = max(s["risk"][listed["output"]] for s in scores)
                return peak >= raise_at, len(scores)

            entity = max(history, key=interest)
            n = len(history[entity]["scores"])
            page.click(f'button.entity-link[data-entity="{entity}"]')
            page.wait_for_selector("#charts figure.chart svg circle.pt", timeout=WAIT_MS)
            assert page.inner_text("#detail-title") == entity
            outputs = [
                o["name"]
                for o in httpx.get(f"{server.url}/v1/model", headers=server.headers).json()[
                    "outputs"
                ]
            ]
            figures = page.locator("#charts figure.chart")
            assert figures.count() == len(outputs)
            for i, output in enumerate(outputs):
                figure = figures.nth(i)
                assert figure.get_attribute("data-output") == output
                assert figure.locator("svg.risk-chart").count() == 1
                assert figure.locator("circle.pt").count() == n  # one marker per event
                assert figure.locator("line.thr-raise").count() == 1
                assert figure.locator("line.thr-clear").count() == 1
                assert (figure.locator("path.risk-line").get_attribute("d") or "").startswith("M")
            # the URL keeps the open entity, never the key
            assert f"entity={entity}" in page.url and "key=" not in page.url
            # the latest event is selected; its raw values are listed
            assert f"step {n} " in page.inner_text("#event-title")
            assert page.locator("#values-body tr").count() > 3
            assert "HR" in page.inner_text("#values-body")
            # pick an event on the chart, then step with the keyboard
            figures.first.locator("circle.pt").first.click()
            assert "step 1 " in page.inner_text("#event-title")
            page.keyboard.press("ArrowRight")
            assert "step 2 " in page.inner_text("#event-title")
            page.keyboard.press("End")
            assert f"step {n} " in page.inner_text("#event-title")
            save(page, tmp_path, "entity.png")

            # the chart follows new events of the open entity
            post(
                server,
                [
                    {
                        "entity_id": entity,
                        "event_id": "late2",
                        "time": iso(datetime.now(UTC) + timedelta(minutes=1)),
                        "values": {"HR": 140},
                    }
                ],
            )
            page.wait_for_function(
                f"document.querySelector('#charts figure.chart').querySelectorAll('circle.pt')"
                f".length === {n + 1}",
                timeout=WAIT_MS,
            )
            assert errors == []
            # every data call, the event stream too, carried the key as a header and never in
            # a URL
            calls = [r for r in requests if "/v1/" in r.url]
            assert any("/v1/stream" in r.url for r in calls)
            assert {r.headers.get("authorization") for r in calls} == {f"Bearer {server.key}"}
            assert not [r.url for r in requests if str(server.key) in r.url]
        finally:
            browser.close()


@browser_test
def test_without_the_event_stream_it_polls_with_etags(server: ServerProcess) -> None:
    ward(server, patients=3, hours=5)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.route("**/v1/stream*", lambda route: route.abort())
            statuses: list[int] = []
            page.on(
                "response",
                lambda r: statuses.append(r.status) if "/v1/watchlist" in r.url else None,
            )
            page.goto(f"{server.url}/ui/")
            sign_in(page, str(server.key))
            page.wait_for_selector('#conn[data-state="polling"]', timeout=WAIT_MS)
            page.wait_for_function(
                "document.querySelectorAll('#watchlist-body tr').length === 3", timeout=WAIT_MS
            )
            post(
                server,
                [
                    {
                        "entity_id": "bed-9",
                        "event_id": "a",
                        "time": iso(datetime.now(UTC)),
                        "values": {},
                    }
                ],
            )
            page.wait_for_selector('#watchlist-body tr[data-entity="bed-9"]', timeout=WAIT_MS)
            # nothing new: the next polls are answered 304 Not Modified
            deadline = 20
            while 304 not in statuses and deadline:
                page.wait_for_timeout(500)
                deadline -= 1
            assert 304 in statuses, statuses
            assert statuses[0] == 200
            # an open entity's chart follows its new events by polling too
            page.click('button.entity-link[data-entity="bed-9"]')
            page.wait_for_selector("#charts figure.chart circle.pt", timeout=WAIT_MS)
            post(
                server,
                [
                    {
                        "entity_id": "bed-9",
                        "event_id": "b",
                        "time": iso(datetime.now(UTC)),
                        "values": {},
                    }
                ],
            )
            page.wait_for_function(
                "document.querySelector('#charts figure.chart').querySelectorAll('circle.pt')"
                ".length === 2",
                timeout=WAIT_MS,
            )
        finally:
            browser.close()


@browser_test
def test_without_a_key_it_asks_for_one_and_signing_out_forgets_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    ward(server, patients=2, hours=3)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            calls: list[str] = []
            page.on("request", lambda r: calls.append(r.url) if "/v1/" in r.url else None)
            page.goto(f"{server.url}/ui/")
            page.wait_for_selector("#signin", state="visible", timeout=WAIT_MS)
            assert page.is_hidden("#signin-error") and page.is_hidden("#signout")
            assert calls == []  # nothing is asked of the service without a key
            save(page, tmp_path, "signin.png")
            sign_in(page, str(server.key))
            page.wait_for_function(
                "document.querySelectorAll('#watchlist-body tr').length === 2", timeout=WAIT_MS
            )
            page.click("#signout")
            page.wait_for_selector("#signin", state="visible", timeout=WAIT_MS)
            assert page.evaluate("sessionStorage.getItem('riskstream.key')") is None
            assert page.locator("#watchlist-body tr").count() == 0
            page.reload()
            page.wait_for_selector("#signin", state="visible", timeout=WAIT_MS)
        finally:
            browser.close()


def revoke(server: ServerProcess, name: str) -> None:
    command = [sys.executable, "-m", "riskstream.cli", "keys", "revoke", name]
    done = subprocess.run(command, env=server.env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@browser_test
def test_a_refused_key_brings_back_the_sign_in_form_saying_why(server: ServerProcess) -> None:
    """Needs the server to check keys (issue 12's wiring): a wrong key is answered 401, a key
    without ``read`` 403, a revoked one 401 within AUTH_CACHE_S."""
    if httpx.get(f"{server.url}/v1/model").status_code == 200:
        pytest.skip("this server does not check keys yet (issue 12's wiring)")
    ward(server, patients=2, hours=3)
    ingest_only = server.create_key("e2e-ingest", ["ingest"])
    doomed = server.create_key("e2e-doomed", ["read"])
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            # a wrong key in the link: the form, with the reason, and the key is not kept
            page.goto(f"{server.url}/ui/#key=rsk_0000000000000000_wrong")
            page.wait_for_selector("#signin-error", state="visible", timeout=WAIT_MS)
            assert "not accepted" in page.inner_text("#signin-error")
            assert page.evaluate("sessionStorage.getItem('riskstream.key')") is None
            assert "key=" not in page.url
            # a key without the read scope: the form names the scope
            sign_in_refused(page, ingest_only)
            assert "read" in page.inner_text("#signin-error")
            # signed in, then the key is revoked: the next call's 401 brings the form back
            page.route("**/v1/stream*", lambda route: route.abort())  # polls every 3 s
            sign_in(page, doomed)
            page.wait_for_function(
                "document.querySelectorAll('#watchlist-body tr').length === 2", timeout=WAIT_MS
            )
            revoke(server, "e2e-doomed")
            page.wait_for_selector("#signin-error", state="visible", timeout=WAIT_MS)
            assert "not accepted" in page.inner_text("#signin-error")
        finally:
            browser.close()


def sign_in_refused(page: Any, key: str) -> None:
    page.fill("#signin-key", key)
    page.click('#signin button[type="submit"]')
    page.wait_for_function(
        "document.querySelector('#signin-error').textContent.includes('scope')", timeout=WAIT_MS
    )


def test_demo_replays_patients_and_can_run_again(server: ServerProcess) -> None:
    args = ["--url", server.url, "--patients", "3", "--speedup", "1e6", "--max-seconds", "20"]
    args += ["--key", str(server.key)]
    assert demo([*args, "--quiet"]) == 0
    listed = httpx.get(f"{server.url}/v1/watchlist", headers=server.headers).json()["entities"]
    assert len(listed) == 3
    features = [
        f["name"]
        for f in httpx.get(f"{server.url}/v1/model", headers=server.headers).json()["features"]
    ]
    hours = {p.patient_id: len(p.rows) for p in load_patients(DEFAULT_DATA, features, 3, 0, 1.5)}
    assert {e["entity_id"]: e["step"] for e in listed} == hours
    # one hourly event per row, an hour apart, with the row's measured values
    entity = listed[0]["entity_id"]
    page = httpx.get(
        f"{server.url}/v1/entities/{entity}/scores",
        params={"limit": 3, "include_values": True},
        headers=server.headers,
    ).json()["scores"]
    times = [datetime.fromisoformat(s["time"].replace("Z", "+00:00")) for s in page]
    assert times[1] - times[0] == times[2] - times[1] == timedelta(hours=1)
    assert all(s["values"] and set(s["values"]) <= set(features) for s in page)
    # again: the same patients' stays go on after their last events, nothing is rejected
    assert demo([*args, "--quiet"]) == 0
    again = httpx.get(f"{server.url}/v1/watchlist", headers=server.headers).json()["entities"]
    assert {e["entity_id"]: e["step"] for e in again} == {p: 2 * n for p, n in hours.items()}
