"""A small client of Keycloak's admin REST API: what the stack and its tests read and change in realm mlflow."""

from __future__ import annotations

import time
from typing import Any

import requests

from .errors import StackError


class KeycloakAdmin:
    """Signed in to the master realm as the bootstrap admin; every call names realm `realm`."""

    def __init__(self, base_url: str, password: str, realm: str = "mlflow", user: str = "admin") -> None:
        self.base_url = base_url.rstrip("/")
        self.realm = realm
        self._credentials = {"username": user, "password": password}
        self._token: str | None = None
        self._token_expires = 0.0
        self._http = requests.Session()

    def __repr__(self) -> str:
        return f"KeycloakAdmin({self.base_url!r}, realm={self.realm!r})"

    def _bearer(self) -> str:
        if self._token is None or time.monotonic() > self._token_expires:
            response = self._http.post(
                f"{self.base_url}/realms/master/protocol/openid-connect/token",
                data={"grant_type": "password", "client_id": "admin-cli", **self._credentials},
                timeout=30,
            )
            if response.status_code != 200:
                raise StackError(f"Keycloak admin sign-in failed ({response.status_code})")
            body = response.json()
            self._token = body["access_token"]
            self._token_expires = time.monotonic() + body["expires_in"] - 10
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """`path` under /admin/realms/<realm>; raises StackError on any non-2xx answer."""
        url = f"{self.base_url}/admin/realms/{self.realm}{path}"
        response = self._http.request(
            method, url, headers={"Authorization": f"Bearer {self._bearer()}"}, timeout=60, **kwargs
        )
        if response.status_code >= 300:
            raise StackError(f"Keycloak admin {method} {path}: {response.status_code} {response.text[:300]}")
        return response

    def get(self, path: str = "", **params: Any) -> Any:
        response = self.request("GET", path, params=params)
        return response.json() if response.content else None

    # ------------------------------------------------------------------ realm

    def realm_settings(self) -> dict[str, Any]:
        return self.get()

    def update_realm(self, **settings: Any) -> None:
        self.request("PUT", "", json={"realm": self.realm, **settings})

    def client(self, client_id: str) -> dict[str, Any]:
        found = self.get("/clients", clientId=client_id)
        if not found:
            raise StackError(f"no client {client_id!r} in realm {self.realm}")
        return found[0]

    def update_client(self, client_id: str, **settings: Any) -> None:
        current = self.client(client_id)
        self.request("PUT", f"/clients/{current['id']}", json={**current, **settings})

    # ------------------------------------------------------------------ users and sessions

    def user(self, username: str) -> dict[str, Any]:
        found = self.get("/users", username=username, exact="true")
        if not found:
            raise StackError(f"no user {username!r} in realm {self.realm}")
        return found[0]

    def create_user(self, username: str, password: str, **attributes: Any) -> None:
        """A user with a password (not temporary) and only the realm's default roles."""
        self.request("POST", "/users", json={
            "username": username, "enabled": True, "emailVerified": True,
            "email": f"{username}@example.org", "firstName": username.title(), "lastName": "Demo",
            "credentials": [{"type": "password", "value": password, "temporary": False}], **attributes,
        })  # fmt: skip

    def sessions(self, username: str) -> list[dict[str, Any]]:
        return self.get(f"/users/{self.user(username)['id']}/sessions")

    def offline_sessions(self, username: str, client_id: str) -> list[dict[str, Any]]:
        user_id, client_uuid = self.user(username)["id"], self.client(client_id)["id"]
        return self.get(f"/users/{user_id}/offline-sessions/{client_uuid}")

    def logout_user(self, username: str) -> None:
        """End every session of the user (what an admin does to revoke someone's access)."""
        self.request("POST", f"/users/{self.user(username)['id']}/logout")

    def grant_client_role(self, username: str, client_id: str, role: str) -> None:
        """Create the client role if needed and give it to the user."""
        client_uuid = self.client(client_id)["id"]
        roles = {r["name"]: r for r in self.get(f"/clients/{client_uuid}/roles")}
        if role not in roles:
            self.request("POST", f"/clients/{client_uuid}/roles", json={"name": role})
            roles[role] = self.get(f"/clients/{client_uuid}/roles/{role}")
        user_id = self.user(username)["id"]
        self.request("POST", f"/users/{user_id}/role-mappings/clients/{client_uuid}", json=[roles[role]])

    # ------------------------------------------------------------------ keys

    def key_providers(self) -> list[dict[str, Any]]:
        realm_id = self.realm_settings()["id"]
        return self.get("/components", parent=realm_id, type="org.keycloak.keys.KeyProvider")

    def add_rsa_key_provider(self, name: str, priority: int) -> None:
        realm_id = self.realm_settings()["id"]
        self.request("POST", "/components", json={
            "name": name, "providerId": "rsa-generated", "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id,
            "config": {"priority": [str(priority)], "enabled": ["true"], "active": ["true"], "algorithm": ["RS256"]},
        })  # fmt: skip

    def set_key_provider_enabled(self, provider: dict[str, Any], enabled: bool) -> None:
        config = {**provider["config"], "enabled": [str(enabled).lower()], "active": [str(enabled).lower()]}
        self.request("PUT", f"/components/{provider['id']}", json={**provider, "config": config})
