//! Mounting the cluster service into an existing axum application: the node opens no
//! listener of its own; peers post to the application's port.
//!
//! ```text
//! cargo run -p cluster-mode --example axum_mount -- 127.0.0.1:7001 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//! ```
//! (start three, one per address), then `curl 127.0.0.1:7001/cluster/v1/status`, or
//! open `http://127.0.0.1:7001/cluster/v1/ui` in a browser. Ctrl-C (or SIGTERM) makes
//! a node leave gracefully before the server stops.
#![cfg_attr(madsim, allow(dead_code, unused_imports))]

use axum::routing::get;
use axum::Router;
use cluster_mode::server::{PATH_MESSAGE, PATH_METRICS, PATH_STATUS, PATH_UI};
use cluster_mode::{ClusterBuilder, Config, StaticDiscovery};
use std::num::NonZeroUsize;
use std::sync::Arc;

#[cfg(not(madsim))]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:7001".into());
    let peers = args.next().unwrap_or_else(|| listen.clone());
    let cluster = ClusterBuilder::new(Arc::new(StaticDiscovery::parse_list(&peers)?))
        .mounted()
        .advertise(listen.clone())
        .config(Config::default().with_min_nodes(if peers.contains(',') {
            NonZeroUsize::new(2).expect("2 > 0")
        } else {
            NonZeroUsize::MIN
        }))
        .start()
        .await?;

    let handle = cluster.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let c = handle.clone();
                async move { format!("role: {:?}\n", c.role()) }
            }),
        )
        // The whole cluster protocol and status endpoint: one line each.
        .route_service(PATH_MESSAGE, cluster.service())
        .route_service(PATH_STATUS, cluster.service())
        .route_service(PATH_METRICS, cluster.service())
        // The live status page (polls the status path beside it).
        .route_service(PATH_UI, cluster.service());

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("serving the app and the cluster on {listen}");
    // SIGTERM or Ctrl-C: the node leaves the cluster (handing over if primary), then
    // axum stops accepting and finishes the requests in flight.
    let leaver = cluster.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            leaver.leave_on_signal().await;
        })
        .await?;
    Ok(())
}

/// Real sockets and processes only: nothing to run under the madsim simulator.
#[cfg(madsim)]
fn main() {}
