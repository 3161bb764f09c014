// A meshbus remote filter written in JavaScript: the twin of the Python example
// (examples/meshbus-stamp), speaking the wire format of docs/remote-filters.md over nats.js.
//
//   npm install && node stamp.js --nats nats://127.0.0.1:4222 [--subject-root mesh] [--name stamp]
//
// Then a Plugin with `filter: stamp` and `placement: REMOTE` runs it. Like meshbus-filter-host it is
// a NATS micro service named "meshbus-filter-host" (so `nats micro ls` and `meshctl plugins` list it),
// with one endpoint per hook it implements, in the queue group "q", and an `info` endpoint that
// publishes its config's JSON Schema (meshbus-config checks pluginConfig with it).

import { connect, headers as natsHeaders } from "nats";
import { decode, encode } from "@msgpack/msgpack";

const SCHEMA_HEADER = "Meshbus-Schema";
const VERDICT = "meshbus.filter.v1.Verdict";
const HOST_INFO = "meshbus.filter.v1.HostInfo";

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const servers = arg("--nats", process.env.MESHBUS_NATS_URL || "nats://127.0.0.1:4222").split(",");
const root = arg("--subject-root", process.env.MESHBUS_SUBJECT_ROOT || "mesh");
const name = arg("--name", "stamp");

// bus/subjects.py escape_token: "_" -> "__", "." -> "_d", other unsafe bytes -> "_xHH".
function escapeToken(value) {
  let out = "";
  for (const byte of new TextEncoder().encode(value)) {
    const ch = String.fromCharCode(byte);
    if (ch === "_") out += "__";
    else if (ch === ".") out += "_d";
    else if (/[A-Za-z0-9-]/.test(ch)) out += ch;
    else out += "_x" + byte.toString(16).padStart(2, "0");
  }
  return out;
}
const subject = (hook) => `${root}.v1.filter.${escapeToken(name)}.${hook}`;

// The filter: pluginConfig {value: string}; stamps requests, blocks "x-block: 1" with 451.
const CONFIG_SCHEMA = {
  type: "object",
  title: "Config",
  properties: { value: { type: "string", title: "Value" } },
  required: ["value"],
  additionalProperties: false,
};

function checkConfig(config) {
  if (config === null || typeof config !== "object") return "pluginConfig must be an object";
  for (const key of Object.keys(config)) if (key !== "value") return `${key}: Extra inputs are not permitted`;
  if (typeof config.value !== "string") return "value: must be a string";
  return "";
}

const get = (pairs, name) => (pairs.find(([k]) => k === name) || [])[1];
const set = (pairs, name, value) => [...pairs.filter(([k]) => k !== name), [name, value]];

const hooks = {
  request_headers(call, config) {
    if (get(call.headers, "x-block") === "1") {
      return { reply: { status: 451, body: new TextEncoder().encode("blocked\n"), headers: [], details: "" } };
    }
    return { headers: set(call.headers, "x-stamped", config.value) };
  },
  response_headers(call, config) {
    return { headers: set(call.response_headers || [], "x-stamp", config.value) };
  },
};

function reply(msg, schema, body) {
  const h = natsHeaders();
  h.set(SCHEMA_HEADER, schema);
  msg.respond(encode(body), { headers: h });
}

function handler(hook) {
  return (err, msg) => {
    if (err) return;
    let verdict;
    try {
      const call = decode(msg.data);
      const problem = checkConfig(call.config);
      verdict = problem ? { error: `invalid pluginConfig: ${problem}` } : hooks[hook](call, call.config);
    } catch (e) {
      verdict = { error: `${e.name}: ${e.message}` };
    }
    reply(msg, VERDICT, verdict);
  };
}

const nc = await connect({ servers, name: `meshbus-filter-host ${name} (js)` });
const hookNames = Object.keys(hooks);
const service = await nc.services.add({
  name: "meshbus-filter-host",
  version: "0.1.0",
  description: `meshbus remote filter ${name} (JavaScript)`,
  queue: "q",
  metadata: {
    filter: name,
    package: "meshbus-js-stamp-filter",
    version: "1.0.0",
    hooks: hookNames.join(","),
    config_schema: JSON.stringify(CONFIG_SCHEMA),
    root,
    language: "javascript",
  },
});
for (const hook of hookNames) service.addEndpoint(hook, { subject: subject(hook), handler: handler(hook) });
service.addEndpoint("info", {
  subject: subject("info"),
  handler: (err, msg) => {
    if (err) return;
    reply(msg, HOST_INFO, {
      filter: name,
      hooks: hookNames,
      package: "meshbus-js-stamp-filter",
      version: "1.0.0",
      request_body: "none",
      response_body: "none",
      config_schema: JSON.stringify(CONFIG_SCHEMA),
      instance: service.info().id,
      language: "javascript",
    });
  },
});
await nc.flush();
console.log(`serving filter ${name} (${hookNames.join(",")}) on ${subject("*")}`);

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    await service.stop();
    await nc.drain();
    process.exit(0);
  });
}
