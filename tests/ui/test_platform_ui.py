"""The web UI of `vamp run` in chromium, against a real platform on loopback with sava 1.0 and 1.1 deployed: the
overview lists the deployment and its instances; a weight moved with the keyboard on a slider is checked, applied
and served (real requests through the gateway); an invalid condition shows the API's error at its position and
changes nothing; a canary's page follows a rollback by itself and one asked for with its Abort button; an event
shows within 2 s. Each page's screenshot goes to the artifacts (conftest.py)."""
from __future__ import annotations

import re
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.support import BrokenResponse, HttpClient, free_port
from tests.support.platform import PlatformProcess
from tests.support.waiting import eventually

from .conftest import TIMEOUT_MS

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402 - only once Playwright is known to be there

REPO = Path(__file__).resolve().parents[2]
INTERNAL = "sava/sava/webport"
OLD, NEW = "sava/sava/sava:1.0.0/webport", "sava/sava/sava:1.1.0/webport"
DEPLOY_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def sava(module_procs) -> PlatformProcess:
    """`vamp run` with deployment sava: 1.0.0 at 100%, 1.1.0 merged at 0%."""
    platform = PlatformProcess(module_procs.workdir / "state", module_procs.workdir)
    module_procs.started.append(platform)
    platform.start()
    blueprint = module_procs.workdir / "sava-1.0.yaml"
    blueprint.write_text((REPO / "examples" / "sava-1.0.yaml").read_text().replace("9050:", f"{free_port()}:"))
    for path in (blueprint, REPO / "examples" / "sava-1.1.yaml"):
        platform.vamp("deploy", str(path), "--name", "sava", "--api", platform.api_url, timeout=DEPLOY_TIMEOUT)
    return platform


def internal_gateway(platform: PlatformProcess) -> dict:
    status, document = platform.api("GET", f"/api/v1/gateways/{INTERNAL}")
    assert status == 200, (status, document)
    return document


def versions(port: int, count: int) -> Counter:
    """X-Version of `count` requests through the gateway on `port` (empty when it does not answer yet)."""
    client = HttpClient(port, timeout=5)
    seen: Counter = Counter()
    try:
        for _ in range(count):
            seen[client.request("GET", "/").version] += 1
    except (OSError, BrokenResponse):
        return Counter()
    finally:
        client.close()
    return seen


def set_weights(platform: PlatformProcess, old: str, new: str) -> None:
    status, answer = platform.api("PATCH", f"/api/v1/gateways/{INTERNAL}",
                                  {"routes": {OLD: {"weight": old}, NEW: {"weight": new}}})
    assert status == 202, (status, answer)


def open_page(page, platform: PlatformProcess, address: str) -> None:
    page.goto(f"{platform.api_url}/ui/{address}")
    expect(page.locator("#live")).to_have_text("● live")


def test_the_overview_lists_the_deployment_with_its_instances_and_the_gateways(sava, page, screens):
    open_page(page, sava, "#/")
    deployment = page.locator('[data-deployment="sava"]')
    for version in ("1.0.0", "1.1.0"):
        service = deployment.locator(f'[data-service="sava:{version}"]')
        expect(service).to_contain_text("deployed")
        expect(service.locator(f'[data-instance="sava/sava/sava:{version}#0"]')).to_contain_text("ready")
    expect(page.locator(f'[data-gateway="{INTERNAL}"]')).to_contain_text(internal_gateway(sava)["port"])
    screens.shoot(page, "overview")
    page.set_viewport_size({"width": 390, "height": 844})         # a phone
    expect(deployment).to_be_visible()
    screens.shoot(page, "overview-phone")


def test_a_weight_moved_on_the_slider_is_checked_then_applied_and_served(sava, page, screens):
    port = int(internal_gateway(sava)["port"].split("/")[0])
    assert versions(port, 10) == Counter({"1.0.0": 10})
    open_page(page, sava, f"#/gateways/{INTERNAL.replace('/', '%2F')}")
    slider = page.get_by_label(f"Weight of route {NEW}, slider")
    slider.focus()
    slider.press("End")                                            # the keyboard: 1.1.0 to 100%, 1.0.0 the rest
    expect(page.locator(f'input.weight-number[data-route="{OLD}"]')).to_have_value("0.00")
    expect(page.locator("#apply-weights")).to_be_enabled()         # the API checked it (validate_only)
    expect(page.locator("#split-list")).to_contain_text(f"{NEW}: 100.00%")
    assert versions(port, 10) == Counter({"1.0.0": 10}), "the check alone changed the gateway"
    screens.shoot(page, "gateway-preview")
    page.locator("#apply-weights").click()
    expect(page.locator("#weights-ok")).to_have_text("Applied.")
    eventually(lambda: versions(port, 10) == Counter({"1.1.0": 10}), 10, "serving 1.1.0 only",
               context=lambda: versions(port, 10))
    assert internal_gateway(sava)["routes"][NEW]["weight"] == "100%"
    largest = page.locator(f'section.route[data-route="{NEW}"] figure[data-chart="requests/s"] svg text')

    def chart_max() -> str:
        versions(port, 5)           # traffic goes on while the chart catches up (it draws rates over 5 s steps)
        return largest.text_content() or ""

    eventually(lambda: not re.fullmatch(r"max (–|0\.00)", chart_max()), 20, "the chart drawing what is served",
               context=chart_max)
    screens.shoot(page, "gateway")
    set_weights(sava, "100%", "0%")
    expect(page.locator(f'input.weight-number[data-route="{NEW}"]')).to_have_value("0.00")   # live, by itself


