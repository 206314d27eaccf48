//! The deployment artefacts of `deploy/`, checked with real tools and the real
//! binary, since no container engine or cluster runs here:
//!
//! - Kubernetes: every manifest of `deploy/kubernetes/base` validated strictly against
//!   the Kubernetes OpenAPI schema (`kubernetes-validate`, PyPI, pinned, installed into
//!   `.tools/kv-venv` on first use); the ServiceMonitor and PrometheusRule (CRDs the
//!   validator does not know) against their subset schemas in `deploy/schemas/` with
//!   `check-jsonschema`; the PrometheusRule equal to `deploy/prometheus/alerts.yml`;
//!   the production overlay rendered by `kubectl kustomize` (when kubectl is installed)
//!   with freshly generated keys and the rendered stream validated again; the kustomize
//!   file lists checked against the directory; the config in the ConfigMap passed
//!   through `idfabric check --offline --production`.
//! - Compose: validated against the compose-spec schema (vendored in check-jsonschema),
//!   every mounted file present, its routes.yaml accepted by `idfabric check --offline`.
//! - Dockerfile: multi-stage, non-root, copies only files that exist.
//! - Prometheus and Grafana: a real gateway is started and given traffic (allowed,
//!   refused, invalid token, no route, upstream failure, a browser sign-in), its
//!   `/metrics` scraped, and every metric, label name and literal label value named in
//!   the dashboard's and the alert rules' PromQL must be one the binary exports. The
//!   PromQL itself is parsed by `promtool` (Debian package `prometheus`) when it is
//!   installed, which also runs the alert unit tests `deploy/prometheus/alerts.test.yml`.

use crate::common;
use common::agent::Agent;
use common::redis::RedisServer;
use common::*;

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

/// The Kubernetes version the manifests are validated for (preStop `sleep` needs 1.30+).
const K8S_VERSION: &str = "1.32.0";
/// Pinned validator versions (PyPI).
const PIP_PINS: &[&str] = &["kubernetes-validate==1.37.0", "check-jsonschema==0.39.0"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// One YAML document as JSON values (YAML keys here are all strings).
fn yaml(p: &Path) -> Value {
    serde_norway::from_str(&read(p)).unwrap_or_else(|e| panic!("{} is not YAML: {e}", p.display()))
}

/// Every document of a multi-document YAML stream.
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Runs a command, returns (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

// --- The validators, from PyPI into .tools/kv-venv ------------------------------------

struct Tools {
    kubernetes_validate: PathBuf,
    check_jsonschema: PathBuf,
}

static TOOLS: LazyLock<Tools> = LazyLock::new(install_tools);

/// Creates `.tools/kv-venv` and installs the pinned validators, unless a previous run did
/// (a stamp file records the pins, so a changed pin reinstalls).
fn install_tools() -> Tools {
    let venv = repo().join(".tools/kv-venv");
    let bin = venv.join("bin");
    let tools =
        Tools { kubernetes_validate: bin.join("kubernetes-validate"), check_jsonschema: bin.join("check-jsonschema") };
    let stamp = venv.join("idfabric-pins.txt");
    let want = PIP_PINS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)
        && tools.kubernetes_validate.is_file()
        && tools.check_jsonschema.is_file()
    {
        return tools;
    }
    if !bin.join("pip").is_file() {
        let (code, _, err) = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        assert_eq!(code, 0, "python3 -m venv {} failed: {err}", venv.display());
    }
    let (code, out, err) =
        run(Command::new(bin.join("pip")).args(["install", "--quiet", "--disable-pip-version-check"]).args(PIP_PINS));
    assert_eq!(code, 0, "pip install {PIP_PINS:?} failed (PyPI must be reachable):\n{out}{err}");
    std::fs::write(&stamp, want).unwrap();
    tools
}

/// `kubernetes-validate --strict` on files; returns (code, combined output).
fn kubernetes_validate(files: &[PathBuf]) -> (i32, String) {
    let (code, out, err) = run(Command::new(&TOOLS.kubernetes_validate)
        .args(["--strict", "--kubernetes-version", K8S_VERSION])
        .args(files));
    (code, format!("{out}{err}"))
}

/// The Prometheus Operator's kinds, which kubernetes-validate does not know, and the
/// subset schemas in `deploy/schemas/` they are validated against instead.
const CRD_SCHEMAS: &[(&str, &str)] = &[
    ("ServiceMonitor", "schemas/servicemonitor-v1.schema.json"),
    ("PrometheusRule", "schemas/prometheusrule-v1.schema.json"),
];

/// Validates a stream of manifests strictly: built-in kinds with kubernetes-validate,
/// the operator's kinds with their CRD subset schemas. Panics with every error.
fn validate_manifests(label: &str, docs: &[Value], dir: &Path) {
    let mut builtin = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{label}: document {i} has no kind"));
        let file = dir.join(format!("{i:02}-{}.json", kind.to_lowercase()));
        std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        if let Some((_, schema)) = CRD_SCHEMAS.iter().find(|(k, _)| *k == kind) {
            let (code, out, err) =
                run(Command::new(&TOOLS.check_jsonschema).arg("--schemafile").arg(deploy(schema)).arg(&file));
            assert_eq!(code, 0, "{label}: {kind} fails {schema}:\n{out}{err}");
        } else {
            builtin.push(file);
        }
    }
    assert!(!builtin.is_empty(), "{label}: no manifests");
    let (code, out) = kubernetes_validate(&builtin);
    let problems: Vec<&str> = out.lines().filter(|l| l.starts_with("ERROR") || l.starts_with("WARN")).collect();
    assert!(
        code == 0 && problems.is_empty(),
        "{label}: kubernetes-validate --strict (Kubernetes {K8S_VERSION}) failed:\n{out}"
    );
    let passed = out.lines().filter(|l| l.contains(" passed for resource ")).count();
    assert_eq!(passed, builtin.len(), "{label}: every manifest must be validated, not skipped:\n{out}");
}

// --- Kubernetes ---------------------------------------------------------------------

fn base() -> PathBuf {
    deploy("kubernetes/base")
}

fn kustomization(dir: &Path) -> Value {
    yaml(&dir.join("kustomization.yaml"))
}

/// Every file a kustomization names (resources and generator inputs), relative to `dir`.
fn kustomize_inputs(k: &Value) -> (Vec<String>, Vec<String>) {
    let resources = strs(&k["resources"]);
    let mut generated = Vec::new();
    for g in ["configMapGenerator", "secretGenerator"] {
        for entry in k[g].as_array().into_iter().flatten() {
            for f in strs(&entry["files"]).into_iter().chain(strs(&entry["envs"])) {
                generated.push(f.rsplit_once('=').map(|(_, p)| p.to_string()).unwrap_or(f));
            }
        }
    }
    (resources, generated)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn kustomize_base_lists_every_manifest_and_every_input_exists() {
    let dir = base();
    let (resources, generated) = kustomize_inputs(&kustomization(&dir));
    for f in resources.iter().chain(&generated) {
        assert!(dir.join(f).is_file(), "kustomization.yaml names {f}, which does not exist");
    }
    // Nothing in the directory is forgotten: a manifest not listed would never be applied.
    for p in files_under(&dir) {
        let rel = p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
        if rel == "kustomization.yaml" {
            continue;
        }
        assert!(
            resources.contains(&rel) || generated.contains(&rel),
            "{rel} is in deploy/kubernetes/base but not listed in its kustomization.yaml"
        );
    }
    // The production overlay builds on the base and generates both Secrets.
    let overlay = kustomization(&deploy("kubernetes/overlays/production"));
    assert_eq!(strs(&overlay["resources"]), vec!["../../base"]);
    assert_eq!(
        overlay["namespace"],
        kustomization(&dir)["namespace"],
        "generated Secrets must share the base namespace"
    );
    let secrets: Vec<&str> =
        overlay["secretGenerator"].as_array().unwrap().iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(secrets, ["idfabric-keys", "idfabric-provider-secrets"]);
}

#[test]
fn every_kubernetes_manifest_passes_strict_schema_validation() {
    let dir = base();
    let (resources, _) = kustomize_inputs(&kustomization(&dir));
    let mut docs = Vec::new();
    for f in &resources {
        let found = yaml_docs(&read(&dir.join(f)));
        assert!(!found.is_empty(), "{f} holds no manifest");
        docs.extend(found);
    }
    let tmp = tempfile::tempdir().unwrap();
    validate_manifests("deploy/kubernetes/base", &docs, tmp.path());
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for want in [
        "Namespace",
        "ServiceAccount",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(want), "no {want} among the manifests: {kinds:?}");
    }
}

