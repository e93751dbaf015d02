//! Upgrade forwarding: once the upstream has answered 101, the client's and the
//! upstream's upgraded connections are spliced together.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Splice the two upgraded connections in a background task. The client's side
/// completes only after the proxy's 101 has been written, so the task waits for both.
pub(crate) fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection closed with an error");
        }
    });
}
