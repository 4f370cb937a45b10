"""The database schema, as SQLAlchemy 2 declarative tables.

This module describes the schema at head; the migrations in `lumen.store.migrations` create it,
and a test checks that the two agree on SQLite and PostgreSQL. Change both together: add a
migration for every change here, never edit a released one.

Later tables (users, projects, coin pools, the ledger) join this metadata through new migrations;
the ledger can reference ``usage_records.id`` (a request charge is one ledger row per usage record).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: migrations (and SQLite batch table rebuilds) need to name the
# constraints they drop or alter, on every backend alike.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only aliases the rowid (and so autoincrements) for a column declared exactly INTEGER.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zones, so the value is stored as naive
    UTC text (which sorts correctly) and the UTC zone is put back when read. Naive datetimes are
    refused: a naive value is a bug that would silently shift times by the server's offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: Lumen stores timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UsageRecordRow(Base):
    """One served (or refused-after-start) request: who, which model, how many tokens, what cost.

    Append-only, written in batches by `lumen.usage.recorder.UsageRecorder`. Strings have no
    length limit and there are no CHECK constraints on purpose: a value the database refuses would
    make a whole batch fail; validation belongs to the code that builds the record.
    """

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Who made the request: "bootstrap" for now; later "user:<id>" / "project:<id>".
    principal: Mapped[str] = mapped_column(String)
    key_id: Mapped[str | None] = mapped_column(String)
    model: Mapped[str] = mapped_column(String)
    # Which backend endpoint served the request (None when refused before one was chosen).
    endpoint: Mapped[str | None] = mapped_column(String)
    source: Mapped[str] = mapped_column(String)  # "api" or "chat"
    operation: Mapped[str] = mapped_column(String)  # "chat.completions", "completions", "embeddings"
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    # True when the upstream sent no usage and the tokens were counted locally.
    estimated: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Integer micro-coins (1 coin = 1,000,000), never a float.
    cost_micro: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)  # the HTTP status Lumen answered with
    finish_reason: Mapped[str | None] = mapped_column(String)
    error_code: Mapped[str | None] = mapped_column(String)
    # Unique per record (migration 0010): a record written twice (a retried batch, the coin outbox
    # drained again) is inserted once. None for rows from before 0010.
    record_id: Mapped[str | None] = mapped_column(String)

    __table_args__ = (
        # Per-user usage pages and budget audits: one principal's rows in time order.
        Index("ix_usage_records_principal_created_at", "principal", "created_at"),
        # Per-model statistics over a time window.
        Index("ix_usage_records_model_created_at", "model", "created_at"),
        # System-wide "recent usage" and time-window aggregates.
        Index("ix_usage_records_created_at", "created_at"),
        # One API key's usage (a project's keys, the usage page's key filter); migration 0009.
        Index("ix_usage_records_key_id_created_at", "key_id", "created_at"),
        Index("uq_usage_records_record_id", "record_id", unique=True),
    )


usage_records: Table = Base.metadata.tables["usage_records"]


class UserRow(Base):
    """A person. Created at first login or by an admin; the email is the identity."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String, unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String, default="", server_default="")
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The identity provider's claims at the last login, for group rules.
    claims: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Argon2id hash for the portal's local login (migration 0006); None: no password login.
    password_hash: Mapped[str | None] = mapped_column(String)


class ProjectRow(Base):
    """A service account: requests made with its keys are paid by the project."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    description: Mapped[str] = mapped_column(String, default="", server_default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProjectManagerRow(Base):
    __tablename__ = "project_managers"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


class ApiKeyRow(Base):
    """An API key. Only a keyed hash of the secret is stored; revoked keys stay, marked, so their
    usage history keeps its key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # "key_<hex>", shown in usage
    owner_kind: Mapped[str] = mapped_column(String)  # "user" or "project"
    owner_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String, default="", server_default="")
    secret_hash: Mapped[str] = mapped_column(String, unique=True)  # HMAC-SHA256 hex
    hint: Mapped[str] = mapped_column(String)  # e.g. "sk_Ab…xyz"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    models: Mapped[list[str] | None] = mapped_column(JSON)  # allow-list; None = every model
    coin_cap_micro: Mapped[int | None] = mapped_column(BigInteger)
    created_by: Mapped[int | None] = mapped_column(BigInteger)
    # Made for administration: only such a key of an administrator opens the admin API (0012).
    admin: Mapped[bool] = mapped_column(default=False, server_default=false())

    __table_args__ = (Index("ix_api_keys_owner", "owner_kind", "owner_id"),)