#[test]
fn the_validators_really_are_strict() {
    // Negative controls: an unknown field and a wrong type must fail, or the passes above prove nothing.
    let tmp = tempfile::tempdir().unwrap();
    let mut svc: Value = yaml(&base().join("service.yaml"));
    svc["spec"]["bogusField"] = Value::from(1);
    let f = tmp.path().join("bad-service.json");
    std::fs::write(&f, svc.to_string()).unwrap();
    let (code, out) = kubernetes_validate(&[f]);
    assert!(code != 0 && out.contains("bogusField"), "an unknown field must fail kubernetes-validate --strict:\n{out}");

    let mut sm: Value = yaml(&base().join("servicemonitor.yaml"));
    sm["spec"]["endpoints"][0]["interval"] = Value::from("15 seconds");
    let f = tmp.path().join("bad-sm.json");
    std::fs::write(&f, sm.to_string()).unwrap();
    let (code, out, err) = run(Command::new(&TOOLS.check_jsonschema)
        .arg("--schemafile")
        .arg(deploy("schemas/servicemonitor-v1.schema.json"))
        .arg(&f));
    assert!(code != 0, "a malformed ServiceMonitor interval must fail its schema:\n{out}{err}");
}

/// Writes what `docs/deployment.md` tells operators to put in `overlays/production/secrets/`.
fn fill_production_secrets(overlay: &Path) {
    let secrets = overlay.join("secrets");
    let (code, out, err) = run(Command::new(BIN).args(["keys", "generate", "--dir"]).arg(&secrets));
    assert_eq!(code, 0, "keys generate: {out}{err}");
    std::fs::rename(secrets.join("dev-tls.crt"), secrets.join("tls.crt")).unwrap();
    std::fs::rename(secrets.join("dev-tls.key"), secrets.join("tls.key")).unwrap();
    std::fs::write(
        secrets.join("provider-secrets.env"),
        "ENTRA_CLIENT_SECRET=entra-secret\nAUTH0_CLIENT_SECRET=auth0-secret\n",
    )
    .unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    for p in files_under(from) {
        let dest = to.join(p.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&p, &dest).unwrap();
    }
}

#[test]
fn the_production_overlay_renders_and_validates() {
    let Some(kubectl) = on_path("kubectl") else {
        eprintln!(
            "kubectl is not installed: the overlay is not rendered (every base manifest is still validated one by one)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&deploy("kubernetes"), &tmp.path().join("kubernetes"));
    let overlay = tmp.path().join("kubernetes/overlays/production");
    let _ = std::fs::remove_dir_all(overlay.join("secrets"));
    fill_production_secrets(&overlay);
    let (code, rendered, err) = run(Command::new(kubectl).arg("kustomize").arg(&overlay));
    assert_eq!(code, 0, "kubectl kustomize overlays/production failed: {err}");
    let docs = yaml_docs(&rendered);
    let out = tempfile::tempdir().unwrap();
    validate_manifests("overlays/production (rendered)", &docs, out.path());

    // Every object lands in the idfabric namespace, and the Deployment refers to the
    // generated (hash-suffixed) ConfigMaps and Secrets that the render contains.
    let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        if kind != "Namespace" {
            assert_eq!(
                d["metadata"]["namespace"], "idfabric",
                "{kind} {} outside the namespace",
                d["metadata"]["name"]
            );
        }
        names.entry(kind).or_default().insert(d["metadata"]["name"].as_str().unwrap());
    }
    let dep = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "idfabric").unwrap();
    let pod = &dep["spec"]["template"]["spec"];
    let mut refs: Vec<(&str, &str)> = Vec::new();
    for c in pod["containers"].as_array().unwrap() {
        for e in c["envFrom"].as_array().into_iter().flatten() {
            if let Some(n) = e["configMapRef"]["name"].as_str() {
                refs.push(("ConfigMap", n));
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                refs.push(("Secret", n));
            }
        }
    }
    for v in pod["volumes"].as_array().unwrap() {
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            if let Some(n) = s["configMap"]["name"].as_str() {
                refs.push(("ConfigMap", n));
            }
            if let Some(n) = s["secret"]["name"].as_str() {
                refs.push(("Secret", n));
            }
        }
    }
    assert!(refs.len() >= 6, "the Deployment should use 3 ConfigMaps and 2 Secrets: {refs:?}");
    for (kind, name) in refs {
        assert!(
            names.get(kind).is_some_and(|n| n.contains(name)),
            "the Deployment refers to {kind} {name}, which the render does not contain (a reference without its hash suffix?)"
        );
    }
}

/// A Kubernetes CPU quantity (`"2"`, `"1500m"`, `0.5`) in millicores.
fn millicores(q: &Value) -> u64 {
    match q {
        Value::Number(n) => (n.as_f64().unwrap() * 1000.0).round() as u64,
        Value::String(s) => match s.strip_suffix('m') {
            Some(m) => m.parse().unwrap_or_else(|_| panic!("cpu {s}")),
            None => (s.parse::<f64>().unwrap_or_else(|_| panic!("cpu {s}")) * 1000.0).round() as u64,
        },
        other => panic!("cpu quantity {other}"),
    }
}

fn deployment() -> Value {
    yaml(&base().join("deployment.yaml"))
}

fn container_port(c: &Value, name: &str) -> u64 {
    c["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no port {name}"))
        ["containerPort"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_deployment_is_hardened_and_probes_the_admin_listener() {
    let d = deployment();
    assert!(d["spec"]["replicas"].as_u64().unwrap() >= 2, "at least two replicas");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(pod["topologySpreadConstraints"].as_array().is_some_and(|t| !t.is_empty()), "replicas spread over nodes");
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["limits"]["memory"].is_string());
    // The CPU request is one core per worker thread (docs/deployment.md#scaling-and-state):
    // the HPA's utilisation target is a share of the request, so a request below what
    // the threads can use would scale out on an idle-ish pod, and one above it never.
    let threads = yaml(&base().join("config/routes.yaml"))["server"]["threads"].as_u64().expect("server.threads");
    let cpu = millicores(&c["resources"]["requests"]["cpu"]);
    assert_eq!(cpu, threads * 1000, "requests.cpu ({cpu}m) must be server.threads ({threads}) × 1000m");
    assert_eq!(millicores(&c["resources"]["limits"]["cpu"]), cpu, "limits.cpu = requests.cpu: the threads are never throttled");

    // Probes hit the admin listener that routes.yaml configures.
    let routes = yaml(&base().join("config/routes.yaml"));
    let admin_port: u64 = routes["admin"]["listen"].as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(container_port(c, "admin"), admin_port);
    let http_port: u64 = routes["listen"]["http"].as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(container_port(c, "http"), http_port);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    // Shutdown: endpoints drain during preStop, then Pingora's 1 s grace + 5 s in flight.
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().expect("preStop sleep");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace >= pre_stop + 1 + 5,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} + 6 s of Pingora shutdown"
    );
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(strs(&c["args"]), ["serve", "--config", "/etc/idfabric/routes.yaml"]);

    // The projected config volume holds every enabled provider and the key files routes.yaml names.
    let sources = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "config").unwrap()["projected"]
        ["sources"]
        .as_array()
        .unwrap()
        .clone();
    let paths: BTreeSet<String> = sources
        .iter()
        .flat_map(|s| {
            s["configMap"]["items"].as_array().or(s["secret"]["items"].as_array()).cloned().unwrap_or_default()
        })
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect();
    for id in strs(&routes["providers"]) {
        assert!(paths.contains(&format!("providers/{id}.yaml")), "provider {id} is enabled but not mounted: {paths:?}");
        assert!(base().join(format!("config/providers/{id}.yaml")).is_file(), "config/providers/{id}.yaml missing");
    }
    for key in [
        routes["session"]["key_file"].as_str().unwrap(),
        routes["broker"]["signing_key"].as_str().unwrap(),
        routes["listen"]["https"]["cert"].as_str().unwrap(),
        routes["listen"]["https"]["key"].as_str().unwrap(),
        routes["admin"]["token_file"].as_str().unwrap(),
    ] {
        assert!(paths.contains(key), "routes.yaml names {key}, which the volume does not provide: {paths:?}");
    }

    // Shared state: Redis, reachable under the name routes.yaml uses.
    assert_eq!(routes["session"]["store"], "redis://redis:6379");
    let redis = yaml_docs(&read(&base().join("redis.yaml")));
    assert!(redis
        .iter()
        .any(|r| r["kind"] == "Service" && r["metadata"]["name"] == "redis" && r["spec"]["ports"][0]["port"] == 6379));

    let hpa = yaml(&base().join("hpa.yaml"));
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], d["metadata"]["name"]);
    let pdb = yaml(&base().join("pdb.yaml"));
    // One replica at a time, whatever the HPA scaled to (minAvailable: 1 would let a
    // drain take nine of ten at once).
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(pdb["spec"]["minAvailable"].is_null(), "maxUnavailable only");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], d["spec"]["selector"]["matchLabels"]);

    // The ServiceMonitor scrapes the admin Service's port, with job="idfabric" for the alerts.
    let sm = yaml(&base().join("servicemonitor.yaml"));
    let admin_svc = yaml(&base().join("service-admin.yaml"));
    assert_eq!(sm["spec"]["selector"]["matchLabels"], admin_svc["metadata"]["labels"]);
    assert_eq!(sm["spec"]["endpoints"][0]["port"], admin_svc["spec"]["ports"][0]["name"]);
    assert_eq!(admin_svc["metadata"]["labels"][sm["spec"]["jobLabel"].as_str().unwrap()], "idfabric");
}

