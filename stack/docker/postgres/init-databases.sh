#!/bin/bash
# First start of the Postgres volume only (docker-entrypoint-initdb.d): one role and one database each for
# MLflow and Keycloak, so neither can read the other's tables.
set -euo pipefail

create() {
    local name="$1" password="$2"
    if [ -z "$password" ]; then
        echo "init-databases: no password for $name (set it in stack/.env)" >&2
        exit 1
    fi
    # psql variables quote the password and identifiers (no shell or SQL injection from .env values).
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create mlflow "${MLFLOW_DB_PASSWORD:-}"
create keycloak "${KEYCLOAK_DB_PASSWORD:-}"
