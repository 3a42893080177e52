//! `authgate check` semantics: every problem reported at once, each as
//! `path.to.key: what is wrong (what would be right)`. One test per problem.

use std::path::Path;

fn problems(yaml: &str) -> Vec<String> {
    problems_in(yaml, Path::new("."))
}

fn problems_in(yaml: &str, dir: &Path) -> Vec<String> {
    match authgate::config::parse(yaml, dir, &|name| {
        (name == "PRESENT").then(|| "value".to_owned())
    }) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

const ISSUER: &str = r#"
issuers:
  corp:
    issuer: "https://idp.example.com/"
    jwks_uri: "https://idp.example.com/jwks.json"
    algorithms: [ES256]
    audiences: [api]
"#;

fn with_route(route: &str) -> String {
    format!("{ISSUER}routes:\n{route}")
}

const GOOD_ROUTE: &str = "  - name: r\n    match: { path_prefix: /r }\n    upstream: \"http://127.0.0.1:8081\"\n    auth: { issuers: [corp] }\n";

#[test]
fn a_valid_file_has_no_problems() {
    assert_eq!(problems(&with_route(GOOD_ROUTE)), Vec::<String>::new());
}

#[test]
fn the_repository_example_is_valid() {
    let loaded = authgate::config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/gateway.yaml"
    )));
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    assert_eq!(
        problems("server:\n  listn: \"0.0.0.0:1\"\n"),
        [
            "server.listn: unknown key (one of listen, tls, header_read_timeout, idle_timeout, max_header_bytes, max_connections, workers, drain_timeout)"
        ]
    );
    assert_eq!(
        problems("serverr: {}\n"),
        ["serverr: unknown key (one of server, admin, issuers, revocation, routes, decisions)"]
    );
}

#[test]
fn worker_counts_out_of_range_are_refused() {
    for n in ["0", "1025"] {
        assert_eq!(
            problems(&format!("server:\n  workers: {n}\n")),
            [format!(
                "server.workers: {n} is out of range (between 1 and 1024, or left out for one per core)"
            )]
        );
    }
}

#[test]
fn bad_durations_are_refused() {
    assert_eq!(
        problems("server:\n  idle_timeout: 10 minutes\n"),
        [
            r#"server.idle_timeout: "10 minutes" is not a duration (a number with ms, s, m or h, like 500ms or 30s)"#
        ]
    );
}

