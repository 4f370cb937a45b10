"""The base of every config section; its own module so that feature packages can declare their
sections without importing `lumen.settings` (which gathers them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigSection(BaseModel):
    """Config sections reject unknown keys, so a typo is reported instead of silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
