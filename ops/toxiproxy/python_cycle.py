"""Toxiproxy's Python client (toxiproxy-python, from PyPI) against a ferry
cluster: create / toxic / update / disable / reset / delete, with traffic
checked through every node at each step.

Run by node/tests/toxiproxy_process.rs, with the client on PYTHONPATH
(ops/toxiproxy-clients.sh installs it) and:
  FERRY_TOXIPROXY_APIS  "IP:PORT,IP:PORT,IP:PORT", each node's Toxiproxy API
  FERRY_NODE_IPS        "IP,IP,IP", each node's bind address
  FERRY_UPSTREAM        "IP:PORT" of a line echo server ("L\n" -> "name: L\n")
Prints one line per check and closes with "python-client: N passed, M failed";
exits 1 if any failed. Checks marked (chaos) need the data plane to enforce
policies on traffic.
"""

import os
import socket
import sys
import time

from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import NotFound, ProxyExists

APIS = [a.rsplit(":", 1) for a in os.environ["FERRY_TOXIPROXY_APIS"].split(",")]
IPS = os.environ["FERRY_NODE_IPS"].split(",")
UPSTREAM = os.environ["FERRY_UPSTREAM"]
WAIT = 10.0
LATENCY_MS = 300

passed, failed = 0, 0


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {what}", flush=True)
    else:
        failed += 1
        print(f"FAIL {what} {detail}", flush=True)


def use_node(i):
    """Points the client at node i's API (0-based)."""
    t = Toxiproxy()
    t.update_api_consumer(APIS[i][0], int(APIS[i][1]))
    return t


