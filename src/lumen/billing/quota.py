"""The 429 ``insufficient_quota`` answer: what the pool has (or owes), what the request needs, when
it can run. When that time is known it is also in the ``retry-after`` header (seconds)."""

from __future__ import annotations

from lumen.billing.ledger import ms_to_datetime
from lumen.billing.pools import format_coins, time_to_afford
from lumen.billing.store import Admission
from lumen.errors import InsufficientQuota


def human_duration(ms: int) -> str:
    """``90_000`` -> ``"2 minutes"``: rounded up, two units at most."""
    seconds = -(-ms // 1000)
    if seconds < 60:
        return f"{seconds} second{'s' * (seconds != 1)}"
    minutes = -(-seconds // 60)
    units = [("day", minutes // 1440), ("hour", minutes // 60 % 24), ("minute", minutes % 60)]
    parts = [f"{n} {name}{'s' * (n != 1)}" for name, n in units if n]
    return " ".join(parts[:2])


def insufficient_quota(
    admission: Admission, needed_micro: int, *, soft: bool, now_ms: int
) -> InsufficientQuota:
    """The error for a refused reservation; the message says when enough coins will be there."""
    view = admission.view
    params = view.params
    if admission.status == "blocked":
        return InsufficientQuota(
            "Your coin pool is blocked by an administrator: no requests can be made with it "
            "until it is unblocked."
        )
    available = view.available_micro
    text = _debt(admission, now_ms) + " " if view.balance_micro < 0 else ""
    if soft:
        target = 1  # soft mode admits while anything is left
        text += (
            f"Out of coins: your balance is {format_coins(available)} coins, and requests are "
            f"admitted while it is above zero."
        )
    else:
        target = needed_micro
        text += (
            f"Insufficient coins: this request may cost up to {format_coins(needed_micro)} coins "
            f"(its prompt plus max_tokens) and {format_coins(max(available, 0))} are available."
        )
    if view.reserved_micro:
        text += f" {format_coins(view.reserved_micro)} coins are held by your requests in progress."
    wait = time_to_afford(view.balance_micro, view.reserved_micro, view.carry, params, target)
    headers: dict[str, str] = {}
    if wait is not None:
        what = "coins" if soft else "coins for this request"
        text += (
            f" Your pool refills {format_coins(params.refresh_micro)} coins per hour: enough {what} "
            f"at {_when(now_ms, wait)} (in {human_duration(wait)})."
        )
        headers["retry-after"] = str(max(1, -(-wait // 1000)))
    elif params.refresh_micro == 0:
        text += " Your pool is not refilled automatically: ask an administrator for coins."
    elif target > params.max_micro:
        text += f" That is more than your pool can hold ({format_coins(params.max_micro)} coins)."
    else:
        text += " Enough coins will be available when your requests in progress finish."
    if not soft and needed_micro > max(available, 0):
        text += " A lower max_tokens (or max_completion_tokens) needs fewer coins."
    return InsufficientQuota(text, headers=headers)


def _when(now_ms: int, wait_ms: int) -> str:
    return ms_to_datetime(now_ms + wait_ms).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _debt(admission: Admission, now_ms: int) -> str:
    """What a pool in debt owes, and when the refills will have paid it."""
    view = admission.view
    owed = -view.balance_micro
    text = (
        f"Your coin pool owes {format_coins(owed)} coins: requests cost more than they had reserved, "
        f"and the difference is a debt that the refills pay first."
    )
    paid = time_to_afford(view.balance_micro, 0, view.carry, view.params, 0)
    if paid is not None:
        text += f" It is paid at {_when(now_ms, paid)} (in {human_duration(paid)})."
    return text
