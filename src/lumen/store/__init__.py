"""Storage: the engine (SQLite or PostgreSQL), the tables and their migrations."""
