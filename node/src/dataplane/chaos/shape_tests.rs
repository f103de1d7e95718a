use std::sync::Arc;

use ferry_client::chaos::ChaosPolicy;
use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::dataplane::chaos::{ChaosCell, ConnId, PolicyInput, RouteChaos, decide, resolve};
use crate::dataplane::copy::{CopyCounters, CopyEnd, CopyMode, CopyOutcome, LiveChaos, copy};
use crate::telemetry::metrics::Metrics;

fn chaos_of(policies: &[serde_json::Value]) -> RouteChaos {
    let route: ferry_client::RouteSpec = serde_json::from_value(serde_json::json!({
        "name": "web", "listen": ":7000", "backends": [{"id": "a", "addr": "127.0.0.1:1"}]}))
    .expect("route");
    let inputs: Vec<PolicyInput> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| PolicyInput {
            policy: serde_json::from_value::<ChaosPolicy>(p.clone()).expect("policy"),
            revision: i as u64 + 1,
        })
        .collect();
    resolve(&inputs, "n1", &route, 0, &Metrics::new().expect("metrics"))
}

/// The chain of one direction of connection 0 under `toxics` (one policy).
fn chain(toxics: serde_json::Value, upstream: bool) -> Chain {
    let chaos = chaos_of(&[serde_json::json!({"name": "p", "seed": 1, "toxics": toxics})]);
    let mut hits = decide(&chaos, chaos.conn(0), 0);
    Chain::new(&mut hits, upstream)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Each chunk is released at its receive time + latency: delays pipeline
/// (ten chunks 1 ms apart leave 1 ms apart, not 100 ms apart), and a
/// jittered chunk never overtakes the one before it.
#[test]
fn latency_pipelines_from_receive_time_and_keeps_order() {
    let t0 = Instant::now();
    let mut c = chain(serde_json::json!([{"kind": {"latency": {"latency_ms": 100}}}]), false);
    let mut out = VecDeque::new();
    for i in 0..10 {
        c.schedule(10, t0 + ms(i), &mut out);
    }
    let at: Vec<Duration> = out.iter().map(|(_, t)| *t - t0).collect();
    assert_eq!(at, (0..10).map(|i| ms(100 + i)).collect::<Vec<_>>());

    let mut c =
        chain(serde_json::json!([{"kind": {"latency": {"latency_ms": 100, "jitter_ms": 20}}}]), false);
    let mut out = VecDeque::new();
    for i in 0..1000 {
        let added = c.schedule(1, t0 + ms(i), &mut out);
        assert!(added <= ms(120), "{added:?}");
    }
    let releases: Vec<Instant> = out.iter().map(|(_, t)| *t).collect();
    assert!(releases.windows(2).all(|w| w[0] <= w[1]), "order kept");
    for (i, r) in releases.iter().enumerate() {
        let d = *r - (t0 + ms(i as u64));
        assert!(d >= ms(80) && d <= ms(120), "chunk {i}: {d:?}");
    }
    // Upstream is untouched by a downstream toxic; `both` acts both ways.
    assert!(chain(serde_json::json!([{"kind": {"latency": {"latency_ms": 1}}}]), true).is_empty());
    let both = serde_json::json!([{"direction": "both", "kind": {"latency": {"latency_ms": 1}}}]);
    assert!(!chain(both.clone(), true).is_empty() && !chain(both, false).is_empty());
}

/// Bandwidth: the last byte of N bytes leaves exactly N / rate after the
/// first arrived, in slices of at most a hundredth of a second's worth.
#[test]
fn bandwidth_releases_at_the_exact_rate() {
    for rate_kbps in [10u64, 100, 10_000, 1_000_000] {
        let t0 = Instant::now();
        let mut c = chain(serde_json::json!([{"kind": {"bandwidth": {"rate_kbps": rate_kbps}}}]), false);
        let mut out = VecDeque::new();
        let total: u64 = 2_000 * rate_kbps; // two seconds' worth
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(CHUNK as u64);
            c.schedule(n as usize, t0, &mut out);
            sent += n;
        }
        let last = out.back().map(|(_, t)| *t - t0).expect("slices");
        let err = (last.as_secs_f64() - 2.0).abs() / 2.0;
        assert!(err < 0.001, "{rate_kbps} kB/s: {total} bytes take {last:?}");
        let slice = (rate_kbps * 10).clamp(1, CHUNK as u64) as usize;
        assert!(out.iter().all(|(n, _)| *n <= slice), "{rate_kbps}: slices of at most {slice}");
        assert_eq!(out.iter().map(|(n, _)| *n as u64).sum::<u64>(), total);
    }
}

