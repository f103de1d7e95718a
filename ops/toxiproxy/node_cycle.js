// Toxiproxy's Node client (toxiproxy-node-client, from npm) against a ferry
// cluster: create / toxic / update / disable / reset / delete, with traffic
// checked through every node at each step.
//
// Run by node/tests/toxiproxy_process.rs (ops/toxiproxy-clients.sh installs
// the client) with:
//   FERRY_TOXIPROXY_NODE_MODULES  the node_modules holding the client
//   FERRY_TOXIPROXY_APIS          "IP:PORT,IP:PORT,IP:PORT", each node's API
//   FERRY_NODE_IPS                "IP,IP,IP", each node's bind address
//   FERRY_UPSTREAM                "IP:PORT" of a line echo server
// Prints one line per check and closes with "node-client: N passed, M
// failed"; exits 1 if any failed. Checks marked (chaos) need the data plane
// to enforce policies on traffic.
"use strict";

const net = require("net");
const path = require("path");
const { Toxiproxy, ToxiproxyError } = require(
  path.join(process.env.FERRY_TOXIPROXY_NODE_MODULES, "toxiproxy-node-client"),
);

const APIS = process.env.FERRY_TOXIPROXY_APIS.split(",").map((a) => `http://${a}`);
const IPS = process.env.FERRY_NODE_IPS.split(",");
const UPSTREAM = process.env.FERRY_UPSTREAM;
const WAIT_MS = 10000;
const LATENCY_MS = 300;

