#!/usr/bin/env node
// A scriptable Sparkplug B edge node for the tests, independent of shared/sparkplug: payloads
// are encoded and decoded by Eclipse Tahu's JS codec (sparkplug-payload), MQTT is mqtt.js.
//
// One JSON command a line on stdin; one JSON line on stdout for each: {"event": "ok", "op"}
// (with the op's result) or {"event": "error", "op", "message"}, echoing the command's "id".
// Between them come {"event": "connected"}, {"event": "closed"} and {"event": "message", ...}.
//
// Payloads are Tahu JS's objects ({"timestamp", "seq", "metrics": [{"name", "alias",
// "type", "value", ...}]}), with, because JSON has no 64-bit integers or bytes:
// - 64-bit values (timestamps, seq, alias, Int64/UInt64/UInt32/DateTime values) as numbers
//   or decimal strings on the way in, and as decimal strings on the way out;
// - bytes (Bytes and File values, body) as hex strings, both ways;
// - the array types ("Int8Array" ... "DateTimeArray"), which Tahu JS 1.0.3 does not know,
//   packed here by the spec (little-endian, BooleanArray with its count, NUL-ended strings)
//   and sent as bytes_value with the array datatype;
// - "omitDatatype": true on a metric sends no datatype (a DATA metric by alias);
//   "datatype": N sends datatype N whatever "type" is (for malformed payloads).
"use strict";

const fs = require("fs");
const readline = require("readline");
const Long = require("long");
const mqtt = require("mqtt");
const sparkplug = require("sparkplug-payload/lib/sparkplugbpayload");
const proto = require("sparkplug-payload/lib/sparkplugPayloadProto");

const ProtoPayload = proto.org.eclipse.tahu.protobuf.Payload;
const STATE_PREFIX = "spBv1.0/STATE/";

const ARRAY_TYPES = {
  Int8Array: 22, Int16Array: 23, Int32Array: 24, Int64Array: 25, UInt8Array: 26,
  UInt16Array: 27, UInt32Array: 28, UInt64Array: 29, FloatArray: 30, DoubleArray: 31,
  BooleanArray: 32, StringArray: 33, DateTimeArray: 34,
};
const ARRAY_NAMES = Object.fromEntries(Object.entries(ARRAY_TYPES).map(([k, v]) => [v, k]));
// Fixed-size array element: [bytes, Buffer writer, Buffer reader].
const PACKED = {
  22: [1, "writeInt8", "readInt8"], 23: [2, "writeInt16LE", "readInt16LE"],
  24: [4, "writeInt32LE", "readInt32LE"], 25: [8, "writeBigInt64LE", "readBigInt64LE"],
  26: [1, "writeUInt8", "readUInt8"], 27: [2, "writeUInt16LE", "readUInt16LE"],
  28: [4, "writeUInt32LE", "readUInt32LE"], 29: [8, "writeBigUInt64LE", "readBigUInt64LE"],
  30: [4, "writeFloatLE", "readFloatLE"], 31: [8, "writeDoubleLE", "readDoubleLE"],
  34: [8, "writeBigInt64LE", "readBigInt64LE"],
};
const LONG_TYPES = new Set(["INT64", "LONG", "UINT32", "UINT64", "DATETIME"]);

let client = null;

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

// ---- JSON in: Tahu JS's payload objects ----------------------------------------------

function toLong(value) {
  if (value === null || value === undefined || Long.isLong(value)) return value;
  if (typeof value === "string") {
    if (!/^-?\d+$/.test(value)) throw new Error(`not a decimal integer: ${value}`);
    return Long.fromString(value, !value.startsWith("-"), 10);
  }
  if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new Error(`not an integer: ${value}`);
    return Long.fromNumber(value, value >= 0);
  }
  throw new Error(`not a 64-bit integer: ${JSON.stringify(value)}`);
}

function typedValue(type, value) {
  if (value === null || value === undefined || typeof type !== "string") return value;
  const upper = type.toUpperCase();
  if (LONG_TYPES.has(upper)) return toLong(value);
  if (upper === "BYTES" || upper === "FILE") return Buffer.from(value, "hex");
  if (upper === "PROPERTYSET") return toProperties(value);
  if (upper === "PROPERTYSETLIST") return value.map(toProperties);
  if (upper === "TEMPLATE") return toTemplate(value);
  return value;
}

function toProperties(properties) {
  const out = {};
  for (const [key, property] of Object.entries(properties)) {
    out[key] = { ...property, value: typedValue(property.type, property.value) };
  }
  return out;
}