#[test]
fn only_the_probe_port_is_open_to_the_cluster_and_the_ops_port_is_fenced() {
    let routes = yaml(&base().join("config/routes.yaml"));
    let port_of = |v: &Value| -> u64 { v.as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap() };
    let admin = &routes["admin"];
    let (probe_port, ops_port) = (port_of(&admin["listen"]), port_of(&admin["ops_listen"]));
    let hosts = strs(&admin["hosts"]);
    assert!(hosts.iter().any(|h| h == "idfabric-ops.idfabric.svc"), "the ops Service's name is an allowed Host: {hosts:?}");
    assert!(admin["token_file"].is_string(), "the operator paths need the token");

    let d = deployment();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container_port(c, "admin"), probe_port);
    assert_eq!(container_port(c, "ops"), ops_port);
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe} on the probe port");
    }

    // Each Service exposes exactly one of the two ports; Prometheus selects the first only.
    let ports = |f: &str| -> Vec<String> {
        yaml(&base().join(f))["spec"]["ports"].as_array().unwrap().iter().map(|p| p["targetPort"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ports("service-admin.yaml"), ["admin"]);
    assert_eq!(ports("service-ops.yaml"), ["ops"]);
    let sm = yaml(&base().join("servicemonitor.yaml"));
    let ops_labels = &yaml(&base().join("service-ops.yaml"))["metadata"]["labels"];
    let selected = sm["spec"]["selector"]["matchLabels"].as_object().unwrap().iter().all(|(k, v)| &ops_labels[k] == v);
    assert!(!selected, "the ServiceMonitor must not scrape the ops Service");
    // Without the operator, Prometheus discovers the pods and keeps the admin port only.
    let prom = yaml(&deploy("prometheus/prometheus-kubernetes.yml"));
    let keeps_admin_port = prom["scrape_configs"][0]["relabel_configs"].as_array().unwrap().iter().any(|r| {
        strs(&r["source_labels"]) == ["__meta_kubernetes_pod_container_port_name"] && r["regex"] == "admin" && r["action"] == "keep"
    });
    assert!(keeps_admin_port, "prometheus-kubernetes.yml must keep only the container port named admin");

    // The NetworkPolicy: the ops port only from labelled operator pods, the probe port
    // only from the monitoring namespace; no rule opens either to everyone.
    let policies = yaml_docs(&read(&base().join("networkpolicy.yaml")));
    let gw = policies.iter().find(|p| p["metadata"]["name"] == "idfabric").expect("the gateway's NetworkPolicy");
    let rules = gw["spec"]["ingress"].as_array().unwrap();
    let rules_for = |port: u64| -> Vec<&Value> {
        rules.iter().filter(|r| r["ports"].as_array().unwrap().iter().any(|p| p["port"] == port)).collect()
    };
    for (port, what) in [(probe_port, "probe"), (ops_port, "ops")] {
        let found = rules_for(port);
        assert!(!found.is_empty(), "no ingress rule admits the {what} port {port}: it would be unreachable");
        for r in found {
            assert!(r["from"].as_array().is_some_and(|f| !f.is_empty()), "the {what} port {port} is open to everyone: {r}");
        }
    }
    let ops_from = &rules_for(ops_port)[0]["from"][0];
    assert_eq!(ops_from["podSelector"]["matchLabels"]["idfabric.io/ops-client"], "true", "{ops_from}");
    assert!(ops_from["namespaceSelector"].is_null(), "operator pods of this namespace only");
    let probe_from = &rules_for(probe_port)[0]["from"][0];
    assert_eq!(probe_from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring");
}

/// `KEY=value` lines of an env file (comments and blanks skipped).
fn env_file(p: &Path) -> Vec<(String, String)> {
    read(p)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{}: not KEY=value: {l}", p.display()));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn the_kubernetes_config_passes_idfabric_check() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&base().join("config"), tmp.path());
    // The admin token file the idfabric-keys Secret mounts (read at load, unlike the keys).
    std::fs::create_dir_all(tmp.path().join("certs")).unwrap();
    std::fs::write(tmp.path().join("certs/admin.token"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--offline", "--production", "--config", "routes.yaml"]).current_dir(tmp.path()).env_clear();
    // What the Deployment gives the process: the ConfigMap's variables and the Secret's.
    for (k, v) in env_file(&base().join("config/idfabric.env")) {
        cmd.env(k, v);
    }
    cmd.env("ENTRA_CLIENT_SECRET", "entra-secret").env("AUTH0_CLIENT_SECRET", "auth0-secret");
    // Upstream names are resolved at load; the cluster's Service names do not resolve here.
    for var in ["HR_UPSTREAM", "SHOP_API_UPSTREAM", "APP_WORKFORCE_UPSTREAM", "APP_CUSTOMER_UPSTREAM"] {
        assert!(
            read(&base().join("config/routes.yaml")).contains(&format!("${{{var}:-")),
            "{var} is not in routes.yaml"
        );
        cmd.env(var, "127.0.0.1:8080");
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "idfabric check --offline --production on the Kubernetes config:\n{out}{err}");
    assert!(out.contains("configuration valid (2 provider(s), 3 route(s))"), "{out}");

    // Without the Secret's variables the gateway refuses to start, naming the variable.
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--offline", "--config", "routes.yaml"]).current_dir(tmp.path()).env_clear();
    for (k, v) in env_file(&base().join("config/idfabric.env")) {
        cmd.env(k, v);
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("ENTRA_CLIENT_SECRET"), "{err}");
}

// --- Compose and the Dockerfile -------------------------------------------------------

#[test]
fn the_compose_file_follows_the_compose_spec_and_its_mounts_exist() {
    let file = deploy("compose/compose.yaml");
    let (code, out, err) =
        run(Command::new(&TOOLS.check_jsonschema).args(["--builtin-schema", "vendor.compose-spec"]).arg(&file));
    assert_eq!(code, 0, "compose.yaml fails the compose-spec schema:\n{out}{err}");
    let c = yaml(&file);
    let dir = deploy("compose");
    let services = c["services"].as_object().unwrap();
    for want in ["nginx", "idfabric", "redis", "prometheus", "grafana"] {
        assert!(services.contains_key(want), "compose has no {want} service");
    }
    let build = &services["idfabric"]["build"];
    let context = dir.join(build["context"].as_str().unwrap());
    assert!(context.join(build["dockerfile"].as_str().unwrap()).is_file(), "the Dockerfile compose builds");
    let named: BTreeSet<&String> = c["volumes"].as_object().map(|v| v.keys().collect()).unwrap_or_default();
    for (name, s) in services {
        for v in strs(&s["volumes"]) {
            let src = v.split(':').next().unwrap();
            if src.starts_with('.') || src.starts_with('/') {
                assert!(dir.join(src).exists(), "service {name} mounts {src}, which does not exist");
            } else {
                assert!(named.contains(&src.to_string()), "service {name} uses undeclared volume {src}");
            }
        }
    }
    // Prometheus scrapes the gateway's admin port under the service name.
    let prom = yaml(&deploy("prometheus/prometheus.yml"));
    let target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str().unwrap();
    let routes = yaml(&dir.join("routes.yaml"));
    let admin_port = routes["admin"]["listen"].as_str().unwrap().rsplit_once(':').unwrap().1;
    assert_eq!(target, format!("idfabric:{admin_port}"));
    assert_eq!(prom["scrape_configs"][0]["job_name"], "idfabric", "the alert rules select job=\"idfabric\"");
    assert!(
        routes["session"]["store"].as_str().unwrap().starts_with("redis://redis:"),
        "the demo shares sessions through Redis"
    );

    // Its routes.yaml, with the repository's providers/ beside it (as mounted) and the
    // development keys `idfabric demo` writes into the certs volume, is valid.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("routes.yaml"), tmp.path().join("routes.yaml")).unwrap();
    copy_tree(&repo().join("providers"), &tmp.path().join("providers"));
    let (code, out, err) = run(Command::new(BIN).args(["keys", "generate", "--dir", "certs"]).current_dir(tmp.path()));
    assert_eq!(code, 0, "keys generate: {out}{err}");
    let (code, out, err) =
        run(Command::new(BIN).args(["check", "--offline", "--config", "routes.yaml"]).current_dir(tmp.path()));
    assert_eq!(code, 0, "compose routes.yaml: {out}{err}");
}

/// A process killed (SIGTERM, then waited for) on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // nginx's master stops its workers on TERM; a KILL would leave them listening.
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str, log: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not listen on {port}: {}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The source file of the bind mount of `service` whose target is `target`.
fn mount_source(service: &Value, target: &str) -> String {
    strs(&service["volumes"])
        .into_iter()
        .find_map(|v| {
            let mut parts = v.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            (dst == target).then(|| src.to_string())
        })
        .unwrap_or_else(|| panic!("no volume mounted at {target}"))
}

#[tokio::test]
async fn the_compose_stack_signs_in_through_its_nginx_over_tls_with_redis_sessions() {
    // No container engine here: the compose file's own pieces run as processes. Its
    // Redis command, its routes.yaml (and the repository's providers) under `idfabric
    // serve`, its nginx.conf under a real nginx; only service names and published
    // ports become loopback addresses.
    let nginx = on_path("nginx").or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()));
    let nginx = nginx.expect("nginx is not installed (make deps-test installs it): the compose stack cannot be tried");
    let dir = deploy("compose");
    let c = yaml(&dir.join("compose.yaml"));
    let svc = &c["services"];

    // Redis, with the compose command's arguments.
    let redis_port = free_port();
    let cmd = strs(&svc["redis"]["command"]);
    assert_eq!(cmd[0], "redis-server");
    let redis_dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = cmd[1..].to_vec();
    args.extend(["--port".into(), redis_port.to_string(), "--bind".into(), "127.0.0.1".into()]);
    let _redis = Proc(
        Command::new("redis-server").args(&args).current_dir(redis_dir.path()).stdout(std::process::Stdio::null()).spawn().expect("redis-server"),
    );
    wait_port(redis_port, "redis-server", Path::new("/dev/null"));

    // idfabric, on the routes.yaml compose mounts at /etc/idfabric/routes.yaml.
    let echo = Echo::start();
    let env = TestEnv::new();
    let tls_port = free_port();
    let routes_src = mount_source(&svc["idfabric"], "/etc/idfabric/routes.yaml");
    let mut routes = read(&dir.join(&routes_src))
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{}", env.http_port))
        .replace("0.0.0.0:8443", &format!("127.0.0.1:{tls_port}"))
        .replace("0.0.0.0:9090", &format!("127.0.0.1:{}", env.admin_port))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", env.http_port))
        .replace("redis://redis:6379", &format!("redis://127.0.0.1:{redis_port}"));
    for port in 3001..=3009 {
        routes = routes.replace(&format!("127.0.0.1:{port}"), &echo.addr());
    }
    env.write("routes.yaml", &routes);
    let providers_src = mount_source(&svc["idfabric"], "/etc/idfabric/providers");
    for p in files_under(&dir.join(&providers_src)) {
        let text = read(&p).replace("127.0.0.1:8080", &format!("127.0.0.1:{}", env.http_port));
        env.write(&format!("providers/{}", p.file_name().unwrap().to_string_lossy()), &text);
    }
    let _gw = Gateway::start(&env);

    // nginx, on the nginx.conf compose mounts, with the certs volume idfabric shares.
    assert_eq!(mount_source(&svc["nginx"], "/etc/nginx/certs"), mount_source(&svc["idfabric"], "/etc/idfabric/certs"), "one certs volume");
    let conf_src = mount_source(&svc["nginx"], "/etc/nginx/nginx.conf");
    let published: Vec<String> = strs(&svc["nginx"]["ports"]);
    assert!(published.iter().any(|p| p.ends_with(":443")), "nginx publishes 443: {published:?}");
    let run = tempfile::tempdir().unwrap();
    let nginx_port = free_port();
    let certs = env.path().join("certs");
    let conf = read(&dir.join(&conf_src));
    assert!(conf.contains("server idfabric:8443;") && conf.contains("listen 443 ssl;"), "{conf}");
    let conf = conf
        .replace("server idfabric:8443;", &format!("server 127.0.0.1:{tls_port};"))
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{nginx_port} ssl;"))
        .replace("/etc/nginx/certs/", &format!("{}/", certs.display()))
        .replace("access_log /dev/stdout;", &format!("access_log {}/access.log;", run.path().display()))
        // Writable places for a process that is not the container's.
        .replacen(
            "http {",
            &format!("http {{\n    client_body_temp_path {0}/body;\n    proxy_temp_path {0}/proxy;\n    fastcgi_temp_path {0}/fastcgi;\n    uwsgi_temp_path {0}/uwsgi;\n    scgi_temp_path {0}/scgi;", run.path().display()),
            1,
        );
    let conf_file = run.path().join("nginx.conf");
    std::fs::write(&conf_file, &conf).unwrap();
    let log = run.path().join("nginx.stderr");
    let (code, out, err) = run_cmd_nginx(&nginx, run.path(), &conf_file, true);
    assert_eq!(code, 0, "nginx -t on the compose nginx.conf:\n{out}{err}");
    let _nginx = Proc(
        Command::new(&nginx)
            .arg("-p").arg(run.path()).arg("-c").arg(&conf_file)
            .args(["-g", &format!("daemon off; pid {}/nginx.pid;", run.path().display())])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("nginx"),
    );
    wait_port(nginx_port, "nginx", &log);

    // A browser signs in on https://hr.localhost through nginx.
    let b = Agent::browser_with(None);
    let app = format!("https://hr.localhost:{nginx_port}/");
    let authz = b.to_provider(&app).await;
    let redirect_uri = common::agent::query_of(&authz)["redirect_uri"].clone();
    assert_eq!(redirect_uri, format!("https://hr.localhost:{nginx_port}/.idfabric/callback"), "idfabric sees the browser's https URL");
    let callback = b.pick_user(&authz, "alice").await;
    let done = b.get(callback.as_str()).await;
    assert_eq!(done.redirect().as_str(), app, "{}", done.body);
    let cookie = done.set_cookie("__Host-idfabric_session").unwrap_or_else(|| panic!("{:?}", done.set_cookies()));
    assert!(cookie.contains("Secure"), "{cookie}");
    let page = b.get(&app).await;
    let up = page.upstream();
    assert_eq!(common::agent::decoded(&up["x-identity-email"]), "alice@contoso.example");

    // The session lives in Redis.
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{redis_port}")).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("idf:s:*").query(&mut con).unwrap();
    assert_eq!(keys.len(), 1, "one session in Redis: {keys:?}");
}

/// `nginx -t` with this prefix and config (the same flags as the run).
fn run_cmd_nginx(nginx: &Path, prefix: &Path, conf: &Path, test: bool) -> (i32, String, String) {
    let mut cmd = Command::new(nginx);
    cmd.arg("-p").arg(prefix).arg("-c").arg(conf).args(["-g", &format!("pid {}/nginx.pid;", prefix.display())]);
    if test {
        cmd.arg("-t");
    }
    run(&mut cmd)
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_copies_existing_files() {
    let text = read(&deploy("Dockerfile"));
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let froms: Vec<&str> = lines.iter().filter(|l| l.starts_with("FROM ")).copied().collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let last = froms.last().unwrap();
    assert!(last.contains("distroless") || last.contains("slim"), "a small runtime image: {last}");
    let runtime: Vec<&str> = lines.iter().skip_while(|l| l != &last).copied().collect();
    let user = runtime.iter().rev().find_map(|l| l.strip_prefix("USER ")).expect("the runtime stage sets USER");
    assert!(!matches!(user.trim(), "root" | "0" | "0:0"), "runs as root: USER {user}");
    assert!(runtime.contains(&r#"ENTRYPOINT ["idfabric"]"#), "{runtime:?}");
    assert!(runtime.contains(&r#"CMD ["serve", "--config", "/etc/idfabric/routes.yaml"]"#), "{runtime:?}");
    let expose = runtime.iter().find_map(|l| l.strip_prefix("EXPOSE ")).expect("EXPOSE");
    for port in ["8080", "8443", "9090"] {
        assert!(expose.split_whitespace().any(|p| p == port), "EXPOSE {expose} lacks {port}");
    }
    assert!(text.contains("cmake"), "the builder installs cmake for Pingora");
    assert!(text.contains("cargo build --release --locked"), "built with the project's release profile and lock file");
    // Every COPY from the build context names something that exists (context = repo root).
    for l in &lines {
        let Some(rest) = l.strip_prefix("COPY ") else { continue };
        if rest.contains("--from=") {
            continue;
        }
        let args: Vec<&str> = rest.split_whitespace().filter(|a| !a.starts_with("--")).collect();
        for src in &args[..args.len() - 1] {
            assert!(repo().join(src).exists(), "COPY {src}: no such file in the build context");
        }
    }
    // A second target builds OTLP export in (`--features otlp`), from a feature that exists.
    let stage = |name: &str| -> Vec<&str> {
        let start = lines.iter().position(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {name}"))).unwrap_or_else(|| panic!("no stage {name}"));
        lines[start..].iter().skip(1).take_while(|l| !l.starts_with("FROM ")).copied().collect()
    };
    let otlp_build = stage("build-otlp").join("\n");
    assert!(otlp_build.contains("cargo build --release --locked --features otlp"), "{otlp_build}");
    let otlp_runtime = stage("runtime-otlp");
    assert!(otlp_runtime.iter().any(|l| l.starts_with("COPY --from=build-otlp ")), "{otlp_runtime:?}");
    assert!(otlp_runtime.contains(&"USER nonroot") && otlp_runtime.contains(&r#"ENTRYPOINT ["idfabric"]"#), "{otlp_runtime:?}");
    let cargo = read(&repo().join("Cargo.toml"));
    let features = cargo.split_once("\n[features]\n").map(|(_, f)| f.split("\n[").next().unwrap_or("")).unwrap_or("");
    assert!(features.lines().any(|l| l.starts_with("otlp = [")), "Cargo.toml has no `otlp` feature");
    assert!(last.ends_with(" AS runtime"), "the default (last) stage is the plain runtime: {last}");
    let ignore = read(&repo().join(".dockerignore"));
    for must in ["target/", ".tools/", "node_modules/"] {
        assert!(ignore.lines().any(|l| l.trim() == must), ".dockerignore lacks {must}");
    }
}

// --- Prometheus rules -----------------------------------------------------------------

fn promtool() -> Option<PathBuf> {
    on_path("promtool")
}

fn rule_files() -> Vec<PathBuf> {
    vec![deploy("prometheus/alerts.yml")]
}

#[test]
fn the_prometheusrule_carries_exactly_the_alert_rules() {
    // Two copies of the rules (a rule file and the operator's resource) must not drift.
    let rule = yaml(&base().join("prometheusrule.yaml"));
    let file = yaml(&deploy("prometheus/alerts.yml"));
    assert_eq!(rule["spec"]["groups"], file["groups"], "prometheusrule.yaml differs from prometheus/alerts.yml");
}

/// GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes.
fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix('#').map(|h| h.trim_start_matches('#').trim()))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// Where alert runbooks live: absolute, so a link in a page or a chat message works.
const RUNBOOK_BASE: &str = "https://github.com/idfabric/idfabric/blob/main/docs/operations.md#";

#[test]
fn alert_rules_are_complete_and_point_at_their_runbooks() {
    let docs = anchors(&read(&repo().join("docs/operations.md")));
    let mut names = BTreeSet::new();
    for f in rule_files() {
        let rules = yaml(&f);
        for g in rules["groups"].as_array().expect("groups") {
            assert!(g["name"].as_str().is_some_and(|n| !n.is_empty()), "group without name");
            for r in g["rules"].as_array().expect("rules") {
                let name = r["alert"].as_str().expect("alerting rules only").to_string();
                assert!(r["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "{name}: expr");
                assert!(
                    matches!(r["labels"]["severity"].as_str(), Some("warning" | "critical")),
                    "{name}: severity warning|critical"
                );
                for a in ["summary", "description", "runbook_url"] {
                    assert!(r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()), "{name}: annotation {a}");
                }
                let runbook = r["annotations"]["runbook_url"].as_str().unwrap();
                let anchor = runbook
                    .strip_prefix(RUNBOOK_BASE)
                    .unwrap_or_else(|| panic!("{name}: runbook {runbook} is not an absolute {RUNBOOK_BASE}… URL"));
                assert!(docs.contains(anchor), "{name}: docs/operations.md has no section #{anchor}");
                assert!(url::Url::parse(runbook).is_ok_and(|u| u.scheme() == "https"), "{name}: {runbook}");
                if name != "IdfabricReloadFailed" {
                    assert!(r["for"].as_str().is_some(), "{name}: a `for` duration, so one bad scrape does not page");
                }
                assert!(names.insert(name.clone()), "{name} defined twice");
            }
        }
    }
    // The alert unit tests expect the same annotations.
    let tests = read(&deploy("prometheus/alerts.test.yml"));
    for line in tests.lines().filter(|l| l.contains("runbook_url")) {
        let url = line.split_once("runbook_url:").unwrap().1.trim().trim_matches('"');
        let anchor = url.strip_prefix(RUNBOOK_BASE).unwrap_or_else(|| panic!("alerts.test.yml: {url}"));
        assert!(docs.contains(anchor), "alerts.test.yml: docs/operations.md has no section #{anchor}");
    }
    for want in [
        "IdfabricJwksStale",
        "IdfabricProviderRefreshFailing",
        "IdfabricRefusalSpike",
        "IdfabricReloadFailed",
        "IdfabricUpstreamErrors",
        "IdfabricSignInConversionDrop",
        "IdfabricDown",
        "IdfabricSessionStoreErrors",
        "IdfabricTlsCertificateRenewalRefused",
    ] {
        assert!(names.contains(want), "alert {want} missing: {names:?}");
    }
}

#[test]
fn promtool_accepts_the_rules_the_configs_and_the_alert_unit_tests() {
    let Some(promtool) = promtool() else {
        eprintln!(
            "promtool is not installed (Debian: apt-get install prometheus): rules were checked structurally only"
        );
        return;
    };
    let dir = deploy("prometheus");
    let (code, out, err) = run(Command::new(&promtool).args(["check", "rules"]).args(rule_files()));
    assert_eq!(code, 0, "promtool check rules:\n{out}{err}");
    let (code, out, err) = run(Command::new(&promtool).args(["check", "config", "prometheus.yml"]).current_dir(&dir));
    assert_eq!(code, 0, "promtool check config prometheus.yml:\n{out}{err}");
    // Debian builds Prometheus without Kubernetes service discovery: there, only the rest
    // of the Kubernetes config can be checked.
    let (code, out, err) =
        run(Command::new(&promtool).args(["check", "config", "prometheus-kubernetes.yml"]).current_dir(&dir));
    let no_k8s_sd =
        err.contains("field kubernetes_sd_configs not found") || out.contains("field kubernetes_sd_configs not found");
    assert!(code == 0 || no_k8s_sd, "promtool check config prometheus-kubernetes.yml:\n{out}{err}");
    let (code, out, err) = run(Command::new(&promtool).args(["test", "rules", "alerts.test.yml"]).current_dir(&dir));
    assert_eq!(code, 0, "promtool test rules alerts.test.yml:\n{out}{err}");
}

// --- PromQL against the metrics a running gateway exports -----------------------------

/// What a scrape exports: sample name -> label name -> values seen.
type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn parse_exposition(text: &str) -> Exported {
    let mut out = Exported::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.rfind('}').expect("closing brace")];
            for (k, v) in parse_matchers(body) {
                labels.entry(k).or_default().insert(v.1);
            }
        }
    }
    out
}

/// `a="x", b=~"y"` -> [(a, ("=", x)), (b, ("=~", y))]; values unescaped.
fn parse_matchers(body: &str) -> Vec<(String, (String, String))> {
    let mut out = Vec::new();
    let b: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_whitespace() || b[i] == ',') {
            i += 1;
        }
        let start = i;
        while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
            i += 1;
        }
        if start == i {
            break;
        }
        let name: String = b[start..i].iter().collect();
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < b.len() && "=!~".contains(b[i]) {
            i += 1;
        }
        let op: String = b[op_start..i].iter().collect();
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        assert!(i < b.len() && b[i] == '"', "matcher {name}{op} without a quoted value in {{{body}}}");
        i += 1;
        let mut value = String::new();
        while i < b.len() && b[i] != '"' {
            if b[i] == '\\' && i + 1 < b.len() {
                i += 1;
            }
            value.push(b[i]);
            i += 1;
        }
        i += 1;
        out.push((name, (op, value)));
    }
    out
}

const AGGREGATIONS: &[&str] =
    &["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"];
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "ln",
    "log2",
    "log10",
    "minute",
    "month",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "year",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "offset", "bool", "inf", "nan", "atan2"];
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
/// Labels Prometheus attaches to every scraped series (static, Kubernetes SD relabeling).
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod"];
/// Series Prometheus itself writes for every target.
const SYNTHETIC: &[&str] = &["up"];

/// A metric selector found in an expression.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, (String, String))>,
}

/// What one PromQL expression names: selectors, grouping labels, and identifiers that
/// are neither functions, keywords nor metrics (errors).
#[derive(Debug, Default)]
struct Names {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
    strays: Vec<String>,
}

fn promql_names(expr: &str) -> Names {
    let c: Vec<char> = expr.chars().collect();
    let mut n = Names::default();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '"' || ch == '\'' {
            i += 1;
            while i < c.len() && c[i] != ch {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '[' {
            while i < c.len() && c[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if ch == '{' {
            n.strays.push(format!("selector without a metric name at {i}"));
            while i < c.len() && c[i] != '}' {
                i += 1;
            }
        } else if ch.is_ascii_digit() || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            // Numbers and durations (offset 30m, 1e3).
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_lowercase();
            if GROUPING.contains(&lower.as_str()) {
                if c.get(next) == Some(&'(') {
                    let close = (next..c.len()).find(|&j| c[j] == ')').expect("closing parenthesis");
                    let list: String = c[next + 1..close].iter().collect();
                    n.grouping.extend(list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
                    i = close + 1;
                }
            } else if c.get(next) == Some(&'(') {
                if !AGGREGATIONS.contains(&lower.as_str()) && !FUNCTIONS.contains(&lower.as_str()) {
                    n.strays.push(format!("unknown function {word}"));
                }
            } else if KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&lower.as_str()) {
                // an operator, or an aggregation followed by `by (...)` before its argument
            } else {
                let mut matchers = Vec::new();
                if c.get(next) == Some(&'{') {
                    let close = (next..c.len()).find(|&j| c[j] == '}').expect("closing brace");
                    matchers = parse_matchers(&c[next + 1..close].iter().collect::<String>());
                    i = close + 1;
                }
                n.selectors.push(Selector { metric: word, matchers });
            }
        } else {
            i += 1;
        }
    }
    n
}

/// Grafana's variables, replaced by what Grafana would send for "All".
fn grafana_to_promql(expr: &str) -> String {
    let mut s = expr.replace("$__rate_interval", "5m").replace("$__range", "6h").replace("$__interval", "1m");
    for var in ["namespace", "job", "route", "provider", "population"] {
        s = s.replace(&format!("${{{var}}}"), ".*").replace(&format!("${var}"), ".*");
    }
    s
}

/// Every PromQL expression of the dashboard: (where, expression), variables substituted;
/// `label_values(metric, label)` variable queries become selectors of that metric.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {} target without expr", p["title"]));
                out.push((
                    format!("panel \"{}\" {}", p["title"].as_str().unwrap(), t["refId"].as_str().unwrap()),
                    grafana_to_promql(expr),
                ));
            }
            walk(&p["panels"], out);
        }
    }
    walk(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap();
        let args = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {q}"));
        let (metric, label) = args.rsplit_once(',').unwrap();
        out.push((
            format!("variable ${}", v["name"].as_str().unwrap()),
            grafana_to_promql(&format!("group by ({}) ({})", label.trim(), metric.trim())),
        ));
    }
    out
}

