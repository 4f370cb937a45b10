"""The profile page: balance, refill rate and the time until the next coin (from the bank), and
the user's groups."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import pytest

from lumen.billing.pools import MICRO, PoolOverrides
from lumen.portal.routes.profile import duration_text
from tests.portal.support import add_user, client, login, set_admin_password
from tests.support import ECHO, RunningLumen, model, running_lumen

CONFIG = {
    "models": [model("echo", ECHO)],
    "billing": {"default_pool": {"max": 100, "refresh": 10}},
    "groups": [
        {"name": "physics", "members": ["pia@example.edu", "pat@example.edu"]},
        {"name": "hpc-users", "members": ["pia@example.edu"], "pool": {"max": 200, "refresh": 20}},
        {"name": "suspended", "members": ["bo@example.edu"], "pool": {"blocked": True}},
    ],
}


@pytest.fixture(scope="module")
def lumen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLumen]:
    with running_lumen(tmp_path_factory.mktemp("profile"), CONFIG) as running:
        set_admin_password(running)
        yield running


def facts(html: str) -> dict[str, str]:
    pairs = re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", html, re.S)
    return {unescape(k): " ".join(unescape(re.sub(r"<[^>]+>", "", v)).split()) for k, v in pairs}


def profile_of(lumen: RunningLumen, email: str) -> str:
    with client(lumen) as browser:
        login(browser, email)
        response = browser.get("/profile")
    assert response.status_code == 200
    return response.text


def set_balance(lumen: RunningLumen, email: str, micro: int) -> None:
    async def work() -> None:
        from lumen.identity import store

        user = await store.find_user(engine=lumen.state.engine, email=email)
        groups = tuple(g.name for g in lumen.state.settings.groups if email in g.members)
        gate = lumen.state.gate
        await lumen.state.bank.set_balance(user.principal, micro, params=gate.pool_params(groups))

    lumen.run(work())


def test_a_full_pool_and_the_groups(lumen: RunningLumen) -> None:
    add_user(lumen, "pia@example.edu")
    page = profile_of(lumen, "pia@example.edu")
    found = facts(page)
    # The most generous group pool applies: hpc-users' 200 coins and 20 per hour.
    assert found["Most you can hold"] == "200.00 coins"
    assert found["Refill rate"] == "20.00 coins per hour"
    assert found["Next coin"] == "Your pool is full"
    assert 'id="profile-balance">200.00 coins<' in page
    groups = re.search(r'<ul class="tags" id="groups">(.*?)</ul>', page, re.S)
    assert groups and re.findall(r"<li>(.*?)</li>", groups.group(1)) == ["physics", "hpc-users"]
    assert 'href="/profile/keys"' in page and 'href="/connect"' in page


def test_time_until_the_next_coin(lumen: RunningLumen) -> None:
    add_user(lumen, "pat@example.edu")
    # 10 coins per hour: half a coin takes three minutes.
    set_balance(lumen, "pat@example.edu", 50 * MICRO + MICRO // 2)
    found = facts(profile_of(lumen, "pat@example.edu"))
    assert found["Next coin"] == "In 3 minutes"
    assert found["Refill rate"] == "10.00 coins per hour" and found["Most you can hold"] == "100.00 coins"
    # The last coin below the top fills the pool.
    set_balance(lumen, "pat@example.edu", 99 * MICRO + MICRO // 2)
    assert facts(profile_of(lumen, "pat@example.edu"))["Next coin"] == "Full in 3 minutes"


def test_a_debt_is_shown_as_owed_with_when_it_is_paid(lumen: RunningLumen) -> None:
    add_user(lumen, "deb@example.edu")
    set_balance(lumen, "deb@example.edu", MICRO)

    async def overspend() -> None:
        from lumen.identity import store

        user = await store.find_user(engine=lumen.state.engine, email="deb@example.edu")
        gate = lumen.state.gate
        r = await lumen.state.bank.reserve(user.principal, MICRO, request_id="r", params=gate.pool_params(()))
        await lumen.state.bank.settle(r, 2 * MICRO + MICRO // 4)  # more than it held: 1.25 coins owed

    lumen.run(overspend())
    page = profile_of(lumen, "deb@example.edu")
    assert 'id="profile-balance">−1.25 coins (owed; refills pay it first)<' in page
    # 10 coins per hour: 1.25 coins take 7.5 minutes.
    assert facts(page)["Next coin"] == "Debt paid in 8 minutes"
    with client(lumen) as browser:
        login(browser, "deb@example.edu")
        home = browser.get("/").text
    assert "−1.25 coins (owed; refills pay it first)" in home


def test_no_refill_blocked_and_unlimited_pools(lumen: RunningLumen) -> None:
    add_user(lumen, "bo@example.edu")
    blocked = profile_of(lumen, "bo@example.edu")
    assert "No coins (blocked)" in blocked and "cannot spend coins" in blocked

    add_user(lumen, "ula@example.edu")
    user_groups: tuple[str, ...] = ()
    gate = lumen.state.gate

    async def own(overrides: PoolOverrides) -> None:
        from lumen.identity import store

        user = await store.find_user(engine=lumen.state.engine, email="ula@example.edu")
        params = gate.pool_params(user_groups)
        await lumen.state.bank.set_pool_settings(user.principal, overrides, params=params)

    lumen.run(own(PoolOverrides(refresh_micro=0, max_micro=100 * MICRO)))
    set_balance(lumen, "ula@example.edu", 5 * MICRO)
    assert facts(profile_of(lumen, "ula@example.edu"))["Next coin"] == "No automatic refill"
    lumen.run(own(PoolOverrides(state="unlimited")))
    unlimited = profile_of(lumen, "ula@example.edu")
    assert "Unlimited coins" in unlimited and "not limited by coins" in unlimited
    assert "You are in no group" in unlimited


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "now"),
        (1, "less than a minute"),
        (59_999, "less than a minute"),
        (60_000, "1 minute"),
        (60_001, "2 minutes"),
        (3_600_000, "1 h"),
        (3_900_000, "1 h 5 min"),
        (48 * 3_600_000, "2 days"),
        (49 * 3_600_000, "3 days"),
    ],
)
def test_duration_text(ms: int, text: str) -> None:
    assert duration_text(ms) == text
