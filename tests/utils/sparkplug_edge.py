"""Drives tests/tools/sparkplug_edge/edge.js: a Sparkplug B edge node independent of
shared/sparkplug (Eclipse Tahu's JS codec and mqtt.js), so a test's bytes on the wire are not
made by the code under test.

- `EdgeNode` (async): one edge node process with one MQTT connection: connect (with a Will),
  publish Tahu-encoded payloads or raw bytes, subscribe and read what arrives, then end
  cleanly (`close`) or as a crash would (`kill`: the broker sends the Will).
- `TahuCodec` (sync): the same process used only for `encode`/`decode`, for payload tests.

Payload dicts are Tahu JS's objects; 64-bit values go in as ints or decimal strings and come
back as decimal strings, bytes as hex strings (edge.js's header says more). Node.js or the
edge's node_modules missing fails the test, saying to run `make install`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from paho.mqtt.client import topic_matches_sub

EDGE_DIR = Path(__file__).resolve().parents[1] / "tools" / "sparkplug_edge"
EDGE_JS = EDGE_DIR / "edge.js"
WAIT = 10.0  # bound for anything edge.js or the broker should answer at once


class EdgeError(AssertionError):
    """edge.js answered an op with an error, died, or did not answer in time."""


def require_edge() -> str:
    """`node`'s path, after checking the packages edge.js needs are installed as pinned;
    fails the calling test (not skips) otherwise."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("the Sparkplug edge node needs Node.js (`node` on PATH): run `make install`",
                    pytrace=False)
    pinned: dict[str, str] = json.loads((EDGE_DIR / "package.json").read_text())["dependencies"]
    for package, version in pinned.items():
        manifest = EDGE_DIR / "node_modules" / package / "package.json"
        installed = json.loads(manifest.read_text()).get("version") if manifest.exists() else None
        if installed != version:
            pytest.fail(f"{EDGE_DIR}/node_modules has {package} {installed or 'missing'}, "
                        f"package.json pins {version}: run `make install`", pytrace=False)
    return node


@dataclass(frozen=True)
class EdgeMessage:
    """A message the edge node received: Tahu's decoding in `payload` and the raw protobuf
    fields in `raw` (Sparkplug topics), or the parsed `json` (STATE topics)."""

    topic: str
    data: bytes
    qos: int
    retain: bool
    payload: dict[str, Any] | None
    raw: dict[str, Any] | None
    json: Any
    error: str | None


