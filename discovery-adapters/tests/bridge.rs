//! The rust-cloud-discovery bridge, both ways.

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cluster_mode_discovery::{
    AsDiscoveryService, CloudDiscoveryBridge, CloudPortSelector, Discovery, DiscoveryError,
    StaticDiscovery,
};
use rust_cloud_discovery::{DiscoveryClient, DiscoveryService, Port, ServiceInstance};

/// A user's existing DiscoveryService (think `cloud-discovery-kubernetes`).
struct UserService {
    instances: Vec<ServiceInstance>,
    fail: AtomicBool,
}

#[async_trait]
impl DiscoveryService for UserService {
    async fn discover_instances(&self) -> Result<Vec<ServiceInstance>, Box<dyn Error>> {
        tokio::task::yield_now().await;
        if self.fail.load(Ordering::Relaxed) {
            return Err("endpoints API unavailable".into());
        }
        Ok(self.instances.clone())
    }
}

fn instance(id: Option<&str>, host: Option<&str>, ports: &[(&str, u32)]) -> ServiceInstance {
    let mut metadata = HashMap::new();
    metadata.insert("zone".to_string(), "a".to_string());
    ServiceInstance::new(
        id.map(str::to_string),
        Some("web".to_string()),
        host.map(str::to_string),
        Some(
            ports
                .iter()
                .map(|(name, port)| Port::new(Some(name.to_string()), *port, "TCP".into(), None))
                .collect(),
        ),
        false,
        None,
        metadata,
        None,
    )
}

fn service() -> UserService {
    UserService {
        instances: vec![
            instance(
                Some("web-2"),
                Some("10.0.0.2"),
                &[("http", 80), ("cluster", 7000)],
            ),
            instance(
                Some("web-1"),
                Some("10.0.0.1"),
                &[("http", 80), ("cluster", 7000)],
            ),
            // Skipped: no id, a host name, no host, a port out of range, no cluster port.
            instance(None, Some("10.0.0.3"), &[("cluster", 7000)]),
            instance(Some("web-4"), Some("web-4.internal"), &[("cluster", 7000)]),
            instance(Some("web-5"), None, &[("cluster", 7000)]),
            instance(Some("web-6"), Some("10.0.0.6"), &[("cluster", 70000)]),
            instance(Some("web-7"), Some("10.0.0.7"), &[("http", 80)]),
        ],
        fail: AtomicBool::new(false),
    }
}

#[tokio::test]
async fn bridge_converts_skips_and_surfaces_errors() {
    let bridge =
        CloudDiscoveryBridge::new(service()).with_port(CloudPortSelector::Named("cluster".into()));
    // Object safe, and Send across a spawn despite the service's non-Send error type.
    let shared: Arc<dyn Discovery> = Arc::new(bridge);
    let d = shared.clone();
    let snap = tokio::spawn(async move { d.snapshot().await })
        .await
        .unwrap()
        .unwrap();
    let got: Vec<(String, Option<String>)> = snap
        .iter()
        .map(|i| (i.addr.to_string(), i.name.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("10.0.0.1:7000".to_string(), Some("web-1".to_string())),
            ("10.0.0.2:7000".to_string(), Some("web-2".to_string())),
        ]
    );
    assert_eq!(snap[0].metadata.get("zone").map(String::as_str), Some("a"));
    assert_eq!(
        snap[0].metadata.get("cloud.service_id").map(String::as_str),
        Some("web")
    );

    // First port instead: web-7 (only http) is now listed, on port 80.
    let first = CloudDiscoveryBridge::new(service());
    let snap = first.snapshot().await.unwrap();
    assert!(snap.iter().any(|i| i.addr.to_string() == "10.0.0.7:80"));
    assert!(
        !snap.iter().any(|i| i.addr.ip().to_string() == "10.0.0.3"),
        "no id: skipped"
    );
}

#[tokio::test]
async fn bridge_failure_is_an_error_not_an_empty_list() {
    let svc = service();
    svc.fail.store(true, Ordering::Relaxed);
    let bridge = CloudDiscoveryBridge::new(svc);
    let d: Arc<dyn Discovery> = Arc::new(bridge);
    let result = tokio::spawn(async move { d.snapshot().await })
        .await
        .unwrap();
    match result {
        Err(DiscoveryError::Backend(message)) => {
            assert!(message.contains("endpoints API unavailable"))
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn only_instances_without_ids_gives_an_empty_success() {
    // The service answered: nothing usable. That is an empty snapshot (logged), not an error.
    let svc = UserService {
        instances: vec![instance(None, Some("10.0.0.3"), &[("cluster", 7000)])],
        fail: AtomicBool::new(false),
    };
    let snap = CloudDiscoveryBridge::new(svc).snapshot().await.unwrap();
    assert!(snap.is_empty());
}

#[tokio::test]
async fn our_sources_as_a_discovery_service() {
    let ours = StaticDiscovery::parse(["10.0.0.1:7000", "10.0.0.2:7001"]).unwrap();
    let client = DiscoveryClient::new(AsDiscoveryService::new(ours).with_service_id("web"));
    let listed = client.get_instances().await.unwrap();
    let got: Vec<(Option<String>, Option<String>, u32)> = listed
        .iter()
        .map(|si| {
            (
                si.instance_id().clone(),
                si.host().clone(),
                si.get_ports().as_ref().unwrap()[0].get_port(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("10.0.0.1:7000".into()), Some("10.0.0.1".into()), 7000),
            (Some("10.0.0.2:7001".into()), Some("10.0.0.2".into()), 7001),
        ]
    );
    assert_eq!(listed[0].service_id().as_deref(), Some("web"));

    // Round trip: ours -> DiscoveryService -> bridge -> ours.
    let back = CloudDiscoveryBridge::new(AsDiscoveryService::new(
        StaticDiscovery::parse(["10.0.0.1:7000"]).unwrap(),
    ));
    let snap = back.snapshot().await.unwrap();
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].addr.to_string(), "10.0.0.1:7000");
}

/// A source that always fails, seen through the DiscoveryService interface.
struct Broken;
impl Discovery for Broken {
    fn snapshot(
        &self,
    ) -> cluster_mode_discovery::BoxFuture<'_, cluster_mode_discovery::DiscoveryResult> {
        Box::pin(async {
            Err(DiscoveryError::Timeout {
                target: "test".into(),
            })
        })
    }
}

#[tokio::test]
async fn our_errors_reach_discovery_service_users() {
    let err = AsDiscoveryService::new(Broken)
        .discover_instances()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    let typed = err
        .downcast_ref::<DiscoveryError>()
        .expect("the typed error is kept");
    assert!(matches!(typed, DiscoveryError::Timeout { .. }));
}