/// Slicer: pieces of average ± variation bytes, `delay_us` apart.
#[test]
fn slicer_cuts_to_the_sizes_and_spacing() {
    let t0 = Instant::now();
    let toxics = serde_json::json!([{"kind": {"slicer": {"average_size": 100, "size_variation": 20, "delay_us": 1000}}}]);
    let mut c = chain(toxics, false);
    let mut out = VecDeque::new();
    c.schedule(10_000, t0, &mut out);
    let sizes: Vec<usize> = out.iter().map(|(n, _)| *n).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 10_000);
    assert!(sizes[..sizes.len() - 1].iter().all(|n| (80..=120).contains(n)), "{sizes:?}");
    for (i, (_, at)) in out.iter().enumerate() {
        assert_eq!(*at - t0, ms(i as u64), "slice {i}");
    }
}

async fn pair() -> io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = TcpStream::connect(l.local_addr()?).await?;
    let (b, _) = l.accept().await?;
    Ok((a, b))
}

/// client <-> [copy under `policies`] <-> server, the copy on its own task.
async fn through(
    policies: &[serde_json::Value],
) -> io::Result<(TcpStream, TcpStream, tokio::task::JoinHandle<CopyOutcome>)> {
    let (client, mut c_side) = pair().await?;
    let (mut s_side, server) = pair().await?;
    let chaos = Arc::new(chaos_of(policies));
    let copy_task = tokio::spawn(async move {
        let cell = ChaosCell::default();
        cell.set(&chaos);
        let metrics = ChaosMetrics::new(&Metrics::new().expect("metrics"));
        let live = LiveChaos {
            cell: &cell,
            id: ConnId { node: 0, route: 0, ordinal: 0 },
            backend: 0,
            metrics: &metrics,
            counted: Default::default(),
        };
        let (u, d) = (IntCounter::new("u", "u").expect("c"), IntCounter::new("d", "d").expect("c"));
        let counters = CopyCounters { upstream: &u, downstream: &d };
        copy(&mut c_side, &mut s_side, Duration::from_secs(30), counters, CopyMode::Userspace, Some(&live))
            .await
    });
    Ok((client, server, copy_task))
}

/// limit_data: exactly that many bytes pass, then the connection closes.
#[tokio::test]
async fn limit_data_passes_exactly_its_bytes_then_closes() -> io::Result<()> {
    let (mut client, mut server, copy_task) =
        through(&[serde_json::json!({"name": "l", "toxics": [{"direction": "upstream", "kind": {"limit_data": {"bytes": 1000}}}]})])
            .await?;
    client.write_all(&[7u8; 3000]).await?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut got)).await??;
    assert_eq!(got.len(), 1000);
    let out = copy_task.await.map_err(io::Error::other)?;
    assert!(matches!(out.end, CopyEnd::Chaos(Abort::Close)), "{:?}", out.end);
    Ok(())
}

/// reset_peer: the client sees ECONNRESET, `timeout_ms` after its first
/// chunk.
#[tokio::test]
async fn reset_peer_resets_the_client_after_its_timeout() -> io::Result<()> {
    let (mut client, _server, copy_task) =
        through(&[serde_json::json!({"name": "r", "toxics": [{"direction": "upstream", "kind": {"reset_peer": {"timeout_ms": 200}}}]})])
            .await?;
    let t0 = std::time::Instant::now();
    client.write_all(b"hello").await?;
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await?;
    let elapsed = t0.elapsed();
    match r {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("read {n} bytes instead of a reset"),
    }
    assert!(elapsed >= ms(200) && elapsed < ms(1000), "{elapsed:?}");
    let out = copy_task.await.map_err(io::Error::other)?;
    assert!(matches!(out.end, CopyEnd::Chaos(Abort::Reset)), "{:?}", out.end);
    Ok(())
}