users: Table = Base.metadata.tables["users"]
projects: Table = Base.metadata.tables["projects"]
project_managers: Table = Base.metadata.tables["project_managers"]
api_keys: Table = Base.metadata.tables["api_keys"]


class ModelAccessRuleRow(Base):
    """A user's or project's model access rule (see `lumen.access`): one row per principal that has
    one. The lists hold model names or shell-style patterns; the whole rule is read and written at
    once, so it is one row rather than one row per entry."""

    __tablename__ = "model_access_rules"

    principal: Mapped[str] = mapped_column(String, primary_key=True)  # "user:<id>" or "project:<id>"
    # "allowed", "blocked" or None (no default of its own). Not named `default`: an SQL keyword.
    default_access: Mapped[str | None] = mapped_column(String)
    allow: Mapped[list[str]] = mapped_column(JSON)
    block: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str | None] = mapped_column(String)  # who changed it last, "user:<id>"


class ModelAcknowledgementRow(Base):
    """A user, or a project manager for a project, acknowledged a model's notice.

    Never updated or deleted: a changed notice has a new hash and needs a new row, and the old rows
    stay as the record of what was acknowledged when.
    """

    __tablename__ = "model_acknowledgements"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String)  # who it covers: "user:<id>" or "project:<id>"
    model: Mapped[str] = mapped_column(String)
    notice_hash: Mapped[str] = mapped_column(String)  # SHA-256 hex of the notice text
    notice: Mapped[str] = mapped_column(String)  # the text as it was acknowledged
    acknowledged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str] = mapped_column(String)  # the person: "user:<id>"
    via: Mapped[str] = mapped_column(String)  # "web" or "api"

    __table_args__ = (
        # One acknowledgement per notice (recording again is a no-op); also serves the per-principal
        # load, its leading column being the principal.
        Index(
            "uq_model_acknowledgements_principal_model_notice_hash",
            "principal",
            "model",
            "notice_hash",
            unique=True,
        ),
    )


model_access_rules: Table = Base.metadata.tables["model_access_rules"]
model_acknowledgements: Table = Base.metadata.tables["model_acknowledgements"]


class CoinPoolRow(Base):
    """A user's or project's coin pool: the durable balance and its refill clock.

    ``balance_micro`` is always the sum of the principal's ``coin_ledger`` rows: the ledger writer
    inserts the rows and adds their sum here in one transaction (`lumen audit` checks it). The hot
    balance lives in memory or Redis (`lumen.billing.bank`); this row is read when a pool is first
    used by a process. The nullable ``*_micro``/``state`` columns are the entity's own pool
    settings; None inherits from the groups or the default.
    """

    __tablename__ = "coin_pools"

    principal: Mapped[str] = mapped_column(String, primary_key=True)  # "user:<id>" / "project:<id>"
    balance_micro: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # The refill is accounted up to this instant; `refill_carry` is the sub-micro-coin remainder.
    refilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refill_carry: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # When the starting balance was credited (None: own settings saved before the first use).
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str | None] = mapped_column(String)  # "limited", "unlimited", "blocked"
    max_micro: Mapped[int | None] = mapped_column(BigInteger)
    refresh_micro: Mapped[int | None] = mapped_column(BigInteger)  # per hour
    starting_micro: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CoinLedgerRow(Base):
    """One movement of coins: append-only, signed, with the balance it left.

    Kinds: ``start`` (a new pool's starting balance), ``charge`` (a request, negative), ``refill``,
    ``grant``, ``refund``, ``reset`` (back to the starting balance) and ``set`` (an administrator
    set the balance). ``balance_after_micro`` is the hot balance right after the movement.
    """

    __tablename__ = "coin_ledger"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String)
    amount_micro: Mapped[int] = mapped_column(BigInteger)
    balance_after_micro: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str | None] = mapped_column(String, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str | None] = mapped_column(String)  # who moved the coins: "system", "user:3", ...
    note: Mapped[str | None] = mapped_column(String)
    # The movement's id in the Redis ledger outbox ("<epoch>-<seq>", migration 0008): writing an
    # outbox entry twice inserts it once. None for movements written by an in-process writer
    # (and rows from before 0008); the unique index allows any number of NULLs.
    movement_id: Mapped[str | None] = mapped_column(String)

    __table_args__ = (
        # A principal's history in order, and the audit's per-principal sums.
        Index("ix_coin_ledger_principal_id", "principal", "id"),
        Index("ix_coin_ledger_created_at", "created_at"),
        Index("uq_coin_ledger_movement_id", "movement_id", unique=True),
    )


