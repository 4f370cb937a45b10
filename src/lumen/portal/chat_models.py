"""The chat page's model picker: exactly the chat models the user may use, as `/v1/models` lists
them (the same access resolver and registry), with what the picker shows of each."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from lumen.identity.principal import Principal
from lumen.state import AppState


@dataclass(frozen=True, slots=True)
class ModelOption:
    name: str
    description: str
    price_input: float
    """Coins per million input tokens."""
    price_output: float
    """Coins per million output tokens."""
    context_window: int | None
    max_output_tokens: int | None
    images: bool
    """Takes images as input (`capabilities.modalities` has `image`)."""
    tools: bool
    reasoning: bool
    needs_ack: bool
    """Listed, but refused until the user acknowledges `notice`."""
    notice: str | None
    notice_hash: str | None
    acknowledged: bool
    available: bool
    """At least one endpoint is up now (health is advisory: a request still tries)."""

    @property
    def input_text(self) -> str:
        return plain_number(self.price_input)

    @property
    def output_text(self) -> str:
        return plain_number(self.price_output)

    @property
    def price_label(self) -> str:
        """The price in a few words, for the picker: input / output coins per million tokens."""
        if not self.price_input and not self.price_output:
            return "free"
        return f"{self.input_text} / {self.output_text} coins per 1M tokens"

    @property
    def capabilities(self) -> list[str]:
        names = ["text"]
        if self.images:
            names.append("images")
        if self.tools:
            names.append("tools")
        if self.reasoning:
            names.append("reasoning")
        return names


def plain_number(value: float) -> str:
    """A price as people write it: 2, 0.15 or 1000000000 (no exponent, no trailing zeros)."""
    text = f"{Decimal(str(value)):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


async def model_options(state: AppState, principal: Principal) -> list[ModelOption]:
    """The chat models `principal` may use now or after acknowledging, in config order."""
    view = await state.access.resolve(principal.id, principal.groups)
    now = time.monotonic()
    options = []
    for decision in view.listed(principal.models):
        model = state.registry.get(decision.model)
        if model is None or model.settings.kind != "chat":
            continue
        settings, caps = model.settings, model.settings.capabilities
        fields = view.model_fields(decision.model)
        ack = fields["acknowledgement"] or {}
        options.append(
            ModelOption(
                name=settings.name,
                description=settings.description,
                price_input=settings.price.input,
                price_output=settings.price.output,
                context_window=caps.context_window,
                max_output_tokens=caps.max_output_tokens,
                images="image" in caps.modalities,
                tools=caps.tools,
                reasoning=caps.reasoning,
                needs_ack=fields["access"] == "acknowledgement_required",
                notice=ack.get("notice"),
                notice_hash=ack.get("notice_hash"),
                acknowledged=bool(ack.get("acknowledged")),
                available=any(e.is_up(now) for e in model.endpoints),
            )
        )
    return options
