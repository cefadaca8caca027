#!/bin/sh
# Entrypoint of the compose nginx (OpenResty image): renders every /etc/nginx/templates/*.template into
# /etc/nginx/conf.d/ as the official nginx image does (envsubst of only the environment variables whose names match
# NGINX_ENVSUBST_FILTER, so nginx's own $variables stay), then runs its arguments.
# NGINX_ENVSUBST_TEMPLATE_DIR and NGINX_ENVSUBST_OUTPUT_DIR move the folders (the tests render elsewhere).
set -eu
templates="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
output="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
names=$(env | cut -d= -f1 | grep -E "${NGINX_ENVSUBST_FILTER:?name the variables to render}" || true)
defined=""
for name in $names; do
    defined="$defined \${$name}"
done
mkdir -p "$output"
for template in "$templates"/*.template; do
    envsubst "$defined" <"$template" >"$output/$(basename "$template" .template)"
done
exec "$@"
