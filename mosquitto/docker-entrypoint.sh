#!/bin/sh
# Compose entrypoint for the broker: the project's config, and the accounts file that the
# `broker-accounts` service (`insa broker-accounts`) wrote into the data volume from the
# environment's secrets (never baked into the image). Devices are added to that file by
# provisioning over $CONTROL, and the plugin keeps it up to date.
set -eu
conf=/mosquitto/config
accounts=/mosquitto/data/dynamic-security.json
mkdir -p "$conf" /mosquitto/data
cp /insa/mosquitto.conf "$conf/mosquitto.conf"
if [ ! -s "$accounts" ]; then
  echo "missing $accounts: run the broker-accounts service first" >&2
  exit 1
fi
chown -R mosquitto:mosquitto /mosquitto/data
chmod 0600 "$accounts"
exec mosquitto -c "$conf/mosquitto.conf"
