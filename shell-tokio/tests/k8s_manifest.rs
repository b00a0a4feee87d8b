//! The Deployment of `deploy/kubernetes/deployment/` run as written, against the fake
//! Kubernetes API server: this test reads the manifests (Deployment, headless Service,
//! RBAC), starts one `cluster-node` process per replica with exactly the container's
//! args and env (the downward API and the Secret filled in as the kubelet would), and
//! plays the two controllers the discovery depends on:
//!
//! - the kubelet's readiness probe: the manifest's `httpGet` path and port, polled on
//!   each pod;
//! - the EndpointSlice controller: one slice for the Service, labelled
//!   `kubernetes.io/service-name=<its name>`, in its namespace, listing the pods its
//!   selector matches, each `ready` when the pod is ready or the Service has
//!   `publishNotReadyAddresses` (as Kubernetes does), `terminating` once deleted.
//!
//! The three processes must agree on a primary and all become Ready; then the primary
//! pod is deleted (SIGTERM, its graceful leave) and must exit well within the
//! manifest's `terminationGracePeriodSeconds` while the other two agree on a new
//! primary. So a change to the manifests that breaks discovery fails here: a wrong
//! Service name or namespace (the fake answers 400), a selector that misses the pods,
//! a Service without `publishNotReadyAddresses` (the readiness probe needs the peers,
//! the peers need the endpoints: nothing ever forms), an `--advertise` that is not the
//! pod IP and port, a readiness path the binary does not serve, a Role without the verbs
//! the discovery used.
//!
//! What it cannot emulate: the processes share one host, so each "pod" listens on its
//! pod IP (127.0.0.1..) instead of `0.0.0.0`, and the cluster port (7946 in the
//! manifest) is replaced by one free port everywhere it appears. Probe periods are
//! compressed (200 ms instead of seconds).
#![cfg(all(feature = "kubernetes", not(madsim)))]

mod common;
#[path = "../../discovery-adapters/tests/support/fake_k8s.rs"]
mod fake_k8s;
#[path = "common/procs.rs"]
mod procs;
#[path = "common/scrape.rs"]
mod scrape;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_k8s::FakeApi;
use serde_json::{json, Value};

const DEPLOYMENT: &str = include_str!("../../deploy/kubernetes/deployment/deployment.yaml");
const SERVICE: &str = include_str!("../../deploy/kubernetes/deployment/service.yaml");
const RBAC: &str = include_str!("../../deploy/kubernetes/base/rbac.yaml");

/// The value the test's Secret holds (the manifest names a Secret the test cannot read).
const TEST_SECRET: &str = "k8s-manifest-test-secret";
/// How often the emulated kubelet probes and the emulated controller publishes.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Cold start to an agreed primary with every pod Ready (about 1-2 s when idle).
const FORM_BOUND: Duration = Duration::from_secs(20);

/// The one document of `kind` in a multi-document YAML text.
fn doc(text: &str, kind: &str) -> Value {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).expect("the manifest is YAML");
    let mut found: Vec<Value> = docs.into_iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind} expected");
    found.remove(0)
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// What the test takes from the manifests.
struct Manifest {
    namespace: String,
    replicas: usize,
    pod_labels: BTreeMap<String, String>,
    container: Value,
    grace: Duration,
    service_name: String,
    service_namespace: String,
    selector: BTreeMap<String, String>,
    publish_not_ready: bool,
    service_ports: Vec<Value>,
    /// (apiGroup, resource, verb) granted by the Role.
    granted: Vec<(String, String, String)>,
}

