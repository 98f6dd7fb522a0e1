"""The local stack's and the tests' broker administration: synchronous (paho's network
thread), as their setup code is. Each call sends one batch of dynamic-security commands
(built by shared/broker_control.py, as the services' own) and waits for the answer."""

from __future__ import annotations

import ssl
import threading
import uuid
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from shared.broker_accounts import ADMIN_ACCOUNT, CONTROL_RESPONSE_TOPIC, CONTROL_TOPIC
from shared.broker_control import (
    decode_responses,
    device_account,
    encode_commands,
    new_password,
    raise_for_errors,
    service_account,
)
from shared.errors import DependencyUnavailable


class BrokerAdmin:
    """A connection of an account allowed to administer the broker (`insa-admin`, `insa-api`)."""

    def __init__(self, host: str, port: int, password: str, username: str = ADMIN_ACCOUNT, *,
                 tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=username,
                                   protocol=paho.MQTTv5)
        self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._ready = threading.Event()
        self._refused: str | None = None
        self._answers: dict[str, list[dict[str, Any]]] = {}
        self._answered = threading.Condition()
        self._lock = threading.Lock()  # one batch of commands at a time
        self._host, self._port = host, port

    def __enter__(self) -> BrokerAdmin:
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            raise DependencyUnavailable(f"broker unreachable: {exc}") from exc
        self._client.loop_start()
        if not self._ready.wait(self.timeout) or self._refused:
            self.close()
            raise DependencyUnavailable(
                f"broker admin connection failed: {self._refused or 'no answer'}")
        return self

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # --- paho callbacks (network thread) ------------------------------------------------
    def _on_connect(self, client: paho.Client, _u: object, _f: object, reason: ReasonCode,
                    _p: object) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            self._ready.set()
        else:
            client.subscribe(CONTROL_RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, _c: paho.Client, _u: object, _mid: int, codes: list[ReasonCode],
                      _p: object) -> None:
        if codes[0].is_failure:
            self._refused = f"not allowed to administer the broker ({codes[0]})"
        self._ready.set()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        responses = decode_responses(bytes(msg.payload))
        with self._answered:
            for response in responses:
                key = response.get("correlationData")
                if key is not None:
                    self._answers.setdefault(key, []).append(response)
            self._answered.notify_all()

    # --- commands ------------------------------------------------------------------------
    def execute(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Run commands in order; raise on the first that failed (later ones still ran)."""
        with self._lock:
            key = uuid.uuid4().hex
            info = self._client.publish(CONTROL_TOPIC, encode_commands(commands, key), qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise DependencyUnavailable(f"broker admin publish failed: {info.rc}")
            with self._answered:
                got = self._answered.wait_for(
                    lambda: len(self._answers.get(key, ())) >= len(commands), self.timeout)
                answers = self._answers.pop(key, [])
        if not got:
            raise DependencyUnavailable("the broker did not answer the admin commands")
        raise_for_errors(commands, answers)
        return answers

    def create_device(self, device_id: str) -> str:
        """A device account bound to its own id and topics; returns its password."""
        password = new_password()
        self.execute(*device_account(device_id, password))
        return password

    def create_service_account(self, username: str, role: str, password: str) -> None:
        self.execute(service_account(username, role, password))