def round_trip(ip, port, msg="ping"):
    """One fresh connection, one line: (reply, seconds)."""
    started = time.monotonic()
    with socket.create_connection((ip, port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(msg.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip(), time.monotonic() - started


def serves_everywhere(port, slower_than=None, faster_than=None):
    """Polls until every node answers on port (within the bounds); the last error."""
    deadline = time.monotonic() + WAIT
    last = None
    while time.monotonic() < deadline:
        try:
            bad = []
            for ip in IPS:
                reply, took = round_trip(ip, port)
                if not reply.endswith(": ping"):
                    bad.append(f"{ip}: reply {reply!r}")
                elif slower_than is not None and took < slower_than:
                    bad.append(f"{ip}: {took * 1000:.0f} ms < {slower_than * 1000:.0f} ms")
                elif faster_than is not None and took > faster_than:
                    bad.append(f"{ip}: {took * 1000:.0f} ms > {faster_than * 1000:.0f} ms")
            if not bad:
                return None
            last = "; ".join(bad)
        except OSError as e:
            last = repr(e)
        time.sleep(0.05)
    return last


def refused_everywhere(port):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        open_on = []
        for ip in IPS:
            try:
                socket.create_connection((ip, port), timeout=1).close()
                open_on.append(ip)
            except OSError:
                pass
        if not open_on:
            return None
        time.sleep(0.05)
    return f"still accepting on {open_on}"


def closed_within(sock, seconds):
    sock.settimeout(seconds)
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def main():
    name = "py_echo"
    t1 = use_node(0)
    check("version answers", bool(t1.version()))
    for leftover in (name, "py_populated"):
        if t1.get_proxy(leftover) is not None:
            t1.get_proxy(leftover).destroy()

    # create
    proxy = t1.create(upstream=UPSTREAM, name=name, listen=f"{IPS[0]}:0")
    port = int(proxy.listen.rsplit(":", 1)[1])
    check("create picks a port for listen :0", port != 0 and proxy.enabled, proxy.listen)
    err = serves_everywhere(port)
    check("the proxy made on node 1 serves on every node", err is None, err)
    try:
        t1.create(upstream=UPSTREAM, name=name)
        check("a second create is refused", False)
    except ProxyExists:
        check("a second create is refused", True)
    try:
        APIConsumer.post("/proxies", json={"name": name, "upstream": UPSTREAM, "listen": f"{IPS[0]}:0"})
        check("409 for an existing proxy", False)
    except ProxyExists:
        check("409 for an existing proxy", True)

    # toxic, on node 2
    t2 = use_node(1)
    proxy = t2.get_proxy(name)
    check("node 2 lists the proxy", proxy is not None and proxy.upstream == UPSTREAM)
    proxy.add_toxic(type="latency", attributes={"latency": LATENCY_MS})
    toxics = proxy.toxics()
    check("the toxic gets its default name", "latency_downstream" in toxics, list(toxics))
    toxic = toxics.get("latency_downstream")
    check(
        "the toxic reads back",
        toxic is not None and toxic.stream == "downstream" and toxic.toxicity == 1.0
        and toxic.attributes.get("latency") == LATENCY_MS,
        vars(toxic) if toxic else None,
    )
    err = serves_everywhere(port, slower_than=LATENCY_MS / 1000)
    check("(chaos) the latency toxic delays round trips through every node", err is None, err)

    # update, on node 3: attributes merge
    t3 = use_node(2)
    APIConsumer.post(f"/proxies/{name}/toxics/latency_downstream", json={"attributes": {"jitter": 5}})
    toxic = t3.get_proxy(name).get_toxic("latency_downstream")
    check(
        "an update merges attributes",
        toxic is not None and toxic.attributes == {"latency": LATENCY_MS, "jitter": 5},
        vars(toxic) if toxic else None,
    )
    proxy = t3.get_proxy(name)
    proxy.destroy_toxic("latency_downstream")
    check("the toxic is gone", proxy.toxics() == {})
    err = serves_everywhere(port, faster_than=0.2)
    check("(chaos) removing the toxic restores the round trip", err is None, err)

    # disable: listener and connections closed on every node
    held = socket.create_connection((IPS[2], port), timeout=5)
    held.sendall(b"ping\n")
    held.settimeout(5)
    check("a connection through node 3 is open", held.recv(64).endswith(b": ping\n"))
    with proxy.down():
        check("the held connection is closed at once", closed_within(held, 2.0))
        err = refused_everywhere(port)
        check("a disabled proxy refuses connections on every node", err is None, err)
        check("it reads disabled", t1.get_proxy(name).enabled is False)
    held.close()
    err = serves_everywhere(port)
    check("enabled again, it serves on every node", err is None, err)

    # reset: every proxy enabled, every toxic removed
    proxy.add_toxic(type="bandwidth", stream="upstream", toxicity=0.5, attributes={"rate": 1000})
    proxy.disable()
    err = refused_everywhere(port)
    check("disabled before the reset", err is None, err)
    check("reset answers", t2.reset())
    check("reset enabled the proxy", t1.get_proxy(name).enabled is True)
    check("reset removed the toxics", t1.get_proxy(name).toxics() == {})
    err = serves_everywhere(port)
    check("after the reset it serves on every node", err is None, err)

    # populate
    made = t1.populate([{"name": "py_populated", "upstream": UPSTREAM, "listen": f"{IPS[0]}:0"}])
    check("populate creates a proxy", len(made) == 1 and made[0].name == "py_populated")
    pport = int(made[0].listen.rsplit(":", 1)[1])
    err = serves_everywhere(pport)
    check("the populated proxy serves on every node", err is None, err)

    # delete
    check("delete answers", t3.get_proxy(name).destroy())
    check("the proxy is gone", t1.get_proxy(name) is None)
    err = refused_everywhere(port)
    check("a deleted proxy refuses connections on every node", err is None, err)
    try:
        APIConsumer.delete(f"/proxies/{name}")
        check("404 for a missing proxy", False)
    except NotFound:
        check("404 for a missing proxy", True)
    t1.destroy_all()
    check("destroy_all leaves no proxy", t1.proxies() == {})

    print(f"python-client: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