class EdgeNode:
    """One edge.js process; every op awaits edge.js's answer and raises EdgeError on error."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._messages: deque[EdgeMessage] = deque()
        self._arrived = asyncio.Event()
        self._stderr = bytearray()
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self._readers = [asyncio.create_task(self._read_stdout()),
                         asyncio.create_task(self._read_stderr())]

    @classmethod
    async def start(cls) -> EdgeNode:
        node = require_edge()
        proc = await asyncio.create_subprocess_exec(
            node, str(EDGE_JS), cwd=EDGE_DIR, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def __aenter__(self) -> EdgeNode:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def connect(self, port: int, *, client_id: str, username: str | None = None,
                      password: str | None = None, host: str = "127.0.0.1",
                      ca: Path | None = None, will: dict[str, Any] | None = None,
                      clean: bool = True, keepalive: int = 30,
                      protocol_version: int = 4) -> None:
        """MQTT 3.1.1 by default (what Sparkplug edge nodes commonly use); TLS when `ca` is
        given. `will`: {"topic", "payload" (a Tahu payload dict) or "hex", "qos", "retain"}."""
        await self._call("connect", host=host, port=port, client_id=client_id,
                         username=username, password=password,
                         ca=str(ca) if ca is not None else None, will=will, clean=clean,
                         keepalive=keepalive, protocol_version=protocol_version)

    async def publish(self, topic: str, payload: dict[str, Any], qos: int = 0,
                      retain: bool = False) -> None:
        await self._call("publish", topic=topic, payload=payload, qos=qos, retain=retain)

    async def publish_raw(self, topic: str, data: bytes, qos: int = 0,
                          retain: bool = False) -> None:
        await self._call("publish_raw", topic=topic, hex=data.hex(), qos=qos, retain=retain)

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        await self._call("subscribe", topic=topic, qos=qos)

    async def next_message(self, timeout: float = WAIT, topic: str | None = None
                           ) -> EdgeMessage:
        """The first message received (on a topic matching the filter `topic`, if given: the
        others stay, in order, for later calls), waiting up to `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for message in self._messages:
                if topic is None or topic_matches_sub(topic, message.topic):
                    self._messages.remove(message)
                    return message
            self._arrived.clear()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(left, 0))
            except TimeoutError:
                raise EdgeError(f"the edge node received no message"
                                f"{f' on {topic}' if topic else ''} in {timeout} s") from None

    async def encode(self, payload: dict[str, Any]) -> bytes:
        return bytes.fromhex((await self._call("encode", payload=payload))["hex"])

    async def decode(self, data: bytes) -> dict[str, Any]:
        """{"payload": Tahu's decoding, "raw": the protobuf fields}."""
        return await self._call("decode", hex=data.hex())

    async def disconnect(self) -> None:
        """A clean MQTT DISCONNECT: the broker discards the Will."""
        await self._call("disconnect")

    async def kill(self) -> None:
        """Drop the socket without DISCONNECT (the broker publishes the Will); edge.js exits."""
        await self._call("kill")
        await self._wait_exit()

    async def close(self) -> None:
        """End the process: a clean disconnect first if still connected (end of its input)."""
        if self._proc.returncode is None and self._proc.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self._proc.stdin.close()
            await self._wait_exit()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def _wait_exit(self) -> None:
        try:
            await asyncio.wait_for(self._proc.wait(), WAIT)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()

    async def _call(self, op: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        if self._proc.returncode is not None or self._proc.stdin is None:
            raise EdgeError(f"edge.js has exited ({self._proc.returncode}): {self._tail()}")
        ident = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ident] = reply
        self._proc.stdin.write(json.dumps({"op": op, "id": ident, **fields}).encode() + b"\n")
        await self._proc.stdin.drain()
        try:
            answer = await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise EdgeError(f"edge.js did not answer {op} in {timeout} s") from None
        finally:
            self._replies.pop(ident, None)
        if answer["event"] == "error":
            raise EdgeError(f"edge.js {op}: {answer.get('message')}")
        return answer

    async def _read_stdout(self) -> None:
        assert self._proc.stdout is not None
        async for line in self._proc.stdout:
            event = json.loads(line)
            kind = event.get("event")
            if kind in ("ok", "error") and event.get("id") in self._replies:
                future = self._replies[event["id"]]
                if not future.done():
                    future.set_result(event)
            elif kind == "message":
                self._messages.append(EdgeMessage(
                    topic=event["topic"], data=bytes.fromhex(event["raw_hex"]),
                    qos=event["qos"], retain=event["retain"], payload=event.get("payload"),
                    raw=event.get("raw"), json=event.get("json"), error=event.get("error")))
                self._arrived.set()
            elif kind == "connected":
                self.closed.clear()
                self.connected.set()
            elif kind == "closed":
                self.connected.clear()
                self.closed.set()
        # The process ended: nothing more will answer.
        for future in self._replies.values():
            if not future.done():
                future.set_exception(EdgeError(f"edge.js exited: {self._tail()}"))

    async def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        async for line in self._proc.stderr:
            self._stderr += line

    def _tail(self) -> str:
        return self._stderr[-2000:].decode(errors="replace").strip() or "(no stderr)"


class TahuCodec:
    """edge.js's encode/decode ops, synchronously: Tahu JS's codec for payload tests."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [require_edge(), str(EDGE_JS)], cwd=EDGE_DIR, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def __enter__(self) -> TahuCodec:
        return self

    def __exit__(self, _type: type[BaseException] | None, _exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.close()

    def encode(self, payload: dict[str, Any]) -> bytes:
        """Tahu JS's encoding of a payload dict."""
        return bytes.fromhex(self._call({"op": "encode", "payload": payload})["hex"])

    def decode(self, data: bytes) -> dict[str, Any]:
        """{"payload": Tahu JS's decoding, "raw": the protobuf fields, as protobufjs reads
        them (camelCase names, "value" naming the value field set)}."""
        answer = self._call({"op": "decode", "hex": data.hex()})
        return {"payload": answer["payload"], "raw": answer["raw"]}

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()

    def _call(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()  # encode/decode answer at once, no I/O
        if not line:
            assert self._proc.stderr is not None
            raise EdgeError(f"edge.js exited: {self._proc.stderr.read()[-2000:]}")
        answer: dict[str, Any] = json.loads(line)
        if answer["event"] == "error":
            raise EdgeError(f"edge.js {command['op']}: {answer.get('message')}")
        return answer
