#!/bin/sh
# Compose entrypoint for the broker: builds the password file from the service
# account secrets in the environment (never baked into the image), then runs the
# broker with the project's config. Device credentials are added by provisioning.
set -eu
conf=/mosquitto/config
mkdir -p "$conf" /mosquitto/data
cp /insa/mosquitto.conf "$conf/mosquitto.conf"
cp /insa/acl "$conf/acl"
: > "$conf/passwd"
for account in ingestor diagnostics alerts api subscriber; do
  var="INSA_MQTT_PASSWORD_$(echo "$account" | tr a-z A-Z)"
  eval "secret=\${$var:-}"
  if [ -z "$secret" ]; then echo "missing $var" >&2; exit 1; fi
  mosquitto_passwd -b "$conf/passwd" "insa-$account" "$secret"
done
if [ -f /insa/devices.passwd ]; then cat /insa/devices.passwd >> "$conf/passwd"; fi
chown -R mosquitto:mosquitto "$conf" /mosquitto/data
chmod 0700 "$conf/passwd"
exec mosquitto -c "$conf/mosquitto.conf"