coin_pools: Table = Base.metadata.tables["coin_pools"]
coin_ledger: Table = Base.metadata.tables["coin_ledger"]


class RateLimitOverrideRow(Base):
    """A user's or project's own rate limits (`LimitSettings` as JSON; left-out fields inherit)."""

    __tablename__ = "rate_limit_overrides"

    principal: Mapped[str] = mapped_column(String, primary_key=True)
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str | None] = mapped_column(String)


rate_limit_overrides: Table = Base.metadata.tables["rate_limit_overrides"]


# --- portal sessions (migration 0006; lumen.identity.sessions) ----------------------------------


class PortalSessionRow(Base):
    """A logged-in browser. The cookie holds a random token; ``id`` is its keyed hash (HMAC with
    the server secret), so the table alone cannot be used to log in. Deleted at logout; expired
    rows are swept at each login."""

    __tablename__ = "portal_sessions"

    id: Mapped[str] = mapped_column(String, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String)  # the synchronizer token of this session
    method: Mapped[str] = mapped_column(String)  # "password" or "oidc"
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)  # idle expiry counts from here
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # absolute expiry
    ip: Mapped[str | None] = mapped_column(String)
    user_agent: Mapped[str | None] = mapped_column(String)

    __table_args__ = (
        # "Log out everywhere" and the cascade from a deleted user.
        Index("ix_portal_sessions_user_id", "user_id"),
        # The sweep of expired sessions.
        Index("ix_portal_sessions_expires_at", "expires_at"),
        Index("ix_portal_sessions_last_seen_at", "last_seen_at"),
    )


portal_sessions: Table = Base.metadata.tables["portal_sessions"]


# --- chat conversations (migration 0007; lumen.chat) -------------------------------------------


class ConversationRow(Base):
    """A portal chat conversation, owned by one user. Its messages form a tree (see `MessageRow`).

    ``leaf_message_id`` is the message the user is looking at: the shown conversation is the path
    from the root to it. It has no foreign key on purpose: conversations and messages would
    reference each other, which SQLite can only create by rebuilding a table; messages are only
    ever deleted with their conversation, so the id stays valid (`lumen.chat.tree` falls back to
    the newest message if it ever is not).
    """

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # random, URL-safe
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String)
    model: Mapped[str | None] = mapped_column(String)
    system_prompt: Mapped[str] = mapped_column(Text, default="", server_default="")
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    archived: Mapped[bool] = mapped_column(default=False, server_default=false())
    leaf_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # The sidebar: one user's (non-)archived conversations, newest first, by keyset cursor
        # (updated_at, id); also drives search, which walks the same order and stops at a page.
        Index("ix_conversations_owner_id_archived_updated_at_id", "owner_id", "archived", "updated_at", "id"),
    )


class MessageRow(Base):
    """One message of a conversation; a node of the conversation's tree.

    ``parent_id`` is the message it answers or follows (None for the first). Siblings (same parent)
    are alternatives: a regenerated answer, or an edited message with the branch that followed it.
    ``position`` is the depth (0 for the first message), so siblings share it. ``owner_id`` repeats
    the conversation's owner so a search of one user's messages reads only that user's rows.
    The assistant fields (model, tokens, cost, ttft, finish reason, stopped) are None/False for
    other roles.
    """

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String, ForeignKey("conversations.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(BigInteger)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String)  # "system", "user" or "assistant"
    content: Mapped[str] = mapped_column(Text)
    # [{name, type, size, text_chars, text?}]; None when the message has no attachments.
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    model: Mapped[str | None] = mapped_column(String)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_micro: Mapped[int | None] = mapped_column(BigInteger)  # integer micro-coins
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String)
    stopped: Mapped[bool] = mapped_column(default=False, server_default=false())  # the user pressed Stop
    request_id: Mapped[str | None] = mapped_column(String)  # the usage record of the answer
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # Loading one conversation's messages in order.
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        # The foreign-key cascade from a deleted parent looks children up by parent_id; without an
        # index every deleted message would scan the whole table.
        Index("ix_messages_parent_id", "parent_id"),
        # Content search reads only the searching user's messages.
        Index("ix_messages_owner_id_conversation_id", "owner_id", "conversation_id"),
    )


conversations: Table = Base.metadata.tables["conversations"]
messages: Table = Base.metadata.tables["messages"]


# --- the admin audit log (migration 0009; lumen.admin.audit_log) ---------------------------------


