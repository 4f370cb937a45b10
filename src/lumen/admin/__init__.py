"""The admin REST API under /api/admin (an admin API key; the portal's admin session later)."""
