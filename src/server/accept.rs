//! The first stage of a connection: accept it, or refuse it before any
//! session exists.
//!
//! Why it exists: what can be decided from the TCP peer alone (is it a
//! balancer we listen to, does this core have room) is decided once,
//! before a task is spawned. Limits per client come after the PROXY
//! header names the client, in [`admission`](super::admission). An
//! accepted connection is handed to [`connection::serve`] on its own
//! task; a panic in it costs only that connection.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{future, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};

use super::connection;
use super::shard::Shard;
use crate::config::ListenerKind;
use crate::metrics::Refusal;
use crate::smtp::reply;

/// Whether this core takes a new connection from `peer`: a peer
/// `--proxy-from` does not list is closed without a word (it is not an
/// SMTP client); a full core answers 421.
fn admit(shard: &Shard, peer: SocketAddr) -> Result<(), Refusal> {
    let settings = shard.settings();
    let allowed = &settings.config.proxy_from;
    if !allowed.is_empty() && !allowed.iter().any(|c| c.contains(peer.ip())) {
        return Err(Refusal::NotABalancer);
    }
    if shard.open() >= settings.config.max_connections {
        return Err(Refusal::CoreFull);
    }
    Ok(())
}

/// Accepts connections until shutdown.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, kind: ListenerKind) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown().wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: say so, back off briefly, go on.
                shard.repeated_error(format_args!("accept failed: {e}"));
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        match admit(&shard, peer) {
            Ok(()) => {
                shard.opened();
                glommio::spawn_local(serve_caught(shard.clone(), stream, peer, kind)).detach();
            }
            Err(why) => {
                shard.metrics().rejected.add(1);
                if why == Refusal::NotABalancer {
                    shard.refused(
                        why,
                        peer.ip(),
                        format_args!("{peer} is not in --proxy-from; closed"),
                    );
                } else {
                    shard.refused(
                        why,
                        peer.ip(),
                        format_args!("{peer}: --max-connections reached"),
                    );
                    glommio::spawn_local(refuse(shard.clone(), stream)).detach();
                }
            }
        }
    }
}

/// Serves an admitted connection; a bug must cost one connection, not
/// the core.
async fn serve_caught(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr, kind: ListenerKind) {
    let served = AssertUnwindSafe(connection::serve(shard.clone(), stream, peer, kind))
        .catch_unwind()
        .await;
    if served.is_err() {
        tracing::error!(
            core = shard.core(),
            "BUG: the session with {peer} panicked; connection dropped"
        );
    }
    shard.closed();
}

/// Over the connection limit: 421 and close.
async fn refuse(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut out = Vec::new();
    reply::TOO_MANY_CONNECTIONS.write(&mut out);
    shard.metrics().count_replies(&out);
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}
