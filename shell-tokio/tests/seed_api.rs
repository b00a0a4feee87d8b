//! The seed (cluster-mode 0.3) API: its README example, and three nodes started with
//! `start_cluster` on 127.0.0.1-3 reaching one primary.
// Real sockets and processes: not under the madsim simulator.
#![cfg(not(madsim))]

mod common;

use async_trait::async_trait;
use cluster_mode::seed::{start_cluster, Cluster, ClusterConfig};
use rust_cloud_discovery::{DiscoveryClient, DiscoveryService, Port, ServiceInstance};
use std::collections::HashMap;
use std::error::Error;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

/// Stands in for `cloud_discovery_kubernetes::KubernetesDiscoverService`.
struct FakeK8s;

impl FakeK8s {
    async fn init(_service: String, _namespace: String) -> Result<Self, Box<dyn Error>> {
        Ok(FakeK8s)
    }
}

#[async_trait]
impl DiscoveryService for FakeK8s {
    async fn discover_instances(&self) -> Result<Vec<ServiceInstance>, Box<dyn Error>> {
        Ok((1..=3)
            .map(|i| {
                ServiceInstance::new(
                    Some(format!("pod-{i}")),
                    Some("demo".into()),
                    Some(format!("127.0.0.{i}")),
                    Some(vec![Port::new(
                        Some("http".into()),
                        8080,
                        "TCP".into(),
                        None,
                    )]),
                    false,
                    None,
                    HashMap::new(),
                    None,
                )
            })
            .collect())
    }
}

/// The 0.3 README's usage example with the imports changed and the third argument
/// its `start_cluster(cluster, client)` lacks: the 0.3 crate's function takes a
/// `ClusterConfig` too, so that call never compiled.
#[allow(dead_code)]
async fn seed_readme_example() {
    let result = FakeK8s::init("demo".to_string(), "default".to_string()).await;
    if let Ok(k8s) = result {
        let cluster = Arc::new(Cluster::default());
        let client = DiscoveryClient::new(k8s);
        let config = ClusterConfig::default();
        tokio::spawn(start_cluster(cluster, client, config));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_api_elects_a_primary() {
    common::init_tracing();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut clusters = Vec::new();
    for i in 1..=3u8 {
        let cluster = Arc::new(Cluster::default());
        assert!(!cluster.is_active().await);
        assert!(cluster.get_service_instance().await.is_none());
        let config = ClusterConfig {
            min_node: NonZeroUsize::new(3).unwrap(),
            update_interval: 200,
            listen_addr: format!("127.0.0.{i}:{port}").parse().unwrap(),
            ..ClusterConfig::default()
        };
        tokio::spawn(start_cluster(
            cluster.clone(),
            DiscoveryClient::new(FakeK8s),
            config,
        ));
        clusters.push(cluster);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut primaries = 0;
        let mut secondaries = 0;
        for c in &clusters {
            if c.is_primary().await {
                primaries += 1;
                let s = c.secondaries().await.unwrap();
                assert!(c.primaries().await.is_none());
                if s.len() != 2 {
                    primaries = 99;
                }
            } else if c.is_secondary().await {
                secondaries += 1;
                assert_eq!(c.primaries().await.map(|p| p.len()), Some(1));
            }
        }
        if primaries == 1 && secondaries == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no primary through the seed API"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &clusters {
        assert!(c.is_active().await);
        let si = c.get_service_instance().await.unwrap();
        let info = cluster_mode::seed::get_cluster_info(c.clone()).await;
        assert_eq!(info.instance.unwrap().instance_id(), si.instance_id());
        assert_eq!(Some(&info.node_id), si.instance_id().as_ref());
        assert_eq!(
            si.get_ports().as_ref().unwrap()[0].get_port(),
            u32::from(port)
        );
        c.handle().unwrap().shutdown().await;
    }
}