impl Manifest {
    fn read() -> Self {
        let d = doc(DEPLOYMENT, "Deployment");
        let s = doc(SERVICE, "Service");
        let role = doc(RBAC, "Role");
        let pod = &d["spec"]["template"];
        let containers = pod["spec"]["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "one container: cluster-node");
        let mut granted = Vec::new();
        for rule in role["rules"].as_array().into_iter().flatten() {
            for g in rule["apiGroups"].as_array().into_iter().flatten() {
                for r in rule["resources"].as_array().into_iter().flatten() {
                    for v in rule["verbs"].as_array().into_iter().flatten() {
                        granted.push((
                            g.as_str().unwrap_or_default().to_string(),
                            r.as_str().unwrap_or_default().to_string(),
                            v.as_str().unwrap_or_default().to_string(),
                        ));
                    }
                }
            }
        }
        Manifest {
            namespace: d["metadata"]["namespace"]
                .as_str()
                .expect("namespace")
                .into(),
            replicas: d["spec"]["replicas"].as_u64().expect("replicas") as usize,
            pod_labels: str_map(&pod["metadata"]["labels"]),
            container: containers[0].clone(),
            grace: Duration::from_secs(
                pod["spec"]["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30),
            ),
            service_name: s["metadata"]["name"].as_str().expect("name").into(),
            service_namespace: s["metadata"]["namespace"].as_str().expect("ns").into(),
            selector: str_map(&s["spec"]["selector"]),
            publish_not_ready: s["spec"]["publishNotReadyAddresses"] == true,
            service_ports: s["spec"]["ports"].as_array().cloned().unwrap_or_default(),
            granted,
        }
    }

    /// A container port by name or number, as a probe or a Service targetPort names it.
    fn container_port(&self, port: &Value) -> u16 {
        if let Some(n) = port.as_u64() {
            return n as u16;
        }
        let name = port.as_str().expect("a port name or number");
        self.container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}")) as u16
    }

    /// The cluster port: the container port named `cluster`.
    fn cluster_port(&self) -> u16 {
        self.container_port(&json!("cluster"))
    }

    /// The container's env for the pod `name` at `ip`, as the kubelet fills it in.
    fn env(&self, name: &str, ip: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in self.container["env"].as_array().into_iter().flatten() {
            let key = e["name"].as_str().expect("env name").to_string();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "status.podIP" => ip.to_string(),
                    "metadata.name" => name.to_string(),
                    "metadata.namespace" => self.namespace.clone(),
                    other => panic!("env {key}: the test does not emulate fieldPath {other}"),
                }
            } else if e["valueFrom"]["secretKeyRef"].is_object() {
                TEST_SECRET.to_string()
            } else {
                panic!("env {key}: a source the test does not emulate: {e}")
            };
            out.push((key, value));
        }
        out
    }

    /// The container's args for the pod, `$(VAR)` expanded from its env as the kubelet
    /// does, then moved onto this host: `0.0.0.0:` becomes the pod IP, the cluster
    /// port becomes `port`.
    fn args(&self, env: &[(String, String)], ip: &str, port: u16) -> Vec<String> {
        assert!(
            self.container["command"].is_null(),
            "the image's entrypoint (cluster-node) runs the args; a `command` is not emulated"
        );
        let cluster = format!(":{}", self.cluster_port());
        self.container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| {
                let mut a = a.as_str().expect("string args").to_string();
                for (k, v) in env {
                    a = a.replace(&format!("$({k})"), v);
                }
                if let Some(head) = a.strip_suffix(&cluster) {
                    a = format!("{head}:{port}");
                }
                a.replace("0.0.0.0:", &format!("{ip}:"))
            })
            .collect()
    }
}

/// One "pod": its name, IP and process.
struct Pod {
    name: String,
    ip: String,
    child: Child,
}

struct Pods {
    dir: tempfile::TempDir,
    pods: Vec<Pod>,
}

