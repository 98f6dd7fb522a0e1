"""Run the platform's infrastructure (PostgreSQL, Redis, Mosquitto) from local binaries.

Used by `insa stack` (the Docker-free local stack) and by the test fixtures, so
both start the servers the same way.
"""