fn rule_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in rule_files() {
        for g in yaml(&f)["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
                out.push((format!("rule {name}"), r["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

/// Checks one expression's names against the scrape; returns the problems.
fn check_expr(place: &str, expr: &str, exported: &Exported, used: &mut BTreeSet<String>) -> Vec<String> {
    let names = promql_names(expr);
    let mut problems: Vec<String> = names.strays.iter().map(|s| format!("{place}: {s}")).collect();
    let mut labels_in_expr: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    for sel in &names.selectors {
        if SYNTHETIC.contains(&sel.metric.as_str()) {
            continue;
        }
        if !sel.metric.starts_with("idfabric_") {
            problems.push(format!(
                "{place}: `{}` is neither a PromQL function or keyword nor an idfabric metric",
                sel.metric
            ));
            continue;
        }
        let Some(labels) = exported.get(&sel.metric) else {
            problems.push(format!("{place}: metric {} is not exported by the running gateway", sel.metric));
            continue;
        };
        used.insert(sel.metric.clone());
        labels_in_expr.extend(labels.keys().cloned());
        for (label, (op, value)) in &sel.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let Some(values) = labels.get(label) else {
                problems.push(format!("{place}: {} has no label `{label}` (it has {:?})", sel.metric, labels.keys()));
                continue;
            };
            // A literal value must be one the gateway really writes (catches `outcome="allowed"`).
            if op == "=" && !value.is_empty() && !values.contains(value) {
                problems.push(format!(
                    "{place}: {}{{{label}=\"{value}\"}} never appears; seen values: {values:?}",
                    sel.metric
                ));
            }
        }
    }
    for g in &names.grouping {
        if !labels_in_expr.contains(g) {
            problems.push(format!("{place}: grouping label `{g}` belongs to none of the metrics in the expression"));
        }
    }
    problems
}

/// A gateway with traffic of every kind the dashboard and the alerts look at.
async fn gateway_with_traffic() -> (TestEnv, Gateway, Echo, String, RedisServer) {
    let echo = Echo::start();
    // Sessions in a real Redis: the session-store series exist only with a shared store.
    let redis = RedisServer::start();
    let env = TestEnv::new();
    env.write_wf_provider(
        "\
         - { name: alice, email: alice@corp.test, email_verified: true, groups: [hr], mfa: true }\n\
         - { name: bob, email: bob@corp.test, groups: [staff], mfa: false }\n",
    );
    env.write_dev_provider(
        "cu",
        "customer",
        "auth0",
        "dev-idp-customer.pem",
        "client_id: cu-client\naudiences: [https://api.shop.test]\nusers:\n\
         - { name: carol, email: carol@example.test, connection: google-oauth2, scopes: [orders:read] }\n",
    );
    let down = closed_port();
    let routes = format!(
        "  - name: api\n    match: {{ host: api.test }}\n    auth: bearer\n    upstream: [{up}]\n    require: {{ population: customer, scopes_all: [orders:read] }}\n\
         \x20 - name: staff\n    match: {{ host: staff.test }}\n    upstream: [{up}]\n    providers: [wf]\n    require: {{ population: workforce }}\n\
         \x20 - name: broken\n    match: {{ host: broken.test }}\n    auth: none\n    upstream: [127.0.0.1:{down}]\n",
        up = echo.addr()
    );
    env.write_routes(&["wf", "cu"], &routes);
    let text = std::fs::read_to_string(env.routes_path()).unwrap().replace(
        "  signing_key: certs/broker-signing.pem\n",
        "  signing_key: certs/broker-signing.pem\n  clients:\n    - { client_id: svc, client_secret: svc-secret-0123456789, grant_types: [client_credentials] }\n\
         \x20   - { client_id: rp, client_secret: rp-secret-0123456789, redirect_uris: [http://rp.test/cb], backchannel_logout_uri: \"http://127.0.0.1:9/bc\" }\n",
    );
    // The continuous-access series: a Shared Signals poll against a closed port (its
    // results exist at zero, then count transport errors).
    let wf = env.path().join("providers/wf.yaml");
    let provider = std::fs::read_to_string(&wf).unwrap();
    std::fs::write(
        &wf,
        format!("{provider}\nssf: {{ issuer: \"https://ssf.corp.test/\", audience: \"https://idfabric.test/ssf\", poll: {{ url: \"http://127.0.0.1:{down}/poll\", token: poll-token }} }}\n"),
    )
    .unwrap();
    // A low sign-in start rate, so the rate-limit series appears below.
    env.write(
        "routes.yaml",
        &format!("{text}session: {{ store: \"{}\", login_limits: {{ rate_per_minute: 5 }} }}\n", redis.url()),
    );
    let gw = Gateway::start(&env);

    let http = client();
    let get = |host: &str, token: Option<&str>| {
        let mut r = http.get(format!("{}/", env.proxy())).header("host", host);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.send()
    };
    let carol = env.mint("cu", "carol", &[]);
    let bob = env.mint("wf", "bob", &[]);
    assert_eq!(get("api.test", Some(&carol)).await.unwrap().status(), 200, "allowed");
    assert_eq!(get("api.test", Some(&carol)).await.unwrap().status(), 200, "allowed again (verify cache hit)");
    assert_eq!(get("api.test", Some(&bob)).await.unwrap().status(), 403, "wrong population");
    assert_eq!(get("api.test", Some("not.a.jwt")).await.unwrap().status(), 401, "invalid token");
    assert_eq!(get("api.test", None).await.unwrap().status(), 401, "no token");
    assert_eq!(get("nowhere.test", None).await.unwrap().status(), 404, "no route");
    assert_eq!(get("broken.test", None).await.unwrap().status(), 502, "upstream down");
    // A browser sign-in through the dev provider: the funnel and logins_total move.
    let browser = Agent::browser();
    let (page, _) = browser.sign_in(&format!("http://staff.test:{}/", env.http_port), "alice").await;
    assert_eq!(page.status, 200, "signed-in page: {}", page.body);
    // A second sign-in ends by logout: sessions_ended_total{reason} appears.
    let other = Agent::browser();
    other.sign_in(&format!("http://staff.test:{}/", env.http_port), "alice").await;
    other.log_out(&format!("http://staff.test:{}/.idfabric/logout", env.http_port)).await;
    // The broker issues a service token; the admin listener refuses a call without
    // its token and flushes the access evidence for a report.
    let t = http
        .post(format!("{}/broker/token", env.proxy()))
        .basic_auth("svc", Some("svc-secret-0123456789"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 200, "client_credentials: {}", t.text().await.unwrap());
    assert_eq!(http.get(format!("{}/providers", env.admin())).send().await.unwrap().status(), 401);
    let report = env.admin_call(reqwest::Method::GET, "/access?since=1d").send().await.unwrap();
    assert_eq!(report.status(), 200, "access report");
    // More sign-in starts than the client's budget: the rate limit refuses some.
    let mut limited = 0;
    for _ in 0..8 {
        let r = Agent::browser().get(&format!("http://staff.test:{}/.idfabric/login?rd=/", env.http_port)).await;
        limited += usize::from(r.status == 429);
    }
    assert!(limited > 0, "the sign-in rate limit never applied");
    // Redis goes away: the signed-in browser is refused (503) and the store error counted.
    let mut redis = redis;
    redis.stop();
    // (A session used in the last second may still be served from the replica's session
    // cache: wait that out.)
    let url = format!("http://staff.test:{}/", env.http_port);
    crate::common::within_session_cache_ttl("store down: 503", || async { browser.get(&url).await.status == 503 }).await;

    let text = scrape_metrics(&env).await;
    (env, gw, echo, text, redis)
}

#[tokio::test]
async fn dashboard_and_alert_queries_name_only_metrics_the_gateway_exports() {
    let (_env, _gw, _echo, text, _redis) = gateway_with_traffic().await;
    let exported = parse_exposition(&text);
    // The traffic above really produced the series the rules' literal matchers name.
    assert!(text.contains("outcome=\"refused\"") && text.contains("stage=\"session_created\""), "{text}");

    let dashboard: Value = serde_json::from_str(&read(&deploy("grafana/idfabric.json"))).expect("dashboard JSON");
    let mut problems = Vec::new();
    let mut used_by_dashboard = BTreeSet::new();
    let dash_exprs = dashboard_exprs(&dashboard);
    assert!(dash_exprs.len() >= 25, "the dashboard has {} queries", dash_exprs.len());
    for (place, expr) in &dash_exprs {
        problems.extend(check_expr(place, expr, &exported, &mut used_by_dashboard));
    }
    let mut used_by_rules = BTreeSet::new();
    for (place, expr) in rule_exprs() {
        problems.extend(check_expr(&place, &expr, &exported, &mut used_by_rules));
    }
    assert!(problems.is_empty(), "queries that do not match what idfabric exports:\n  {}", problems.join("\n  "));

    // The dashboard shows every metric family idfabric exports (docs/operations.md).
    for family in [
        "requests_total",
        "request_duration_seconds_bucket",
        "auth_decisions_total",
        "token_validations_total",
        "jwks_refresh_total",
        "jwks_keys",
        "jwks_age_seconds",
        "verify_cache_hits_total",
        "verify_cache_misses_total",
        "logins_total",
        "sessions_created_total",
        "sessions_ended_total",
        "session_store_ops_total",
        "session_store_op_duration_seconds_bucket",
        "upstream_errors_total",
        "config_reloads_total",
        "login_funnel_total",
        "broker_requests_total",
        "broker_tokens_issued_total",
        "audit_dropped_total",
        "access_dropped_total",
        "login_pending",
        "revocations_total",
        "ssf_sets_total",
        "ssf_polls_total",
        "scim_requests_total",
        "backchannel_logouts_total",
        "broker_backchannel_logouts_total",
    ] {
        assert!(
            used_by_dashboard.contains(&format!("idfabric_{family}")),
            "the dashboard never shows idfabric_{family}"
        );
    }
    eprintln!("dashboard metrics: {used_by_dashboard:?}\nalert metrics: {used_by_rules:?}");

    // The scanner itself catches a wrong name, a wrong label and a wrong value.
    let mut sink = BTreeSet::new();
    for (bad, why) in [
        ("rate(idfabric_request_total[5m])", "not exported"),
        ("sum by (rout) (rate(idfabric_requests_total[5m]))", "grouping label"),
        ("idfabric_requests_total{outcome=\"allowed\"}", "never appears"),
        ("idfabric_jwks_keys{tenant=\"x\"}", "has no label"),
        ("rate(http_requests_total[5m])", "neither a PromQL function"),
        ("sum(rates(idfabric_requests_total[5m]))", "unknown function"),
    ] {
        let p = check_expr("negative control", bad, &exported, &mut sink);
        assert!(p.iter().any(|m| m.contains(why)), "{bad} should be caught ({why}): {p:?}");
    }
}

#[test]
fn the_dashboard_is_well_formed() {
    let d: Value = serde_json::from_str(&read(&deploy("grafana/idfabric.json"))).expect("dashboard JSON");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert_eq!(d["uid"], "idfabric");
    let vars: BTreeMap<&str, &Value> =
        d["templating"]["list"].as_array().unwrap().iter().map(|v| (v["name"].as_str().unwrap(), v)).collect();
    assert_eq!(vars["datasource"]["type"], "datasource");
    assert_eq!(vars["datasource"]["query"], "prometheus");
    for v in ["route", "provider", "population"] {
        assert_eq!(vars[v]["type"], "query", "${v}");
        assert_eq!(vars[v]["includeAll"], true, "${v} offers All");
    }
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id {} twice", p["id"]);
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "panel {} wider than the grid", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {} uses the datasource variable", p["title"]);
        assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()), "panel {} explains itself", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
        }
    }
    // Grafana provisioning (compose) loads this file and this datasource.
    let ds = yaml(&deploy("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    let prov = yaml(&deploy("grafana/provisioning/dashboards/idfabric.yml"));
    assert_eq!(prov["providers"][0]["options"]["path"], "/var/lib/grafana/dashboards");
}

/// Every query of the dashboard, as written (Grafana variables in place).
fn raw_dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((format!("panel \"{}\"", p["title"].as_str().unwrap()), t["expr"].as_str().unwrap().to_string()));
            }
            walk(&p["panels"], out);
        }
    }
    walk(&d["panels"], &mut out);
    out
}

