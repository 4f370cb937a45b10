"""Model access: who may use which model, and acknowledgements of model notices.

`config` declares the settings, `policy` resolves one model for one caller (pure), `store` keeps
per-user and per-project rules and acknowledgements in the database, and `resolver` caches the
decisions for the request path. The administrator's view is `docs/access.md`.
"""
