//! The open-loop load generator of the gateway harness (`benches/gateway.sh`): a fixed
//! offered rate over keep-alive HTTP/1.1 connections, with wrk2's correction for
//! coordinated omission — each request has an intended send time on a fixed schedule,
//! and its latency is counted from that time, so a stalled server is charged for the
//! requests it kept from being sent.
//!
//! ```text
//! bench_loadgen --url http://127.0.0.1:9100/api/etl/jobs --rate 10000 \
//!     --connections 32 --duration 8 [--warmup 2] [--header 'authorization: Bearer …']
//! ```
//!
//! Prints one JSON object: requests sent and completed in the measured window, errors,
//! non-2xx answers, the achieved rate and the latency percentiles in microseconds.
//! Runs on one thread (pin it with `taskset`); it spins for the last millisecond before
//! each send, because tokio's timer ticks in milliseconds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

struct Args {
    url: Uri,
    rate: f64,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn parse_args() -> Args {
    let mut url = None;
    let mut rate = 1000.0;
    let mut connections = 32;
    let mut duration = 8.0;
    let mut warmup = 2.0;
    let mut headers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(value().parse::<Uri>().expect("--url")),
            "--rate" => rate = value().parse().expect("--rate"),
            "--connections" => connections = value().parse().expect("--connections"),
            "--duration" => duration = value().parse().expect("--duration"),
            "--warmup" => warmup = value().parse().expect("--warmup"),
            "--header" => {
                let h = value();
                let (name, v) = h.split_once(':').expect("--header 'name: value'");
                headers.push((
                    name.trim().parse().expect("header name"),
                    v.trim().parse().expect("header value"),
                ));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    Args {
        url: url.expect("--url is required"),
        rate,
        connections,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        headers,
    }
}

#[derive(Default)]
struct Record {
    latencies_us: Vec<u32>,
    sent: u64,
    errors: u64,
    non_2xx: u64,
}

async fn connect(authority: &str) -> Option<http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Some(send)
}

/// Waits until `at`: sleeps while more than a millisecond is left, then yields.
async fn wait_until(at: Instant) {
    let now = Instant::now();
    if at > now + Duration::from_millis(2) {
        tokio::time::sleep_until((at - Duration::from_millis(1)).into()).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

async fn connection(index: usize, args: std::rc::Rc<Args>, start: Instant) -> Record {
    let authority = args.url.authority().expect("url authority").to_string();
    let path = args
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let offset = Duration::from_secs_f64(index as f64 / args.rate);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut record = Record::default();
    let mut send = connect(&authority).await;
    let mut k: u32 = 0;
    loop {
        let intended = start + offset + interval * k;
        k += 1;
        if intended >= end {
            break;
        }
        wait_until(intended).await;
        let measured = intended >= measure_from;
        if measured {
            record.sent += 1;
        }
        let mut ok = false;
        if let Some(sender) = send.as_mut() {
            let mut req = Request::get(&path)
                .header(http::header::HOST, &authority)
                .body(Empty::<Bytes>::new())
                .expect("request");
            for (name, value) in &args.headers {
                req.headers_mut().insert(name.clone(), value.clone());
            }
            if sender.ready().await.is_ok()
                && let Ok(resp) = sender.send_request(req).await
            {
                let status = resp.status();
                if resp.into_body().collect().await.is_ok() {
                    ok = true;
                    if measured && !status.is_success() {
                        record.non_2xx += 1;
                    }
                }
            }
        }
        if ok {
            if measured {
                let us = intended.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                record.latencies_us.push(us);
            }
        } else {
            if measured {
                record.errors += 1;
            }
            send = connect(&authority).await;
        }
    }
    record
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = std::rc::Rc::new(parse_args());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let records = local.block_on(&rt, async {
        let start = Instant::now() + Duration::from_millis(100);
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| tokio::task::spawn_local(connection(i, args.clone(), start)))
            .collect();
        let mut records = Vec::new();
        for t in tasks {
            records.push(t.await.expect("connection task"));
        }
        records
    });
    let mut all: Vec<u32> = Vec::new();
    let (mut sent, mut errors, mut non_2xx) = (0, 0, 0);
    for r in records {
        all.extend_from_slice(&r.latencies_us);
        sent += r.sent;
        errors += r.errors;
        non_2xx += r.non_2xx;
    }
    all.sort_unstable();
    let secs = args.duration.as_secs_f64();
    println!(
        "{{\"offered_rate\":{},\"connections\":{},\"sent\":{sent},\"completed\":{},\"errors\":{errors},\"non_2xx\":{non_2xx},\"achieved_rate\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        args.rate,
        args.connections,
        all.len(),
        all.len() as f64 / secs,
        percentile(&all, 50.0),
        percentile(&all, 90.0),
        percentile(&all, 99.0),
        percentile(&all, 99.9),
        all.last().copied().unwrap_or(0),
    );
}