#[test]
fn every_dashboard_query_is_scoped_to_the_namespace_and_job_variables() {
    // One Prometheus often scrapes several idfabric installations (staging and
    // production, or one per team): every series the dashboard reads must be narrowed
    // to the chosen namespace and job, or panels would silently add them together.
    let d: Value = serde_json::from_str(&read(&deploy("grafana/idfabric.json"))).unwrap();
    let vars: Vec<&Value> = d["templating"]["list"].as_array().unwrap().iter().collect();
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("no ${n} variable: {names:?}"));
    assert!(pos("namespace") < pos("job") && pos("job") < pos("route"), "namespace, then job, then the rest: {names:?}");
    for v in ["namespace", "job"] {
        let var = vars[pos(v)];
        assert_eq!((var["type"].as_str(), var["includeAll"].as_bool()), (Some("query"), Some(true)), "${v}");
        // "All" must also match series without the label (compose has no namespace).
        assert_eq!(var["allValue"], ".*", "${v}");
    }
    let mut queries = raw_dashboard_queries(&d);
    for v in &vars[pos("job")..] {
        let q = v["query"]["query"].as_str().unwrap();
        let args = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).unwrap();
        queries.push((format!("variable ${}", v["name"].as_str().unwrap()), args.rsplit_once(',').unwrap().0.to_string()));
    }
    let mut problems = Vec::new();
    for (place, expr) in &queries {
        for sel in promql_names(expr).selectors {
            for (label, want) in [("namespace", "$namespace"), ("job", "$job")] {
                let scoped = sel.matchers.iter().any(|(l, (op, v))| l == label && op == "=~" && v == want);
                // The job variable itself is chosen within the namespace only.
                if !scoped && !(place == "variable $job" && label == "job") {
                    problems.push(format!("{place}: {} lacks {label}=~\"{want}\"", sel.metric));
                }
            }
        }
    }
    assert!(problems.is_empty(), "unscoped dashboard queries:\n  {}", problems.join("\n  "));
    assert!(queries.len() >= 40, "{} queries", queries.len());
}