/// timeout: data is dropped and the connection closed after the timeout.
#[tokio::test]
async fn timeout_drops_data_and_closes_after_its_timeout() -> io::Result<()> {
    let (mut client, mut server, copy_task) =
        through(&[serde_json::json!({"name": "t", "toxics": [{"direction": "upstream", "kind": {"timeout": {"timeout_ms": 300}}}]})])
            .await?;
    let t0 = std::time::Instant::now();
    client.write_all(b"dropped").await?;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut got)).await?;
    assert!(got.is_empty(), "{got:?}");
    let elapsed = t0.elapsed();
    assert!(elapsed >= ms(300) && elapsed < ms(1500), "{elapsed:?}");
    let out = copy_task.await.map_err(io::Error::other)?;
    assert!(matches!(out.end, CopyEnd::Chaos(Abort::Close)), "{:?}", out.end);
    Ok(())
}

/// slow_close: the FIN is held `delay_ms` after the data.
#[tokio::test]
async fn slow_close_holds_the_end() -> io::Result<()> {
    let (mut client, mut server, _copy) =
        through(&[serde_json::json!({"name": "s", "toxics": [{"kind": {"slow_close": {"delay_ms": 300}}}]})])
            .await?;
    server.write_all(b"bye").await?;
    server.shutdown().await?;
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got)).await??;
    assert_eq!(got, b"bye");
    assert!(t0.elapsed() >= ms(290), "the end came after {:?}", t0.elapsed());
    Ok(())
}

/// A latency toxic on a live copy: 10 small exchanges take latency each,
/// and bytes stay intact and in order.
#[tokio::test]
async fn latency_delays_each_round_trip_once() -> io::Result<()> {
    let (mut client, mut server, _copy) =
        through(&[serde_json::json!({"name": "l", "toxics": [{"kind": {"latency": {"latency_ms": 50}}}]})])
            .await?;
    for i in 0..5u8 {
        let t0 = std::time::Instant::now();
        client.write_all(&[i; 10]).await?;
        let mut req = [0u8; 10];
        server.read_exact(&mut req).await?;
        assert!(t0.elapsed() < ms(40), "upstream is not delayed");
        server.write_all(&[i + 100; 10]).await?;
        let mut resp = [0u8; 10];
        client.read_exact(&mut resp).await?;
        assert_eq!(resp, [i + 100; 10]);
        let rtt = t0.elapsed();
        assert!(rtt >= ms(49) && rtt < ms(150), "round trip {i}: {rtt:?}");
    }
    Ok(())
}

/// The bytes held are sized for the toxics: a latency toxic's window is
/// 10 Gbit/s × its delay (a 1 ms toxic must not cap a stream at 256 KiB
/// per millisecond), within the bounds.
#[test]
fn the_hold_is_sized_for_latency_and_bandwidth() {
    let hold = |toxics| chain(toxics, false).hold_bytes();
    assert_eq!(hold(serde_json::json!([{"kind": {"slow_close": {"delay_ms": 1}}}])), HOLD);
    assert_eq!(hold(serde_json::json!([{"kind": {"latency": {"latency_ms": 1}}}])), 1_250_000);
    assert_eq!(hold(serde_json::json!([{"kind": {"latency": {"latency_ms": 100}}}])), MAX_HOLD);
    assert_eq!(hold(serde_json::json!([{"kind": {"bandwidth": {"rate_kbps": 500000}}}])), 5_000_000);
}

/// The ring keeps the bytes in order when it grows (a 1 MB stream through a
/// latency toxic grows it from 4 KiB in several steps, wrapping between).
#[tokio::test]
async fn a_growing_ring_keeps_every_byte_in_order() -> io::Result<()> {
    let (mut client, mut server, _copy) =
        through(&[serde_json::json!({"name": "l", "toxics": [{"direction": "upstream", "kind": {"latency": {"latency_ms": 5}}}]})])
            .await?;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let send = async {
        for chunk in data.chunks(3_000) {
            client.write_all(chunk).await?;
        }
        client.shutdown().await
    };
    let mut got = Vec::new();
    let (sent, read) = tokio::join!(send, server.read_to_end(&mut got));
    sent?;
    read?;
    assert!(got == data, "{} bytes arrived, in order: {}", got.len(), got.len() == data.len());
    Ok(())
}
