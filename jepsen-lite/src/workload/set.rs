//! The set workload: `add(e)` reads a set route and writes it back with one
//! more backend `e<e>`, under `?cas=`, for the whole run; after the faults
//! the final `read_set` reads every set route and lists all elements.
//!
//! Elements are spread over [`ROUTES`] routes (`jset0` …), element `e` in
//! route `e % ROUTES`, so every route keeps growing through the run and a
//! route body stays far below the API's 64 KiB limit: at most
//! [`PER_ROUTE`] backends of about 50 bytes each. Client `k` of `c` adds
//! `k, k + c, …` at a pace set by the run's length ([`pace`]) so that the
//! run ends before the routes are full; the adds stop at [`CAPACITY`] in
//! any case. Each PUT carries a fresh request id (an add is a read and a
//! conditional write, repeated on a CAS conflict, so it is not retried as
//! one request; its id is not recorded).

use std::time::Duration;

use ferry_client::RouteSpec;
use ferry_client::http::{AdminClient, ClientError, WriteOpts};

use super::{Ctx, Process, complete_err, name, read_failed, route};
use crate::history::Op;

/// Set routes, their first listen port, and elements per route.
pub const ROUTES: u64 = 32;
const FIRST_PORT: u16 = 7100;
pub const PER_ROUTE: u64 = 300;
/// Most elements a run adds.
pub const CAPACITY: u64 = ROUTES * PER_ROUTE;
/// The shortest pause between two adds of one client.
const MIN_PACE: Duration = Duration::from_millis(100);

/// The name of set route `i`.
pub fn route_name(i: u64) -> String {
    format!("jset{i}")
}

/// The set's routes, empty but for their anchor.
pub fn routes() -> Vec<RouteSpec> {
    (0..ROUTES)
        .map(|i| route(&route_name(i), FIRST_PORT + u16::try_from(i).unwrap_or(0), &[("anchor", 9, 1)]))
        .collect()
}

/// The mean pause between two adds of one of `clients` clients so that a
/// run of `time` adds at most 80 % of [`CAPACITY`].
pub fn pace(clients: usize, time: Duration) -> Duration {
    let budget = CAPACITY * 8 / 10;
    let per_add = time.saturating_mul(u32::try_from(clients.max(1)).unwrap_or(u32::MAX)) / budget as u32;
    per_add.max(MIN_PACE)
}

/// One set client process: adds elements `first_element`, `+ step`, … until
/// `stop` or [`CAPACITY`], pausing about `pace` between adds.
pub async fn set(ctx: Ctx, first_id: u32, stride: u32, seed: u64, elements: (u64, u64), pace: Duration) {
    let (mut e, step) = elements;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut p = Process { id: first_id, stride };
    let pace_ms = u64::try_from(pace.as_millis()).unwrap_or(u64::MAX).max(2);
    while !ctx.stop.stopped() && e < CAPACITY {
        let node = ctx.pick(&mut rng);
        let client = ctx.admin(node);
        let n = name(node);
        ctx.rec.invoke(p.id, &n, Op::Add(e));
        match add(&client, e, rng.u128(1..)).await {
            Ok(()) => ctx.rec.ok(p.id, &n, Op::Add(e)),
            Err(err) => complete_err(&ctx, &mut p, &n, Op::Add(e), &err, true),
        }
        e += step;
        tokio::time::sleep(Duration::from_millis(rng.u64(pace_ms / 2..pace_ms * 3 / 2))).await;
    }
}

async fn add(client: &AdminClient, e: u64, request_id: u128) -> Result<(), ClientError> {
    let route = route_name(e % ROUTES);
    for attempt in 0..5u128 {
        let r = client.route(&route, false).await.map_err(read_failed)?;
        let mut spec = r.value.config;
        let id = format!("e{e}");
        if spec.backends.iter().any(|b| b.id == id) {
            return Ok(());
        }
        let mut backend = spec.backends[0].clone();
        backend.id = id;
        spec.backends.push(backend);
        // Another body needs another id (the node refuses a reused one).
        let opts = WriteOpts { cas: r.value.revision, request_id: Some(request_id.wrapping_add(attempt)) };
        match client.put_route(&spec, opts).await {
            Ok(_) => return Ok(()),
            Err(err) if err.code() == Some("cas_mismatch") => continue,
            Err(err) => return Err(err),
        }
    }
    Err(ClientError::Connect { addr: client.addr(), message: "gave up after 5 CAS conflicts".into() })
}

/// The elements in set route `route` of one read.
async fn read_route(client: &AdminClient, route: &str) -> Result<Vec<u64>, ClientError> {
    let r = client.route(route, false).await?;
    Ok(r.value
        .config
        .backends
        .iter()
        .filter_map(|b| b.id.strip_prefix('e').and_then(|s| s.parse().ok()))
        .collect())
}

/// The final read of the set: one `read_set` op reads every set route
/// (linearizably) on one node and lists all their elements; retried on
/// every node until one answers them all.
pub async fn read_set(ctx: &Ctx, process: u32) -> bool {
    for _attempt in 0..10 {
        for &node in &ctx.nodes {
            let n = name(node);
            let client = ctx.admin(node);
            ctx.rec.invoke(process, &n, Op::ReadSet(None));
            let mut ids = Vec::new();
            let mut failed = None;
            for i in 0..ROUTES {
                match read_route(&client, &route_name(i)).await {
                    Ok(mut e) => ids.append(&mut e),
                    Err(e) => {
                        failed = Some(format!("{}: {e}", route_name(i)));
                        break;
                    }
                }
            }
            match failed {
                None => {
                    ids.sort_unstable();
                    ctx.rec.ok(process, &n, Op::ReadSet(Some(ids)));
                    return true;
                }
                Some(e) => ctx.rec.fail(process, &n, Op::ReadSet(None), &e),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_spreads_the_adds_over_the_run() {
        assert_eq!(pace(5, Duration::from_secs(30)), MIN_PACE, "a short run adds at the fastest pace");
        let p = pace(5, Duration::from_secs(1800));
        let adds = 1800.0 * 5.0 / p.as_secs_f64();
        assert!(adds <= CAPACITY as f64 * 0.8 + 1.0 && adds > CAPACITY as f64 * 0.7, "{p:?}: {adds} adds");
    }

    #[test]
    fn a_full_route_body_stays_under_the_api_limit() {
        let mut spec = routes().remove(0);
        let anchor = spec.backends[0].clone();
        for e in 0..PER_ROUTE {
            let mut b = anchor.clone();
            b.id = format!("e{}", e * ROUTES + CAPACITY);
            spec.backends.push(b);
        }
        let body = serde_json::to_vec(&spec).expect("serializes");
        assert!(body.len() < 32 * 1024, "{} bytes", body.len());
    }
}