#[test]
fn unknown_issuer_names_in_routes_are_refused() {
    let yaml = with_route(&GOOD_ROUTE.replace("[corp]", "[crop]"));
    assert_eq!(
        problems(&yaml),
        [r#"routes[0].auth.issuers[0]: unknown issuer "crop" (one of corp)"#]
    );
}

#[test]
fn duplicate_route_names_are_refused() {
    let yaml = with_route(&format!("{GOOD_ROUTE}{GOOD_ROUTE}"));
    assert_eq!(
        problems(&yaml),
        [r#"routes[1].name: route name "r" is used twice (a unique name per route)"#]
    );
}

#[test]
fn duplicate_issuer_names_are_refused() {
    let yaml = format!("{ISSUER}{}", ISSUER.replace("issuers:\n", ""));
    assert_eq!(
        problems(&yaml),
        ["issuers.corp: defined more than once (each key once per mapping)"]
    );
}

#[test]
fn routes_without_auth_are_refused() {
    let yaml = with_route(&GOOD_ROUTE.replace("    auth: { issuers: [corp] }\n", ""));
    assert_eq!(
        problems(&yaml),
        [
            "routes[0].auth: missing (`public` or a policy with issuers; there is no implicit public route)"
        ]
    );
}

#[test]
fn protected_routes_without_an_audience_are_refused() {
    let yaml = with_route(GOOD_ROUTE).replace("    audiences: [api]\n", "");
    assert_eq!(
        problems(&yaml),
        [
            r#"routes[0].auth.audiences: no audience for issuer "corp", so any audience would pass (audiences here or in issuers.corp.audiences)"#
        ]
    );
}

#[test]
fn missing_algorithms_are_refused() {
    let yaml = with_route(GOOD_ROUTE).replace("    algorithms: [ES256]\n", "");
    assert_eq!(
        problems(&yaml),
        [
            "issuers.corp.algorithms: missing (the algorithms this issuer signs with, like [ES256, RS256])"
        ]
    );
}

#[test]
fn none_is_never_an_algorithm() {
    let yaml = with_route(GOOD_ROUTE).replace("[ES256]", "[ES256, None]");
    assert_eq!(
        problems(&yaml),
        [
            r#"issuers.corp.algorithms[1]: "none" is never accepted (a signing algorithm, like ES256)"#
        ]
    );
}

#[test]
fn hs_algorithms_on_a_jwks_issuer_are_refused() {
    let yaml = with_route(GOOD_ROUTE).replace("[ES256]", "[HS256]");
    assert_eq!(
        problems(&yaml),
        [
            "issuers.corp.algorithms[0]: HS256 on an issuer whose keys are public keys (an asymmetric algorithm (RS*, PS*, ES*, EdDSA), or an HS algorithm only with hmac_secret_env)"
        ]
    );
}

#[test]
fn missing_environment_variables_are_refused() {
    let yaml = with_route(GOOD_ROUTE).replace(
        "https://idp.example.com/jwks.json",
        "https://${IDP_HOST}/jwks.json",
    );
    assert_eq!(
        problems(&yaml),
        [
            "issuers.corp.jwks_uri: environment variable IDP_HOST is not set (export IDP_HOST before starting authgate)"
        ]
    );
}

#[test]
fn invalid_upstream_urls_are_refused() {
    for (url, why) in [
        ("ftp://x:1", "is not an http, https or h2c URL"),
        (
            "http://x:1/api",
            "has a path or query, which authgate does not rewrite",
        ),
        ("not a url", "is not a URL"),
    ] {
        let yaml = with_route(&GOOD_ROUTE.replace("http://127.0.0.1:8081", url));
        assert_eq!(
            problems(&yaml),
            [format!(
                r#"routes[0].upstream: "{url}" {why} (http://HOST:PORT, https://HOST:PORT or h2c://HOST:PORT)"#
            )]
        );
    }
}

#[test]
fn unreadable_tls_files_are_refused() {
    let dir = crate::support::temp_dir("config-tls");
    std::fs::write(dir.join("empty.crt"), "").unwrap();
    assert_eq!(
        problems_in(
            "server:\n  tls: { cert_file: missing.crt, key_file: missing.key }\n",
            &dir
        ),
        [
            "server.tls.cert_file: cannot read missing.crt: no such file (a readable file)",
            "server.tls.key_file: cannot read missing.key: no such file (a readable file)"
        ]
    );
    let p = problems_in(
        "server:\n  tls: { cert_file: empty.crt, key_file: empty.crt }\n",
        &dir,
    );
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("server.tls.cert_file: cannot read certificates from"),
        "{p:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = format!(
        "server:\n  idle_timeout: soon\n{}",
        with_route(&GOOD_ROUTE.replace("[corp]", "[nope]")).replace("[ES256]", "[none]")
    );
    assert_eq!(problems(&yaml).len(), 3, "{:#?}", problems(&yaml));
}

#[test]
fn security_lints_are_warnings() {
    let yaml = with_route(GOOD_ROUTE).replace(
        "https://idp.example.com/jwks.json",
        "http://idp.example.com/jwks.json",
    );
    let loaded = authgate::config::parse(&yaml, Path::new("."), &|_| None).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "issuers.corp.jwks_uri: keys fetched over plain http from a non-loopback host (an https URL)"
        ]
    );
}

const INTROSPECTING: &str = r#"
issuers:
  legacy:
    issuer: "https://legacy.example.com"
    introspection: { endpoint: "https://legacy.example.com/introspect", client_id: gw, client_secret: s }
  older:
    issuer: "https://older.example.com"
    introspection: { endpoint: "https://older.example.com/introspect", client_id: gw, client_secret: s, timeout: "2x" }