impl Pods {
    fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.pods {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", p.name)))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(12).collect();
            out.push_str(&format!("--- {} {} (last lines)\n", p.name, p.ip));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for p in &mut self.pods {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// The kubelet's httpGet probe: a 2xx or 3xx answer within the timeout.
async fn probe(addr: SocketAddr, path: &str) -> bool {
    scrape::get(addr, path, Duration::from_secs(1))
        .await
        .is_some_and(|(code, _, _)| (200..400).contains(&code))
}

/// The Service's EndpointSlice as Kubernetes would write it for these pods.
fn slice(m: &Manifest, pods: &[(String, String, bool, bool)], port: u16) -> Value {
    let selected = m
        .selector
        .iter()
        .all(|(k, v)| m.pod_labels.get(k) == Some(v))
        && !m.selector.is_empty();
    let endpoints: Vec<Value> = pods
        .iter()
        .filter(|_| selected)
        .map(|(name, ip, ready, terminating)| {
            json!({"addresses":[ip],
                   "conditions":{"ready": (*ready && !terminating) || m.publish_not_ready,
                                 "serving": ready, "terminating": terminating},
                   "targetRef":{"kind":"Pod","name":name,"namespace":m.namespace,"uid":format!("uid-{name}")},
                   "nodeName":"node-1"})
        })
        .collect();
    let ports: Vec<Value> = m
        .service_ports
        .iter()
        .map(|p| {
            let target = m.container_port(&p["targetPort"]);
            // The whole test runs on one free port in place of the cluster port.
            let number = if target == m.cluster_port() {
                port
            } else {
                target
            };
            json!({"name": p["name"], "port": number, "protocol": "TCP"})
        })
        .collect();
    json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
           "metadata":{"name":format!("{}-abcde", m.service_name),"namespace":m.service_namespace,
                       "labels":{"kubernetes.io/service-name":m.service_name}},
           "addressType":"IPv4","ports":ports,"endpoints":endpoints})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_manifest_forms_a_cluster_through_endpointslices() {
    common::init_tracing();
    let m = Manifest::read();
    assert!(
        (1..=5).contains(&m.replicas),
        "replicas {} (the test gives each a loopback IP; voters are at most 5)",
        m.replicas
    );
    let api = FakeApi::start_serving(&m.service_namespace, &m.service_name).await;
    let ips: Vec<String> = (1..=m.replicas).map(|i| format!("127.0.0.{i}")).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let (port, ls) = common::listeners_same_port(&ip_refs).await;
    drop(ls);

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
         current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
        api.addr
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    let mut pods = Pods {
        dir,
        pods: Vec::new(),
    };
    let started = tokio::time::Instant::now();
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("cluster-node-7d9f8-{i}");
        let env = m.env(&name, ip);
        let args = m.args(&env, ip, port);
        let log = std::fs::File::create(pods.dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cluster-node"))
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", pods.dir.path().join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cluster-node");
        if i == 0 {
            println!("k8s manifest: pod {name}: cluster-node {}", args.join(" "));
        }
        pods.pods.push(Pod {
            name,
            ip: ip.clone(),
            child,
        });
    }

    // The kubelet and the EndpointSlice controller, until the test ends.
    let ready_path = m.container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .expect("an httpGet readiness probe")
        .to_string();
    let ready_port = m.container_port(&m.container["readinessProbe"]["httpGet"]["port"]);
    assert_eq!(
        ready_port,
        m.cluster_port(),
        "the probe is served on the cluster port"
    );
    let live_path = m.container["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .expect("an httpGet liveness probe")
        .to_string();
    let deleted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ready_now = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<String, bool>::new()));
    let controller = {
        let (api, deleted, ready_now) = (api.clone(), deleted.clone(), ready_now.clone());
        let members: Vec<(String, String)> = pods
            .pods
            .iter()
            .map(|p| (p.name.clone(), p.ip.clone()))
            .collect();
        let m = Manifest::read();
        let path = ready_path.clone();
        tokio::spawn(async move {
            let mut last = Value::Null;
            loop {
                let mut state = Vec::new();
                for (name, ip) in &members {
                    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
                    let ready = probe(addr, &path).await;
                    ready_now.lock().unwrap().insert(name.clone(), ready);
                    let terminating = deleted.lock().unwrap().contains(name);
                    state.push((name.clone(), ip.clone(), ready, terminating));
                }
                let s = slice(&m, &state, port);
                if s["endpoints"] != last["endpoints"] {
                    api.apply(s.clone());
                    last = s;
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
        })
    };

    let addrs: Vec<SocketAddr> = ips
        .iter()
        .map(|ip| format!("{ip}:{port}").parse().unwrap())
        .collect();
    let Some(primary) = procs::wait_agreed(&addrs, FORM_BOUND).await else {
        controller.abort();
        panic!(
            "the Deployment's pods never agreed on a primary within {FORM_BOUND:?} \
             (publishNotReadyAddresses: {}; fake API bad requests: {:?})\n{}",
            m.publish_not_ready,
            api.lock().bad_requests.iter().take(2).collect::<Vec<_>>(),
            pods.logs()
        );
    };
    let agreed = started.elapsed();
    // Every pod Ready by the manifest's probe, and alive by its liveness probe.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ready_now.lock().unwrap().values().filter(|r| **r).count() < m.replicas {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every pod became Ready: {:?}\n{}",
            ready_now.lock().unwrap(),
            pods.logs()
        );
        tokio::time::sleep(PROBE_EVERY).await;
    }
    for a in &addrs {
        assert!(probe(*a, &live_path).await, "liveness probe failed on {a}");
    }
    println!(
        "k8s manifest: {} pods agreed on primary {} after {agreed:?}, all Ready after {:?}",
        m.replicas,
        addrs[primary],
        started.elapsed()
    );

