#!/usr/bin/env bash
# Make a local certificate authority and one server certificate for the compose stack's first start.
#
#   stack/tls/make-certs.sh [--out DIR] [--days N] NAME [NAME...]
#
# NAME: every DNS name (or IP address) nginx answers for, e.g. the values of SERVER_NAME, AUTH_SERVER_NAME and
# JUPYTER_SERVER_NAME in stack/.env. Without NAMEs those three are read from the environment or from stack/.env.
#
# Writes into DIR (default stack/tls/certs, not committed):
#   ca.crt      the local CA: give it to clients (MLFLOW_OIDC_CA_BUNDLE, MLFLOW_TRACKING_SERVER_CERT_PATH, browsers)
#   ca.key      the CA's private key (0600): keep it off servers once the certificate is issued
#   server.crt  server certificate followed by ca.crt (what nginx serves)
#   server.key  server private key (0600)
# An existing CA in DIR is reused, so reissuing the server certificate keeps clients' trust. Real deployments use
# certificates from their own CA or ACME instead (docs/deploy.md, "Real TLS").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/certs"
days=397  # what browsers accept for a server certificate; the CA lives ten years

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --days) days="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        --) shift; break ;;
        -*) echo "make-certs: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    env_file="$here/../.env"
    for var in SERVER_NAME AUTH_SERVER_NAME JUPYTER_SERVER_NAME; do
        value="${!var:-}"
        if [ -z "$value" ] && [ -f "$env_file" ]; then
            value="$(sed -n "s/^${var}=//p" "$env_file" | tail -n 1 | tr -d "\"'")"
        fi
        [ -n "$value" ] && names+=("$value")
    done
fi
if [ ${#names[@]} -eq 0 ]; then
    echo "make-certs: name the hosts, e.g. make-certs.sh mlflow.example.org auth.example.org jupyter.example.org" >&2
    exit 2
fi

san=""
for name in "${names[@]}"; do
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
        san+="${san:+,}IP:$name"
    else
        san+="${san:+,}DNS:$name"
    fi
done

mkdir -p "$out"
umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -s "$out/ca.key" ] || [ ! -s "$out/ca.crt" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
        -subj "/CN=mlflow-oidc-jupyter local CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
    echo "make-certs: new local CA $out/ca.crt"
else
    echo "make-certs: reusing the CA in $out"
fi

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -subj "/CN=${names[0]}" -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
cat > "$work/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl x509 -req -sha256 -days "$days" -in "$work/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -CAserial "$work/ca.srl" -extfile "$work/ext.cnf" -out "$work/server.crt" 2>/dev/null

cat "$work/server.crt" "$out/ca.crt" > "$out/server.crt"
mv "$work/server.key" "$out/server.key"
chmod 600 "$out/ca.key" "$out/server.key"
chmod 644 "$out/ca.crt" "$out/server.crt"
echo "make-certs: server certificate for ${names[*]} in $out/server.crt (valid $days days)"