"#;

#[test]
fn introspection_issuers_need_no_algorithms_but_a_route_may_use_only_one() {
    let route = |issuers: &str| {
        format!(
            "{INTROSPECTING}routes:\n  - name: r\n    match: {{ path_prefix: /r }}\n    upstream: \"http://127.0.0.1:8081\"\n    auth: {{ issuers: [{issuers}] }}\n"
        )
    };
    assert_eq!(
        problems(&route("legacy")),
        [
            "issuers.older.introspection.timeout: \"2x\" is not a duration (a number with ms, s, m or h, like 500ms or 30s)"
        ]
    );
    assert_eq!(
        problems(&route("legacy, older")),
        [
            "issuers.older.introspection.timeout: \"2x\" is not a duration (a number with ms, s, m or h, like 500ms or 30s)",
            "routes[0].auth.issuers: several issuers with introspection (legacy, older), but an opaque token does not say which one issued it (at most one issuer with introspection per route)"
        ]
    );
}

#[test]
fn revocation_settings_are_checked() {
    assert_eq!(
        problems(&format!(
            "{}revocation: {{ store: redis }}\n",
            with_route(GOOD_ROUTE)
        )),
        ["revocation.redis_url: missing for store: redis (redis://HOST:PORT)"]
    );
    assert_eq!(
        problems(&format!(
            "{}revocation: {{ store: disk, on_store_error: maybe }}\n",
            with_route(GOOD_ROUTE)
        )),
        [
            "revocation.store: unknown store \"disk\" (memory or redis)",
            "revocation.on_store_error: unknown policy \"maybe\" (deny or allow)"
        ]
    );
}

#[test]
fn an_issuer_with_keys_keeps_the_audience_rule_when_it_also_introspects() {
    let introspection = "    introspection: { endpoint: \"https://idp.example.com/introspect\", client_id: gw, client_secret: s }\n";
    let yaml = with_route(GOOD_ROUTE).replace("    audiences: [api]\n", introspection);
    assert_eq!(
        problems(&yaml),
        [
            "routes[0].auth.audiences: no audience for issuer \"corp\", so any audience would pass (audiences here or in issuers.corp.audiences)"
        ]
    );
    // An issuer with nothing but introspection has no JWTs to check `aud` on.
    let only = yaml.replace(
        "    jwks_uri: \"https://idp.example.com/jwks.json\"\n    algorithms: [ES256]\n",
        "",
    );
    assert_eq!(problems(&only), Vec::<String>::new());
}

#[test]
fn a_bad_redis_url_is_refused_by_check_as_run_would_and_its_password_never_shown() {
    for url in [
        "redis://:hunter2secret@[::1",
        "memcached://:hunter2secret@127.0.0.1",
    ] {
        let yaml = format!(
            "{}revocation: {{ store: redis, redis_url: \"{url}\" }}\n",
            with_route(GOOD_ROUTE)
        );
        let problems = problems(&yaml);
        assert_eq!(problems.len(), 1, "{url}: {problems:?}");
        assert!(
            problems[0].starts_with("revocation.redis_url: "),
            "{problems:?}"
        );
        assert!(!problems[0].contains("hunter2secret"), "{problems:?}");
    }
}

#[test]
fn a_route_timeout_longer_than_idle_timeout_is_a_warning() {
    let yaml = format!(
        "server: {{ idle_timeout: 10s }}\n{}",
        with_route(&GOOD_ROUTE.replace(
            "auth: { issuers: [corp] }",
            "auth: { issuers: [corp] }\n    forward: { timeout: 30s }"
        ))
    );
    let loaded = authgate::config::parse(&yaml, Path::new("."), &|_| None).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .starts_with("routes[0].forward.timeout: 30s is longer than server.idle_timeout (10s)"),
        "{warnings:?}"
    );
}
