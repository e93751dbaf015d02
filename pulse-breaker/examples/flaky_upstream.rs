//! Run with: cargo run -p pulse-breaker --example flaky_upstream
//!
//! A client with a circuit breaker around a flaky upstream, on loopback. The upstream
//! (a TCP server answering `ping` with `pong`) works, then goes down (it hangs up on
//! every connection), then recovers. The breaker trips after three failures in a row,
//! rejects calls at once while open (the upstream is not called), lets one probe through
//! after the open period, and closes when it succeeds. Each state change is printed by
//! an `Observer`; the example exits when the circuit has closed again.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use pulse_breaker::{
    Backoff, Breaker, BreakerConfig, BreakerOpen, CircuitBreakerLayer, Observer, State,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceBuilder, ServiceExt, service_fn};

type BoxError = Box<dyn Error + Send + Sync>;

/// Prints every transition of the circuit.
struct PrintTransitions;

impl Observer for PrintTransitions {
    fn on_transition(&self, from: State, to: State) {
        println!("  breaker: {from:?} → {to:?}");
    }
}

/// The client's call: one connection, `ping`, expect `pong`.
async fn ping(addr: std::net::SocketAddr) -> Result<String, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(b"ping\n").await?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await?;
    match line.trim_end() {
        "pong" => Ok("pong".to_owned()),
        "" => Err("the upstream hung up".into()),
        other => Err(format!("unexpected answer {other:?}").into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // The flaky upstream: healthy unless `down` is set; counts the connections it sees.
    let down = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU32::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let upstream = tokio::spawn({
        let (down, seen) = (down.clone(), seen.clone());
        async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                if down.load(Ordering::SeqCst) {
                    continue; // dropped: the client reads EOF
                }
                tokio::spawn(async move {
                    let (read, mut write) = stream.split();
                    let mut line = String::new();
                    if BufReader::new(read).read_line(&mut line).await.is_ok() {
                        let _ = write.write_all(b"pong\n").await;
                    }
                });
            }
        }
    });

    let open_for = Duration::from_millis(300);
    let breaker = Breaker::new(
        BreakerConfig::default()
            .with_consecutive_failures(Some(3))
            .with_backoff(Backoff::constant(open_for))
            .with_half_open_probes(1)
            .with_observer(PrintTransitions),
    )?;
    let client = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone())) // every `Err` counts as a failure
        .service(service_fn(move |()| ping(addr)));

    let call = |label: &'static str| {
        let client = client.clone();
        async move {
            match client.oneshot(()).await {
                Ok(answer) => println!("{label}: {answer}"),
                Err(err) if err.is::<BreakerOpen>() => println!("{label}: rejected, {err}"),
                Err(err) => println!("{label}: failed, {err}"),
            }
        }
    };

    println!("upstream healthy");
    call("call 1").await;
    call("call 2").await;

    println!("upstream goes down");
    down.store(true, Ordering::SeqCst);
    for label in ["call 3", "call 4", "call 5"] {
        call(label).await;
    }
    let before = seen.load(Ordering::SeqCst);
    call("call 6").await;
    call("call 7").await;
    let rejected_without_calling = seen.load(Ordering::SeqCst) == before;
    println!("the upstream saw no call while the circuit was open: {rejected_without_calling}");

    println!("upstream recovers; waiting out the open period ({open_for:?})");
    down.store(false, Ordering::SeqCst);
    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    call("call 8 (probe)").await;
    call("call 9").await;

    upstream.abort();
    let state = breaker.state();
    println!("final state: {state:?}");
    if state != State::Closed || !rejected_without_calling {
        return Err("the breaker did not trip and heal as expected".into());
    }
    Ok(())
}
