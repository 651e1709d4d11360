"""An auth manager for the Fireworks page's tests: Airflow's simple auth manager, except that the
``user`` role may read connections (not edit them). The simple auth manager grants connection
reads and edits to the same role (``op``), so on its own it cannot show that the page's list needs
read access while its actions need edit access. The api-server of ``test_plugin_api`` loads it
with ``AIRFLOW__CORE__AUTH_MANAGER``; this module must not import the tests' conftest (it sets up
a different Airflow home at import).
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

CLASS_PATH = f"{__name__}.ReadConnectionsAuthManager"


class ReadConnectionsAuthManager(SimpleAuthManager):
    """``SimpleAuthManager`` where role ``user`` may also GET connections."""

    def is_authorized_connection(self, *, method: Any, user: Any, details: Any = None) -> bool:
        if method == "GET" and (user.role or "").lower() == "user":
            return True
        return super().is_authorized_connection(method=method, user=user, details=details)


def test_the_user_role_reads_but_does_not_edit_connections():
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = ReadConnectionsAuthManager()
    roles = {role: SimpleAuthManagerUser(username=role, role=role) for role in ("viewer", "user", "op")}
    allowed = {
        role: [m for m in ("GET", "PUT") if manager.is_authorized_connection(method=m, user=user)]
        for role, user in roles.items()
    }
    assert allowed == {"viewer": [], "user": ["GET"], "op": ["GET", "PUT"]}