    // Delete the primary's pod: Kubernetes marks its endpoint terminating and sends
    // SIGTERM; the graceful leave must end within terminationGracePeriodSeconds.
    let leaving = primary;
    deleted
        .lock()
        .unwrap()
        .push(pods.pods[leaving].name.clone());
    let pid = pods.pods[leaving].child.id().to_string();
    let sent = tokio::time::Instant::now();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let exited = loop {
        if let Ok(Some(status)) = pods.pods[leaving].child.try_wait() {
            break status;
        }
        assert!(
            sent.elapsed() < m.grace,
            "the primary pod did not exit within terminationGracePeriodSeconds ({:?})\n{}",
            m.grace,
            pods.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let leave_took = sent.elapsed();
    assert!(exited.success(), "the leaving node exited with {exited}");
    assert!(
        leave_took < m.grace / 2,
        "the graceful leave took {leave_took:?}, over half of terminationGracePeriodSeconds ({:?})",
        m.grace
    );
    let rest: Vec<SocketAddr> = (0..addrs.len())
        .filter(|i| *i != leaving)
        .map(|i| addrs[i])
        .collect();
    let Some(next) = procs::wait_agreed(&rest, Duration::from_secs(10)).await else {
        panic!(
            "no new primary after the primary's pod left\n{}",
            pods.logs()
        );
    };
    println!(
        "k8s manifest: the primary's pod left gracefully in {leave_took:?} \
         (terminationGracePeriodSeconds {:?}); new primary {}",
        m.grace, rest[next]
    );
    let left = pods.pods[leaving].ip.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut views = Vec::new();
        for a in &rest {
            views.push(procs::status_json(*a, Duration::from_secs(1)).await);
        }
        let gone = views.iter().all(|v| {
            v.as_ref().is_some_and(|v| {
                let members = v["members"].as_array().cloned().unwrap_or_default();
                members.len() == m.replicas - 1
                    && members
                        .iter()
                        .all(|mm| !mm["addr"].as_str().unwrap_or("").starts_with(&left))
            })
        });
        if gone {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the left pod is still a member: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    controller.abort();

    // The API requests the discovery made are exactly what the Role grants.
    let st = api.lock();
    assert!(
        st.bad_requests.is_empty(),
        "requests the fake API does not serve: {:?}",
        st.bad_requests
    );
    assert!(
        st.pod_selectors.is_empty(),
        "pods were read: {:?}",
        st.pod_selectors
    );
    let allowed = |verb: &str| {
        m.granted
            .iter()
            .any(|(g, r, v)| g == "discovery.k8s.io" && r == "endpointslices" && v == verb)
    };
    assert!(
        st.list_requests > 0 && allowed("list"),
        "list of endpointslices"
    );
    assert!(
        !st.watch_requests.is_empty() && allowed("watch"),
        "watch of endpointslices"
    );
}