function toTemplate(template) {
  return {
    ...template,
    metrics: (template.metrics || []).map((m) => toMetric(m).metric),
    parameters: (template.parameters || []).map(
      (p) => ({ ...p, value: typedValue(p.type, p.value) })),
  };
}

function packArray(datatype, values) {
  if (datatype === 32) { // BooleanArray: uint32 count, then bits, most significant first
    const out = Buffer.alloc(4 + Math.ceil(values.length / 8));
    out.writeUInt32LE(values.length, 0);
    values.forEach((v, i) => { if (v) out[4 + (i >> 3)] |= 0x80 >> (i & 7); });
    return out;
  }
  if (datatype === 33) { // StringArray: UTF-8, each ended by a NUL
    return Buffer.concat(values.map((s) => Buffer.concat([Buffer.from(s, "utf8"), Buffer.alloc(1)])));
  }
  const [size, write] = PACKED[datatype];
  const out = Buffer.alloc(size * values.length);
  values.forEach((v, i) => { out[write](write.includes("Big") ? BigInt(v) : v, i * size); });
  return out;
}

// Returns the metric for encodePayload and what to change in the encoded protobuf after it.
function toMetric(metric) {
  const fix = {};
  const out = { ...metric };
  delete out.omitDatatype;
  delete out.datatype;
  if (metric.type in ARRAY_TYPES) {
    fix.datatype = ARRAY_TYPES[metric.type];
    out.type = "Bytes";
    out.value = metric.value === null ? null : packArray(fix.datatype, metric.value);
  } else {
    out.value = typedValue(metric.type, metric.value);
  }
  if (metric.omitDatatype) fix.datatype = null;
  if (metric.datatype !== undefined) fix.datatype = metric.datatype;
  for (const key of ["alias", "timestamp"]) if (key in out) out[key] = toLong(out[key]);
  if (out.metadata) {
    out.metadata = { ...out.metadata, size: toLong(out.metadata.size), seq: toLong(out.metadata.seq) };
  }
  if (out.properties) out.properties = toProperties(out.properties);
  return { metric: out, fix };
}

function encode(payload) {
  const converted = (payload.metrics || []).map(toMetric);
  const object = {
    ...payload,
    timestamp: toLong(payload.timestamp),
    seq: toLong(payload.seq),
    body: payload.body === undefined || payload.body === null ? payload.body
      : Buffer.from(payload.body, "hex"),
    metrics: converted.map((c) => c.metric),
  };
  let bytes = sparkplug.encodePayload(object);
  if (converted.some((c) => "datatype" in c.fix)) {
    // Tahu JS sets every datatype from "type": adjust the ones asked for on its output.
    const message = ProtoPayload.decode(bytes);
    converted.forEach((c, i) => {
      if (!("datatype" in c.fix)) return;
      if (c.fix.datatype === null) delete message.metrics[i].datatype;
      else message.metrics[i].datatype = c.fix.datatype;
    });
    bytes = ProtoPayload.encode(message).finish();
  }
  return Buffer.from(bytes);
}

// ---- JSON out ------------------------------------------------------------------------