def test_an_invalid_condition_shows_the_error_at_its_position_and_changes_nothing(sava, page, screens):
    before = internal_gateway(sava)
    open_page(page, sava, f"#/gateways/{INTERNAL.replace('/', '%2F')}")
    route = page.locator(f'section.route[data-route="{NEW}"]')
    condition = route.get_by_label("Condition", exact=True)
    condition.fill("user-agent = (( ")
    route.get_by_role("button", name="Apply condition").click()
    caret = route.locator(".caret")
    expect(caret).to_have_attribute("data-position", "13")
    expect(caret).to_have_text("user-agent = ((\n             ^")
    expect(route.locator(".condition-error")).to_contain_text("position 13")
    expect(route.locator(".condition-error")).to_contain_text("nothing changed")
    expect(condition).to_have_attribute("aria-invalid", "true")
    screens.shoot(page, "condition-error")
    after = internal_gateway(sava)
    assert {key: value for key, value in after.items() if key != "status"} == \
        {key: value for key, value in before.items() if key != "status"}
    assert "condition" not in after["routes"][NEW]


def canary(platform: PlatformProcess, name: str, **parameters) -> None:
    document = {"name": name, "schedule": "daemon", "workflow": "canary", "parameters": {
        "gateway": INTERNAL, "baseline": "sava:1.0.0", "canary": "sava:1.1.0", "steps": ["20%", "100%"],
        **parameters}}
    status, answer = platform.api("PUT", f"/api/v1/workflows/{name}", document)
    assert status in (200, 201), (status, answer)


def test_a_canary_s_page_follows_a_rollback_and_aborts_one_after_asking(sava, page, screens):
    # 1. without traffic, the first judgement (after 3 s) rolls back: the page shows it by itself
    canary(sava, "ui-rollback", interval="3s", min_requests=100, no_data="rollback")
    open_page(page, sava, "#/canaries/ui-rollback")
    expect(page.locator("#phase")).to_have_text("progressing")
    expect(page.locator("#weights")).to_contain_text("20%")
    expect(page.locator("#phase")).to_have_text("rolled back", timeout=TIMEOUT_MS)
    expect(page.locator("#reason")).to_contain_text("no data")
    expect(page.locator('[data-figure="verdict"]')).to_contain_text("no data")
    expect(page.locator("#abort")).to_be_disabled()
    screens.shoot(page, "canary")

    # 2. a canary in progress, aborted from its page once the dialog is confirmed
    canary(sava, "ui-abort", interval="60s")
    open_page(page, sava, "#/canaries/ui-abort")
    expect(page.locator("#phase")).to_have_text("progressing")
    page.locator("#abort").click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("roll back")
    page.locator("#confirm-yes").click()
    expect(page.locator("#phase")).to_have_text("rolled back")
    expect(page.locator("#reason")).to_contain_text("aborted by hand")
    assert internal_gateway(sava)["routes"][NEW]["weight"] == "0%"


def test_an_event_shows_within_two_seconds_and_the_tag_filter_keeps_only_its_own(sava, page, screens):
    mark = uuid.uuid4().hex[:8]
    open_page(page, sava, f"#/events?tag=ui:{mark}")
    status, _ = sava.api("POST", "/api/v1/events", {"tags": ["ui-test", f"other:{mark}"]})
    assert status == 201
    status, event = sava.api("POST", "/api/v1/events", {"tags": ["ui-test", f"ui:{mark}"], "value": {"n": 1}})
    assert status == 201
    expect(page.locator(f'[data-event="{event["id"]}"]')).to_contain_text(f"ui:{mark}", timeout=2000)
    expect(page.locator("#event-list li")).to_have_count(1)
    page.locator("#tag-filter").fill("")
    page.get_by_role("button", name="Filter").click()              # every event again
    expect(page.locator(f'[data-event="{event["id"]}"]')).to_be_visible()
    expect(page.locator("#event-list")).to_contain_text(f"other:{mark}")
    screens.shoot(page, "events")
