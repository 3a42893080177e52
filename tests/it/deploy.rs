//! The deployment files agree with the code: ports, paths, probe URLs,
//! drain time, and every embedded config passes `authgate check`.

use std::path::Path;

use authgate::admin::{HEALTHZ, READYZ};
use authgate::config::{DEFAULT_ADMIN_LISTEN, DEFAULT_DRAIN_TIMEOUT, DEFAULT_LISTEN};
use serde_yaml_ng::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn port(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn env(name: &str) -> Option<String> {
    (name == "AUTHGATE_ADMIN_TOKEN_SHA256").then(|| "ab".repeat(32))
}

#[test]
fn the_dockerfile_exposes_the_default_ports_as_non_root() {
    let docker = read("deploy/Dockerfile");
    let expose = docker.lines().find(|l| l.starts_with("EXPOSE")).unwrap();
    assert!(
        expose.contains(&port(DEFAULT_LISTEN).to_string()),
        "{expose}"
    );
    assert!(
        expose.contains(&port(DEFAULT_ADMIN_LISTEN).to_string()),
        "{expose}"
    );
    assert!(docker.contains("USER nonroot"));
    assert!(
        docker.contains("distroless/static"),
        "no shell in the final image"
    );
    assert!(docker.contains("ENV AUTHGATE_CONFIG="));
}

#[test]
fn the_kubernetes_sidecar_probes_and_ports_match_its_config() {
    let text = read("deploy/kubernetes/sidecar.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap();
    let gateway_yaml = kind("ConfigMap")["data"]["gateway.yaml"].as_str().unwrap();
    // TLS files live in the mounted Secret, not here: check shape, not files.
    let cfg: Value = serde_yaml_ng::from_str(gateway_yaml).unwrap();
    let mut without_tls = cfg.clone();
    without_tls["server"]
        .as_mapping_mut()
        .unwrap()
        .remove("tls");
    let without_tls = serde_yaml_ng::to_string(&without_tls).unwrap();
    let checked = authgate::config::parse(&without_tls, Path::new("."), &env);
    assert!(checked.is_ok(), "{:?}", checked.err());
    let proxy_port = port(cfg["server"]["listen"].as_str().unwrap());
    let admin_port = port(cfg["admin"]["listen"].as_str().unwrap());

    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let sidecar = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "authgate")
        .unwrap();
    let ports: Vec<u64> = sidecar["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [proxy_port, admin_port]);
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], HEALTHZ);
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], READYZ);
    assert_eq!(
        sidecar["livenessProbe"]["httpGet"]["port"].as_u64(),
        Some(admin_port)
    );
    assert_eq!(
        sidecar["readinessProbe"]["httpGet"]["port"].as_u64(),
        Some(admin_port)
    );
    let mounts = sidecar["volumeMounts"].as_sequence().unwrap();
    let config_arg = sidecar["args"]
        .as_sequence()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    // The config's directory is mounted whole: a `subPath` mount never
    // receives ConfigMap updates, and the hot reload would never happen.
    let config_dir = Path::new(config_arg).parent().unwrap().to_str().unwrap();
    let config_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == config_dir)
        .unwrap_or_else(|| panic!("{config_dir} is not a mount: {mounts:?}"));
    assert!(
        config_mount.get("subPath").is_none(),
        "the config is mounted with subPath: ConfigMap updates never reach it"
    );
    let config_volume = config_mount["name"].as_str().unwrap();
    assert!(
        !mounts
            .iter()
            .any(|m| m["name"] == config_volume && m.get("subPath").is_some()),
        "a subPath mount of the config volume"
    );
    let cert = cfg["server"]["tls"]["cert_file"].as_str().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| cert.starts_with(m["mountPath"].as_str().unwrap()))
    );
    let drain =
        authgate::config::parse_duration(cfg["server"]["drain_timeout"].as_str().unwrap()).unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > drain.as_secs());
    // The application is reachable only through authgate.
    let app = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap();
    assert_eq!(app["env"][0]["value"], "127.0.0.1:8080");
    let service_target = kind("Service")["spec"]["ports"][0]["targetPort"].as_u64();
    assert_eq!(service_target, Some(proxy_port));
}

#[test]
fn the_compose_replicas_share_redis_and_a_valid_config() {
    let compose: Value = serde_yaml_ng::from_str(&read("deploy/compose/compose.yaml")).unwrap();
    let text = read("deploy/compose/gateway.yaml");
    let loaded = authgate::config::parse(&text, Path::new("."), &env).unwrap();
    let authgate::config::RevocationStore::Redis(url) = &loaded.config.revocation.store else {
        panic!("the compose file must use the redis store");
    };
    let host = url
        .trim_start_matches("redis://")
        .split(':')
        .next()
        .unwrap();
    assert!(
        compose["services"][host].is_mapping(),
        "redis_url must name a compose service"
    );
    for replica in ["gateway-a", "gateway-b"] {
        let svc = &compose["services"][replica];
        let ports: Vec<&str> = svc["ports"]
            .as_sequence()
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ports = if ports.is_empty() {
            compose["services"]["gateway-a"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect()
        } else {
            ports
        };
        assert!(
            ports
                .iter()
                .any(|p| p.ends_with(&format!(":{}", loaded.config.server.listen.port())))
        );
        assert!(
            ports
                .iter()
                .any(|p| p.ends_with(&format!(":{}", loaded.config.admin.listen.port())))
        );
    }
}

#[test]
fn the_systemd_unit_is_sandboxed_and_reloads_with_sighup() {
    let unit = read("deploy/systemd/authgate.service");
    for line in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/local/bin/authgate run --config /etc/authgate/gateway.yaml",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stop > DEFAULT_DRAIN_TIMEOUT.as_secs(),
        "systemd must wait out the drain"
    );
}