function toJson(value) {
  if (value === null || value === undefined) return value;
  if (Long.isLong(value)) return value.toString();
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString("hex");
  if (Array.isArray(value)) return value.map(toJson);
  if (typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  return value;
}

function unpackArray(datatype, bytes) {
  const buffer = Buffer.from(bytes);
  if (datatype === 32) {
    const count = buffer.readUInt32LE(0);
    return Array.from({ length: count }, (_, i) => (buffer[4 + (i >> 3)] & (0x80 >> (i & 7))) !== 0);
  }
  if (datatype === 33) {
    const text = buffer.toString("utf8");
    return text === "" ? [] : text.slice(0, -1).split("\0");
  }
  const [size, , read] = PACKED[datatype];
  return Array.from({ length: buffer.length / size }, (_, i) => buffer[read](i * size));
}

// Tahu's decoding, plus what it cannot show: the array types (unpacked here) and the raw
// protobuf fields (which value field was set, the datatype number).
function decode(bytes) {
  const payload = sparkplug.decodePayload(bytes);
  const raw = ProtoPayload.toObject(ProtoPayload.decode(bytes), { oneofs: true });
  (raw.metrics || []).forEach((metric, i) => {
    if (metric.datatype in ARRAY_NAMES && metric.bytesValue && !metric.isNull) {
      payload.metrics[i].type = ARRAY_NAMES[metric.datatype];
      payload.metrics[i].value = unpackArray(metric.datatype, metric.bytesValue);
    }
  });
  return { payload: toJson(payload), raw: toJson(raw) };
}

function received(topic, message, packet) {
  const event = { event: "message", topic, qos: packet.qos, retain: packet.retain,
                  raw_hex: message.toString("hex") };
  if (topic.startsWith(STATE_PREFIX)) {
    try { event.json = JSON.parse(message.toString("utf8")); } catch (e) { event.error = String(e); }
  } else {
    try { Object.assign(event, decode(message)); } catch (e) { event.error = String(e); }
  }
  emit(event);
}

// ---- the ops -------------------------------------------------------------------------

function publishBytes(command, bytes) {
  return new Promise((resolve, reject) => {
    if (!client) return reject(new Error("not connected"));
    client.publish(command.topic, bytes, { qos: command.qos || 0, retain: !!command.retain },
      (err) => (err ? reject(err) : resolve({})));
  });
}

function willOf(will) {
  if (!will) return undefined;
  const payload = will.hex !== undefined ? Buffer.from(will.hex, "hex") : encode(will.payload);
  return { topic: will.topic, payload, qos: will.qos === undefined ? 1 : will.qos,
           retain: !!will.retain };
}

function connect(command) {
  return new Promise((resolve, reject) => {
    if (client) return reject(new Error("already connected"));
    const options = {
      host: command.host || "127.0.0.1",
      port: command.port,
      protocol: command.ca ? "mqtts" : "mqtt",
      protocolVersion: command.protocol_version || 4,  // Sparkplug edge nodes: 3.1.1
      clientId: command.client_id,
      username: command.username,
      password: command.password,
      clean: command.clean === undefined ? true : command.clean,
      keepalive: command.keepalive === undefined ? 30 : command.keepalive,
      reconnectPeriod: 0,  // the test decides what happens after a drop
      connectTimeout: command.connect_timeout_ms || 10000,
      will: willOf(command.will),
    };
    if (command.ca) {
      options.ca = fs.readFileSync(command.ca);
      options.rejectUnauthorized = true;
    }
    let settled = false;
    const c = mqtt.connect(options);
    client = c;
    c.on("connect", () => {
      emit({ event: "connected" });
      if (!settled) { settled = true; resolve({}); }
    });
    c.on("message", received);
    c.on("error", (err) => {
      if (!settled) { settled = true; client = null; c.end(true); reject(err); }
      else emit({ event: "client_error", message: String(err.message || err) });
    });
    c.on("close", () => {
      emit({ event: "closed" });
      if (!settled) { settled = true; client = null; reject(new Error("connection closed")); }
    });
  });
}

function subscribe(command) {
  return new Promise((resolve, reject) => {
    if (!client) return reject(new Error("not connected"));
    client.subscribe(command.topic, { qos: command.qos || 0 }, (err, granted) => {
      if (err) return reject(err);
      const refused = (granted || []).find((g) => g.qos === 128);
      return refused ? reject(new Error(`subscription to ${command.topic} refused`))
        : resolve({ granted: (granted || []).map((g) => g.qos) });
    });
  });
}

function disconnect() {
  return new Promise((resolve) => {
    if (!client) return resolve({});
    const c = client;
    client = null;
    c.end(false, {}, () => resolve({}));
  });
}

const OPS = {
  connect,
  subscribe,
  disconnect,
  publish: (command) => publishBytes(command, encode(command.payload)),
  publish_raw: (command) => publishBytes(command, Buffer.from(command.hex, "hex")),
  encode: (command) => ({ hex: encode(command.payload).toString("hex") }),
  decode: (command) => decode(Buffer.from(command.hex, "hex")),
  // Drop the connection without DISCONNECT, so the broker publishes the Will; then exit.
  kill: async () => {
    if (client) client.stream.destroy();
    setImmediate(() => process.exit(0));
    return {};
  },
  exit: async () => {
    setImmediate(() => process.exit(0));
    return {};
  },
};

async function run(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch (e) {
    emit({ event: "error", op: null, message: `not JSON: ${e.message}` });
    return;
  }
  const reply = { op: command.op };
  if (command.id !== undefined) reply.id = command.id;
  const op = OPS[command.op];
  try {
    if (!op) throw new Error(`unknown op ${JSON.stringify(command.op)}`);
    emit({ event: "ok", ...reply, ...(await op(command)) });
  } catch (e) {
    emit({ event: "error", ...reply, message: String((e && e.message) || e) });
  }
}

// Commands run one at a time, in order; end of input ends the node (cleanly).
let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim()) queue = queue.then(() => run(line));
}).on("close", () => {
  queue.then(disconnect).then(() => process.exit(0));
});
