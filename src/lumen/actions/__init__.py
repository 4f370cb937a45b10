"""One way to change state: one service per kind of change, shared by every face.

The admin API (and the admin pages, which call it), the portal and the `lumen` command all change
state through these functions, never by writing the tables themselves. Each service

1. writes the change,
2. announces it on the change bus (`lumen.changes`), so that every process drops what it makes
   stale: this one at once, the others by push (Redis) or by polling the change log, and
3. writes the audit-log entry (`lumen.admin.audit_log`) with the actor and the face it came from.

Modules: `context` (who acts, from where, with what), `keys` (revocation), `accounts` (disabling
users and projects), `policy` (access rules and rate-limit overrides), `coins` (grants, sets,
resets, pool settings) and `commands` (coin commands a running server without Redis executes).
"""