class AdminAuditRow(Base):
    """One administrative action: who did what to whom, when, with which values.

    Append-only: written by every state-changing admin-API route and portal project action through
    `lumen.admin.audit_log.record`, never updated or deleted by Lumen. ``details`` holds the
    request's values (never a secret: a created key's secret is not in it).
    """

    __tablename__ = "admin_audit"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String)  # "user:<id>"
    actor_name: Mapped[str] = mapped_column(String, default="", server_default="")  # the email then
    action: Mapped[str] = mapped_column(String)  # e.g. "user.update", "coins.grant", "project.create"
    target: Mapped[str] = mapped_column(String)  # "user:<id>", "project:<id>", "key:<id>"
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The face the action came through (migration 0011): "api" (the admin API, which the admin
    # pages call too), "portal" or "cli"; "" for entries written before it was recorded.
    face: Mapped[str] = mapped_column(String, default="", server_default="")

    __table_args__ = (
        # The audit page walks everything newest first by id (the primary key); these serve its
        # filters: one target's history and one actor's actions.
        Index("ix_admin_audit_target_id", "target", "id"),
        Index("ix_admin_audit_actor_id", "actor", "id"),
    )


admin_audit: Table = Base.metadata.tables["admin_audit"]


# --- one way to change state (migration 0011; lumen.changes, lumen.actions) ----------------------


class ChangeLogRow(Base):
    """One change that makes cached state stale, appended by whichever process or command made it.

    Processes without Redis poll it (`WHERE id > last seen`, on the primary key) and drop what each
    row makes stale; with Redis the same change is pushed on pub/sub as well. Rows older than an
    hour are pruned by the serving processes.
    """

    __tablename__ = "change_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    change: Mapped[str] = mapped_column(String)  # a `lumen.changes.Change` value
    principal: Mapped[str | None] = mapped_column(String)  # whose state, or None for everyone's
    origin: Mapped[str] = mapped_column(String)  # the process that wrote it (it does not re-apply it)


class CoinCommandRow(Base):
    """A coin movement asked of the running server that holds the balances in its memory (no Redis).

    `lumen coins` writes it `pending`; the server claims it (`running`), applies it with its own
    bank and answers (`done` with the pool as it is then, or `failed` with the error). A command no
    server claimed in time is `cancelled` by the command that wrote it.
    """

    __tablename__ = "coin_commands"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    principal: Mapped[str] = mapped_column(String)  # the pool: "user:<id>" or "project:<id>"
    action: Mapped[str] = mapped_column(String)  # "grant", "set", "reset", "settings", "show"
    amount_micro: Mapped[int | None] = mapped_column(BigInteger)
    overrides: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # for "settings"
    note: Mapped[str | None] = mapped_column(String)
    actor: Mapped[str] = mapped_column(String)  # who asked: written on the ledger rows
    state: Mapped[str] = mapped_column(String)  # "pending", "running", "done", "failed", "cancelled"
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProcessHeartbeatRow(Base):
    """A serving process, while it runs: it beats every few seconds and deletes its row on a clean
    stop. The `lumen` command reads it to know whether a running server keeps its state locally
    (no Redis), and waits until such servers have read the changes it made."""

    __tablename__ = "process_heartbeats"

    origin: Mapped[str] = mapped_column(String, primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    local_state: Mapped[bool] = mapped_column(default=False, server_default=false())
    """True without Redis: the balances live in this process's memory (coin commands go to it)
    and it learns of changes by polling the change log."""
    seen_change: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    """The newest change-log id this process has applied (when it polls)."""


change_log: Table = Base.metadata.tables["change_log"]
coin_commands: Table = Base.metadata.tables["coin_commands"]
process_heartbeats: Table = Base.metadata.tables["process_heartbeats"]


# --- stored responses of the Responses API (migration 0013; lumen.api.responses.store) -----------


class StoredResponseRow(Base):
    """A response of `POST /v1/responses` made with `store` (the default), kept for retrieval and
    for `previous_response_id` until `expires_at` (`lumen.api.responses.store.RETENTION`).

    ``owner`` is the principal that made it ("user:<id>" or "project:<id>"): only it can read,
    continue or delete it. ``input_items`` are the request's own input items as sent (reasoning
    items and their `encrypted_content` included); ``history`` the conversation before them
    (the previous response's history, input and output), so a continuation reads one row.
    """

    __tablename__ = "stored_responses"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # "resp_..."
    owner: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # the Response object as returned
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON)

    __table_args__ = (
        # The pruning of expired responses.
        Index("ix_stored_responses_expires_at", "expires_at"),
    )


stored_responses: Table = Base.metadata.tables["stored_responses"]
