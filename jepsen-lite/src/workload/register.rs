//! The register workload: [`KEYS`] independent registers. Register `k` is
//! route `jreg<k>`'s backend `r`, and its value is the port of that
//! backend's address (`10.213.7.250:<value>`, where nothing listens): a
//! field a route write sets, with room for 65,534 unique values per key,
//! which a weight (0..=256) does not have. One route per key, so `?cas=`
//! (a route's revision) conditions on this register alone.
//!
//! Every written value is unique per key: client `k` of `c` writes
//! `2 + k, 2 + k + c, …` on each key (1 is the initial value) and only reads
//! a key whose values it has used up. Operations, each on a random key and
//! node, recorded with `key`:
//! - `read`: a linearizable GET of the route;
//! - `write(v)`: PUT of the route with `r` at port `v`;
//! - `cas(a, b)`: a linearizable `read` (recorded as its own op) saw `a` at
//!   revision R, then PUT of `b` with `?cas=R`, recorded as `cas [a, b]`:
//!   `ok` applied, `fail` on 409 `cas_mismatch` (or another 4xx: definitely
//!   not applied), `info` when unknown;
//! - `read_stale`: `?consistency=stale`, with the node's index and the
//!   route's revision;
//! - `read_blocking`: `?index=N&wait=W&consistency=stale`, N the highest
//!   config index this client has seen plus 0..=3, W 200..1500 ms.
//!
//! Every write and cas carries a random `X-Ferry-Request-Id` and its
//! `deadline_ns` (invocation + the nodes' request timeout). After an `info`
//! the same request (same id, body and `?cas=`) is sent again to another
//! node, up to `retries` times ([`RETRIES`] unless `--register-retries`
//! says otherwise); one acknowledged request in
//! [`DUPLICATE_ONE_IN`] is sent once more to another node, as a duplicate
//! delivery, which must answer success and apply nothing. Each attempt is
//! its own op with the request's id.

use std::time::Duration;

use ferry_client::RouteSpec;
use ferry_client::api::RouteStatus;
use ferry_client::http::{ClientError, Outcome, WriteOpts};

use super::{Ctx, Process, name, route};
use crate::history::{Event, Op};
use crate::procs::NODE_REQUEST_TIMEOUT;

/// How many registers (keys 0 .. KEYS).
pub const KEYS: u32 = 8;
/// Every register's value when the run starts.
pub const INITIAL: i64 = 1;
/// The largest value (a port).
pub const MAX_VALUE: i64 = 65_535;
/// The register's backend id and the first route's listen port.
const BACKEND: &str = "r";
const FIRST_PORT: u16 = 7010;
/// Resends of a request whose outcome was unknown, by default.
pub const RETRIES: usize = 2;
/// One acknowledged request in this many is delivered twice.
pub const DUPLICATE_ONE_IN: u8 = 10;

/// The route of register `key`.
pub fn route_name(key: u32) -> String {
    format!("jreg{key}")
}

/// Register `key`'s route holding `value`.
pub fn spec(key: u32, value: i64) -> RouteSpec {
    let port = u16::try_from(value).unwrap_or(0);
    route(&route_name(key), FIRST_PORT + u16::try_from(key).unwrap_or(0), &[(BACKEND, port, 1)])
}

/// Every register's route at [`INITIAL`].
pub fn routes() -> Vec<RouteSpec> {
    (0..KEYS).map(|k| spec(k, INITIAL)).collect()
}

/// The register's value in a route read: `r`'s port, -1 when `r` is
/// missing or its address has no port.
pub fn value_of(r: &RouteStatus) -> i64 {
    r.config
        .backends
        .iter()
        .find(|b| b.id == BACKEND)
        .and_then(|b| b.addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<i64>().ok())
        .unwrap_or(-1)
}

/// The values one client writes: per key `first, first + step, …` up to
/// [`MAX_VALUE`].
#[derive(Debug, Clone)]
pub struct Values {
    next: Vec<i64>,
    step: i64,
}

impl Values {
    /// Client `k` of `c`.
    pub fn new(k: u32, c: u32) -> Self {
        Values { next: vec![INITIAL + 1 + i64::from(k); KEYS as usize], step: i64::from(c.max(1)) }
    }

    /// The next unused value of `key`, or `None` when they are used up.
    pub fn take(&mut self, key: u32) -> Option<i64> {
        let next = self.next.get_mut(key as usize)?;
        if *next > MAX_VALUE {
            return None;
        }
        let v = *next;
        *next += self.step;
        Some(v)
    }
}

