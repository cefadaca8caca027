#!/bin/bash
# Add the demo users of mlflow-demo-users.json to realm mlflow (development overlay only; see compose.dev.yaml).
set -euo pipefail
kcadm=/opt/keycloak/bin/kcadm.sh
config=$(mktemp)
trap 'rm -f "$config"' EXIT

"$kcadm" config credentials --config "$config" --server "$KEYCLOAK_URL" --realm master \
    --user "$KEYCLOAK_ADMIN_USER" --password "$KEYCLOAK_ADMIN_PASSWORD"
"$kcadm" create partialImport --config "$config" -r mlflow -f /opt/demo/mlflow-demo-users.json -o \
    | grep -E '"(added|skipped|overwritten)"' || true
echo "demo users: alice (Admin), bob (Default) in realm mlflow"
