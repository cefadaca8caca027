"""docs/servers.md's mlflow-oidc-auth settings are the ones the stack (and so this tier) runs it with, per provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import oidc_auth

DOC = Path(__file__).resolve().parents[2] / "docs" / "servers.md"
#: The placeholders of the doc's provider columns, and what the stack puts there.
LOCAL_ISSUER = "http://127.0.0.1:9000"
KEYCLOAK_ISSUER = "https://sso.example.org/realms/mlflow"
PLACEHOLDERS = {"local": {"<idp>": "9000"}, "keycloak": {"<AUTH>": "sso.example.org"}}


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells without backticks) of the first Markdown table after the line starting with `heading`."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not set(cells[0]) <= {"-", " "}:
            rows.append(cells)
    return rows[1:]  # without the header


def value(cell: str, provider: str) -> str:
    assert cell.count("`") == 2 and cell.startswith("`") and cell.endswith("`"), f"not one exact value: {cell!r}"
    text = cell.strip("`")
    for placeholder, replacement in PLACEHOLDERS[provider].items():
        text = text.replace(placeholder, replacement)
    return text


@pytest.mark.parametrize(
    ("provider", "column", "issuer"), [("local", 1, LOCAL_ISSUER), ("keycloak", 2, KEYCLOAK_ISSUER)]
)
def test_the_provider_table_is_exactly_what_the_stack_sets(provider, column, issuer):
    documented = {value(row[0], provider): value(row[column], provider) for row in table_after("**Environment, by")}

    assert documented == oidc_auth.provider_settings(provider, issuer, "mlflow", "jupyter")


def test_every_variable_the_stack_sets_is_documented_once():
    provider_rows = table_after("**Environment, by")
    deployment_rows = table_after("**Environment of the deployment**")
    documented = [row[0].strip("`") for row in provider_rows + deployment_rows]
    stack_sets = oidc_auth.settings("keycloak", KEYCLOAK_ISSUER, "mlflow", "jupyter", Path("/run"), secret_key="k")

    assert len(documented) == len(set(documented))
    assert set(stack_sets) <= set(documented)
    assert set(documented) - set(stack_sets) == {"DEFAULT_MLFLOW_PERMISSION"}  # documented as left unset
