from tests.store.conftest import pg_server, pg_url

__all__ = ["pg_server", "pg_url"]