#[test]
fn promtool_parses_every_dashboard_query() {
    let Some(promtool) = promtool() else {
        eprintln!("promtool is not installed (Debian: apt-get install prometheus): dashboard PromQL not parsed");
        return;
    };
    let d: Value = serde_json::from_str(&read(&deploy("grafana/idfabric.json"))).unwrap();
    // Each query becomes a recording rule, so `promtool check rules` parses it.
    let rules: Vec<Value> = dashboard_exprs(&d)
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("idfabric_dashboard:query_{i}"), "expr": expr}))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("dashboard-queries.yml");
    std::fs::write(&f, serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string()).unwrap();
    let (code, out, err) = run(Command::new(&promtool).args(["check", "rules"]).arg(&f));
    assert_eq!(code, 0, "promtool cannot parse a dashboard query:\n{out}{err}");
}

// --- Provider templates ---------------------------------------------------------------

/// Every provider template a user copies: the repository's `providers/` and the
/// Kubernetes config's.
fn provider_templates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files_under(&repo().join("providers"));
    out.extend(files_under(&base().join("config/providers")));
    out.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    assert!(out.len() >= 8, "{out:?}");
    out
}

#[test]
fn provider_templates_are_plain_yaml_and_cite_only_documents_that_exist() {
    let md_ref = |text: &str| -> Vec<String> {
        // `docs/providers.md#okta`, `NOTES.md`: any token ending in .md (and its anchor).
        text.split(|c: char| c.is_whitespace() || "()[],;`'\"".contains(c))
            .filter(|t| t.contains(".md"))
            .map(|t| t.trim_end_matches(['.', ':']).to_string())
            .collect()
    };
    let mut problems = Vec::new();
    for f in provider_templates() {
        let rel = f.strip_prefix(repo()).unwrap().display().to_string();
        let text = read(&f);
        // As written, without idfabric's own quoting of `${…}` placeholders: what any
        // YAML tool (an editor, yamllint, kustomize) sees must parse too.
        match serde_norway::from_str::<Value>(&text) {
            Ok(v) => {
                for key in ["id", "kind", "population"] {
                    if !v[key].is_string() {
                        problems.push(format!("{rel}: no `{key}`"));
                    }
                }
            }
            Err(e) => problems.push(format!("{rel}: not YAML as written ({e}); quote ${{…}} inside [ ] and {{ }}")),
        }
        // A commented-out key is meant to be uncommented: it must parse as well.
        for (n, line) in text.lines().enumerate() {
            let Some(rest) = line.strip_prefix("# ") else { continue };
            let looks_like_key = rest.split_once(": ").is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            if looks_like_key && serde_norway::from_str::<Value>(rest).is_err() {
                problems.push(format!("{rel}:{}: `{rest}` does not parse once uncommented", n + 1));
            }
        }
        for r in md_ref(&text) {
            let (doc, anchor) = r.split_once('#').map_or((r.as_str(), None), |(d, a)| (d, Some(a)));
            let path = if doc.starts_with("http") { continue } else { repo().join(doc) };
            if !path.is_file() {
                problems.push(format!("{rel}: cites {doc}, which is not in the repository"));
            } else if let Some(a) = anchor {
                if !anchors(&read(&path)).contains(a) {
                    problems.push(format!("{rel}: cites {doc}#{a}, which has no such section"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "provider templates:\n  {}", problems.join("\n  "));
    // The scanner catches an unquoted placeholder in a flow list.
    assert!(serde_norway::from_str::<Value>("tenants: [${ENTRA_TENANT_ID}]\n").is_err(), "negative control");
}