let passed = 0;
let failed = 0;
function check(what, ok, detail) {
  if (ok) {
    passed += 1;
    console.log(`ok   ${what}`);
  } else {
    failed += 1;
    console.log(`FAIL ${what} ${detail === undefined ? "" : JSON.stringify(detail)}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One fresh connection, one line: resolves {reply, ms}. */
function roundTrip(ip, port) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const s = net.connect({ host: ip, port });
    let data = "";
    s.setTimeout(5000, () => {
      s.destroy();
      reject(new Error("timeout"));
    });
    s.on("connect", () => s.write("ping\n"));
    s.on("data", (d) => {
      data += d.toString();
      if (data.endsWith("\n")) {
        s.destroy();
        resolve({ reply: data.trim(), ms: Date.now() - started });
      }
    });
    s.on("error", reject);
    s.on("close", () => reject(new Error(`closed after ${JSON.stringify(data)}`)));
  });
}

/** Polls until every node answers on port within the bounds; null or the last problem. */
async function servesEverywhere(port, { slowerThan, fasterThan } = {}) {
  const deadline = Date.now() + WAIT_MS;
  let last = null;
  while (Date.now() < deadline) {
    const bad = [];
    for (const ip of IPS) {
      try {
        const { reply, ms } = await roundTrip(ip, port);
        if (!reply.endsWith(": ping")) bad.push(`${ip}: reply ${reply}`);
        else if (slowerThan !== undefined && ms < slowerThan) bad.push(`${ip}: ${ms} ms < ${slowerThan}`);
        else if (fasterThan !== undefined && ms > fasterThan) bad.push(`${ip}: ${ms} ms > ${fasterThan}`);
      } catch (e) {
        bad.push(`${ip}: ${e.message}`);
      }
    }
    if (bad.length === 0) return null;
    last = bad.join("; ");
    await sleep(50);
  }
  return last;
}

function accepts(ip, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: ip, port });
    s.setTimeout(1000, () => {
      s.destroy();
      resolve(false);
    });
    s.on("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

async function refusedEverywhere(port) {
  const deadline = Date.now() + WAIT_MS;
  let open = [];
  while (Date.now() < deadline) {
    open = [];
    for (const ip of IPS) if (await accepts(ip, port)) open.push(ip);
    if (open.length === 0) return null;
    await sleep(50);
  }
  return `still accepting on ${open}`;
}

/** A connection through ip:port that has answered once; resolves {closed: Promise}. */
function holdConnection(ip, port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port });
    const closed = new Promise((c) => {
      s.on("close", () => c(true));
      s.on("error", () => {});
    });
    s.once("data", () => resolve({ socket: s, closed }));
    s.on("connect", () => s.write("ping\n"));
    s.once("error", reject);
  });
}

async function rejects(what, promise) {
  try {
    await promise;
    check(what, false, "no error");
  } catch (e) {
    check(what, e instanceof ToxiproxyError, e.message);
  }
}

async function main() {
  const [t1, t2, t3] = APIS.map((a) => new Toxiproxy(a));
  const name = "node_echo";
  check("version answers", (await t1.getVersion()).length > 0);
  for (const [n, p] of Object.entries(await t1.getAll())) {
    if (n === name || n === "node_populated") await p.remove();
  }

  // create
  let proxy = await t1.createProxy({ name, listen: `${IPS[0]}:0`, upstream: UPSTREAM });
  const port = Number(proxy.listen.split(":").pop());
  check("create picks a port for listen :0", port !== 0 && proxy.enabled === true, proxy.listen);
  let err = await servesEverywhere(port);
  check("the proxy made on node 1 serves on every node", err === null, err);
  await rejects("a second create is refused (409)", t1.createProxy({ name, upstream: UPSTREAM }));

  // toxic, on node 2
  proxy = await t2.get(name);
  check("node 2 reads the proxy", proxy.upstream === UPSTREAM && proxy.enabled === true);
  let toxic = await proxy.addToxic({ type: "latency", attributes: { latency: LATENCY_MS } });
  check(
    "the toxic gets Toxiproxy's defaults",
    toxic.name === "latency_downstream" && toxic.stream === "downstream" && toxic.toxicity === 1,
    toxic.toJson(),
  );
  await rejects("the same toxic again is refused (409)", proxy.addToxic({ type: "latency" }));
  err = await servesEverywhere(port, { slowerThan: LATENCY_MS });
  check("(chaos) the latency toxic delays round trips through every node", err === null, err);

  // update, on node 3: Toxic.update posts, attributes merge
  toxic = await (await t3.get(name)).getToxic("latency_downstream");
  toxic = await toxic.update({ attributes: { jitter: 5 } });
  check(
    "an update merges attributes",
    toxic.attributes.latency === LATENCY_MS && toxic.attributes.jitter === 5,
    toxic.toJson(),
  );
  await toxic.remove();
  await rejects("the removed toxic is gone (404)", proxy.getToxic("latency_downstream"));
  err = await servesEverywhere(port, { fasterThan: 200 });
  check("(chaos) removing the toxic restores the round trip", err === null, err);

  // disable through Proxy.update (a POST of the whole proxy)
  const held = await holdConnection(IPS[1], port);
  proxy = await proxy.update({ ...proxy.toJson(), enabled: false });
  check("the update answers the disabled proxy", proxy.enabled === false && proxy.listen.endsWith(`:${port}`));
  const closedInTime = await Promise.race([held.closed, sleep(2000).then(() => false)]);
  check("the held connection is closed at once", closedInTime === true);
  err = await refusedEverywhere(port);
  check("a disabled proxy refuses connections on every node", err === null, err);
  proxy = await proxy.update({ enabled: true });
  err = await servesEverywhere(port);
  check("enabled again, it serves on every node", err === null, err);

  // populate
  const populated = await t2.populate([{ name: "node_populated", listen: `${IPS[0]}:0`, upstream: UPSTREAM }]);
  const pop = populated.node_populated;
  check("populate creates a proxy", pop !== undefined && pop.enabled === true);
  err = await servesEverywhere(Number(pop.listen.split(":").pop()));
  check("the populated proxy serves on every node", err === null, err);

  // reset
  await proxy.addToxic({ type: "bandwidth", stream: "upstream", toxicity: 0.5, attributes: { rate: 1000 } });
  await proxy.update({ enabled: false });
  err = await refusedEverywhere(port);
  check("disabled before the reset", err === null, err);
  await t3.reset();
  proxy = await t1.get(name);
  check("reset enabled the proxy", proxy.enabled === true);
  await rejects("reset removed the toxic", proxy.getToxic("bandwidth_upstream"));
  err = await servesEverywhere(port);
  check("after the reset it serves on every node", err === null, err);

  // delete
  await proxy.remove();
  await rejects("the deleted proxy is gone (404)", t2.get(name));
  err = await refusedEverywhere(port);
  check("a deleted proxy refuses connections on every node", err === null, err);
  await pop.remove();
  check("no proxy is left", Object.keys(await t3.getAll()).length === 0);

  console.log(`node-client: ${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.log(`FAIL unexpected error: ${e.stack || e}`);
    console.log(`node-client: ${passed} passed, ${failed + 1} failed`);
    process.exit(1);
  },
);
