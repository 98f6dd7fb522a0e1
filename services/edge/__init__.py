"""Edge connectors: an integrator's program at a site whose equipment speaks OPC UA or
Modbus TCP, not MQTT. It reads the points a mapping file names, keeps every reading in
a local store-and-forward buffer, and publishes them as a gateway (docs/operations.md,
"Edge connectors")."""
