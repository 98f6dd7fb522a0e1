#!/usr/bin/env bash
# Make a development CA and a broker server certificate for the MQTT TLS listener.
# Usage: scripts/dev-certs.sh OUT_DIR [HOSTNAME...]   (default hostnames: localhost mosquitto)
# Never use these in production: the CA key sits next to the certificates.
set -euo pipefail
out=${1:?usage: dev-certs.sh OUT_DIR [HOSTNAME...]}
shift || true
hosts=("${@:-localhost}")
[ $# -eq 0 ] && hosts=(localhost mosquitto)
mkdir -p "$out"
cd "$out"
if [ -s ca.crt ] && [ -s server.crt ] && [ -s server.key ]; then
  echo "dev certificates already in $out"; exit 0
fi
san="IP:127.0.0.1"
for h in "${hosts[@]}"; do san="$san,DNS:$h"; done
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=INSA dev CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=${hosts[0]}" \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 600 ca.key server.key
echo "dev certificates written to $out (SAN $san)"