/// A write or cas request, sent again unchanged on a retry.
#[derive(Debug, Clone)]
struct Request {
    key: u32,
    value: i64,
    cas: Option<u64>,
    id: u128,
    op: Op,
}

/// One register client: its process id, values and the highest config index it saw.
struct Client {
    ctx: Ctx,
    p: Process,
    rng: fastrand::Rng,
    values: Values,
    seen_index: u64,
    /// Resends of a request whose outcome was unknown.
    retries: usize,
}

/// One register client process (client `k` of `c`) until `stop`; a request
/// whose outcome is unknown is sent again up to `retries` times.
pub async fn register(ctx: Ctx, first_id: u32, stride: u32, seed: u64, values: Values, retries: usize) {
    let mut c = Client {
        ctx,
        p: Process { id: first_id, stride },
        rng: fastrand::Rng::with_seed(seed),
        values,
        seen_index: 0,
        retries,
    };
    while !c.ctx.stop.stopped() {
        let node = c.ctx.pick(&mut c.rng);
        let key = c.rng.u32(..KEYS);
        match c.rng.u8(..8) {
            0 | 1 => {
                c.read(node, key).await;
            }
            2 | 3 => c.write(node, key).await,
            4 | 5 => c.cas(node, key).await,
            6 => c.read_stale(node, key).await,
            _ => c.read_blocking(node, key).await,
        }
        tokio::time::sleep(Duration::from_millis(c.rng.u64(5..30))).await;
    }
}

impl Client {
    fn record(&self, e: Event, key: u32) {
        self.ctx.rec.record(&e.with_key(key));
    }

    /// A linearizable read; its value and the route's revision when ok.
    async fn read(&mut self, node: usize, key: u32) -> Option<(i64, u64)> {
        let (n, now) = (name(node), self.ctx.rec.now());
        self.record(Event::invoke(self.p.id, &n, Op::Read(None), now), key);
        let r = self.ctx.admin(node).route(&route_name(key), false).await;
        let now = self.ctx.rec.now();
        match r {
            Ok(r) => {
                self.seen_index = self.seen_index.max(r.index);
                let v = value_of(&r.value);
                self.record(Event::ok(self.p.id, &n, Op::Read(Some(v)), now), key);
                Some((v, r.value.revision.unwrap_or(0)))
            }
            Err(e) => {
                // A read changes nothing: never info, the process goes on.
                self.record(Event::fail(self.p.id, &n, Op::Read(None), now, &e.to_string()), key);
                None
            }
        }
    }

    async fn read_stale(&mut self, node: usize, key: u32) {
        let (n, now) = (name(node), self.ctx.rec.now());
        self.record(Event::invoke(self.p.id, &n, Op::ReadStale(None), now), key);
        let r = self.ctx.admin(node).route(&route_name(key), true).await;
        let now = self.ctx.rec.now();
        let e = match r {
            Ok(r) => {
                self.seen_index = self.seen_index.max(r.index);
                let seen = (value_of(&r.value), r.index, r.value.revision.unwrap_or(0));
                Event::ok(self.p.id, &n, Op::ReadStale(Some(seen)), now)
            }
            Err(e) => Event::fail(self.p.id, &n, Op::ReadStale(None), now, &e.to_string()),
        };
        self.record(e, key);
    }

    async fn read_blocking(&mut self, node: usize, key: u32) {
        let (n, now) = (name(node), self.ctx.rec.now());
        // Up to 3 past what this client saw, so that some queries wait.
        let (after, wait_ms) = (self.seen_index + self.rng.u64(0..4), self.rng.u64(200..1500));
        self.record(Event::invoke(self.p.id, &n, Op::ReadBlocking(after, wait_ms, None), now), key);
        let client = self.ctx.admin(node);
        let r = client.route_after(&route_name(key), after, Duration::from_millis(wait_ms), true).await;
        let now = self.ctx.rec.now();
        let e = match r {
            Ok(r) => {
                self.seen_index = self.seen_index.max(r.index);
                let seen = (value_of(&r.value), r.index, r.value.revision.unwrap_or(0));
                Event::ok(self.p.id, &n, Op::ReadBlocking(after, wait_ms, Some(seen)), now)
            }
            Err(e) => Event::fail(self.p.id, &n, Op::ReadBlocking(after, wait_ms, None), now, &e.to_string()),
        };
        self.record(e, key);
    }

