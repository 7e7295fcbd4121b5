"""The gateways-only web UI of `vamp gateway` in chromium, against a real gateway with a token on loopback: the UI
asks for the token, says so plainly when it is wrong, works once the right one is entered (and keeps it across a
reload), drains and undrains a target through the admin API, and says when the API cannot be reached."""
from __future__ import annotations

import json
import re

import pytest

from tests.support import GatewayProcess, shop_config, free_port

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402 - only once Playwright is known to be there

TOKEN = "ui-test-token-5b1f"


@pytest.fixture
def shop(procs) -> GatewayProcess:
    echo = procs.backend("echo", "v1", "v2")
    return procs.gateway(shop_config(free_port(), echo), extra_args=("--token", TOKEN), token=TOKEN)


def stable_targets(gateway: GatewayProcess) -> list:
    return json.loads(gateway.admin_get("/api/v1/gateways/shop"))["routes"]["stable"]["targets"]


def test_the_ui_asks_for_the_token_refuses_a_wrong_one_and_then_steers_the_gateway(shop, page, screens):
    page.goto(shop.admin_url("/ui/"))
    token = page.get_by_label("API token")
    expect(token).to_be_focused()
    token.fill("not-the-token")
    token.press("Enter")
    expect(page.locator("#token-message")).to_contain_text("refused this token (401)")
    screens.shoot(page, "token-refused")
    token.fill(TOKEN)
    page.get_by_role("button", name="Use this token").click()
    expect(page.locator("#token")).to_be_hidden()
    expect(page.locator('[data-gateway="shop"]')).to_contain_text("active")
    page.reload()                                                   # asked once: the tab keeps it
    expect(page.locator('[data-gateway="shop"]')).to_be_visible()
    expect(page.locator("#token")).to_be_hidden()

    page.get_by_role("link", name="shop").click()
    address = shop.config["gateways"]["shop"]["routes"]["stable"]["targets"][0]
    row = page.locator(f'section.route[data-route="stable"] tr[data-target="{address}"]')
    expect(row).to_contain_text("active")
    page.get_by_role("button", name=f"Drain target {address} of route stable").click()
    expect(row.locator(".state")).to_have_text(re.compile(r"^drain(ing|ed)$"))     # drained: nothing was in flight
    assert stable_targets(shop) == [{"address": address, "weight": 100, "drain": True}]
    screens.shoot(page, "gateway-mode")
    page.get_by_role("button", name=f"Undrain target {address} of route stable").click()
    expect(row.locator(".state")).to_have_text("active")
    assert stable_targets(shop) in ([address], [{"address": address, "weight": 100, "drain": False}])

    shop.stop()                                                     # the API goes away: the page says so
    expect(page.locator("#problem")).to_contain_text("cannot be reached")