    async fn write(&mut self, node: usize, key: u32) {
        let Some(value) = self.values.take(key) else {
            self.read(node, key).await;
            return;
        };
        let id = self.rng.u128(1..);
        self.submit(node, Request { key, value, cas: None, id, op: Op::Write(value) }).await;
    }

    async fn cas(&mut self, node: usize, key: u32) {
        let Some((seen, revision)) = self.read(node, key).await else { return };
        let Some(value) = self.values.take(key) else { return };
        let id = self.rng.u128(1..);
        self.submit(node, Request { key, value, cas: Some(revision), id, op: Op::Cas(seen, value) }).await;
    }

    /// Sends `req` to `node`; after an `info`, again to other nodes (up to
    /// `retries` times); after an `ok`, sometimes once more as a duplicate.
    async fn submit(&mut self, node: usize, req: Request) {
        let mut node = node;
        let mut outcome = self.attempt(node, &req).await;
        for _ in 0..self.retries {
            if outcome != Attempt::Info || self.ctx.stop.stopped() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.u64(20..200))).await;
            node = self.ctx.pick_other(&mut self.rng, node);
            outcome = self.attempt(node, &req).await;
        }
        if outcome == Attempt::Ok && self.rng.u8(..DUPLICATE_ONE_IN) == 0 {
            let other = self.ctx.pick_other(&mut self.rng, node);
            self.attempt(other, &req).await;
        }
    }

    /// One attempt of `req` on `node`, recorded as its own op.
    async fn attempt(&mut self, node: usize, req: &Request) -> Attempt {
        let (n, now) = (name(node), self.ctx.rec.now());
        let deadline = now.saturating_add(u64::try_from(NODE_REQUEST_TIMEOUT.as_nanos()).unwrap_or(u64::MAX));
        let invoke = Event::invoke(self.p.id, &n, req.op.clone(), now)
            .with_request_id(format!("{:032x}", req.id))
            .with_deadline(deadline);
        self.record(invoke, req.key);
        let opts = WriteOpts { cas: req.cas, request_id: Some(req.id) };
        let r = self.ctx.admin(node).put_route(&spec(req.key, req.value), opts).await;
        let now = self.ctx.rec.now();
        let (e, outcome) = match r {
            Ok(w) => {
                self.seen_index = self.seen_index.max(w.index);
                (Event::ok(self.p.id, &n, req.op.clone(), now), Attempt::Ok)
            }
            Err(e) if e.outcome() == Outcome::NotApplied => {
                (Event::fail(self.p.id, &n, req.op.clone(), now, &describe(&e)), Attempt::Fail)
            }
            Err(e) => (Event::info(self.p.id, &n, req.op.clone(), now, &describe(&e)), Attempt::Info),
        };
        self.record(e, req.key);
        if outcome == Attempt::Info {
            self.p.retire();
        }
        outcome
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Ok,
    Fail,
    Info,
}

/// The error, with the API's code first when there is one (`cas_mismatch: …`).
fn describe(e: &ClientError) -> String {
    match e.code() {
        Some(code) if !e.to_string().contains(code) => format!("{code}: {e}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unique_per_key_across_clients_and_bounded() {
        let (mut a, mut b) = (Values::new(0, 2), Values::new(1, 2));
        assert_eq!((a.take(3), b.take(3), a.take(3), b.take(3)), (Some(2), Some(3), Some(4), Some(5)));
        assert_eq!(a.take(0), Some(2), "each key has its own sequence");
        assert_eq!(a.take(KEYS), None, "no such key");
        let mut last = Values::new(0, 1);
        let n = std::iter::from_fn(|| last.take(1)).count();
        assert_eq!(n as i64, MAX_VALUE - INITIAL, "every port above the initial one, once");
    }

    #[test]
    fn the_value_is_the_backend_port() {
        let spec = spec(5, 4242);
        assert_eq!(spec.name, "jreg5");
        assert_eq!(spec.listen, ":7015");
        let status: RouteStatus = serde_json::from_value(serde_json::json!({
            "config": spec, "revision": 9, "listening": null, "active_connections": 0,
            "panic_mode": false, "backends": [],
        }))
        .expect("a route status");
        assert_eq!(value_of(&status), 4242);
    }

    #[test]
    fn every_route_is_valid_at_both_ends_of_the_value_space() {
        let mut all = routes();
        all.push(spec(KEYS - 1, MAX_VALUE));
        for r in &all {
            let mut errors = Vec::new();
            r.validate("route", &mut errors);
            assert!(errors.is_empty(), "{}: {errors:?}", r.name);
        }
    }
}
