//! The documentation stays in step with the code: every config key the
//! parser knows appears in `docs/configuration.md`, and the pages the
//! README promises exist.

use std::path::Path;

/// A config with an unknown key in one section, and how the docs spell
/// that section's keys.
const SECTIONS: &[(&str, &str)] = &[
    ("zzz: 1", ""),
    ("server: {zzz: 1}", "server."),
    ("server: {tls: {zzz: 1}}", "server.tls."),
    ("admin: {zzz: 1}", "admin."),
    ("issuers: {a: {zzz: 1}}", "issuers.NAME."),
    (
        "issuers: {a: {jwks_cache: {zzz: 1}}}",
        "issuers.NAME.jwks_cache.",
    ),
    (
        "issuers: {a: {introspection: {zzz: 1, endpoint: x, client_id: y, client_secret: z}}}",
        "issuers.NAME.introspection.",
    ),
    ("issuers: {a: {dpop: {zzz: 1}}}", "issuers.NAME.dpop."),
    ("revocation: {zzz: 1}", "revocation."),
    ("decisions: {zzz: 1}", "decisions."),
    ("routes: [{zzz: 1}]", "routes[]."),
    ("routes: [{match: {zzz: 1}}]", "routes[].match."),
    ("routes: [{auth: {zzz: 1}}]", "routes[].auth."),
    ("routes: [{forward: {zzz: 1}}]", "routes[].forward."),
];

/// The key list the parser gives for an unknown key in `yaml`.
fn keys_of(yaml: &str) -> Vec<String> {
    let problems = match authgate::config::parse(yaml, Path::new("."), &|_| None) {
        Ok(_) => panic!("{yaml} should not parse"),
        Err(p) => p,
    };
    let text = problems
        .iter()
        .map(ToString::to_string)
        .find(|p| p.contains("zzz: unknown key (one of "))
        .unwrap_or_else(|| panic!("no unknown-key problem for {yaml}: {problems:?}"));
    let list = text.split("(one of ").nth(1).unwrap().trim_end_matches(')');
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_config_key_is_in_the_configuration_reference() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut missing = Vec::new();
    let mut total = 0;
    for (yaml, prefix) in SECTIONS {
        let keys = keys_of(yaml);
        assert!(!keys.is_empty(), "{yaml}");
        for key in keys {
            total += 1;
            let entry = format!("| `{prefix}{key}` |");
            if !doc.contains(&entry) {
                missing.push(entry);
            }
        }
    }
    assert!(missing.is_empty(), "not documented: {missing:#?}");
    assert!(total > 60, "only {total} keys found");
}

#[test]
fn the_documentation_pages_exist_and_are_linked_from_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for page in [
        "docs/configuration.md",
        "docs/security.md",
        "docs/operations.md",
        "docs/comparison.md",
    ] {
        let text = std::fs::read_to_string(root.join(page)).unwrap();
        assert!(text.len() > 1000, "{page} is a stub");
        assert!(readme.contains(page), "README does not link {page}");
    }
}

#[test]
fn every_failure_reason_is_explained_in_the_operations_page() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    for reason in [
        "missing_token",
        "invalid_request",
        "malformed",
        "bad_signature",
        "unknown_kid",
        "algorithm_not_allowed",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "wrong_type",
        "lifetime_too_long",
        "revoked",
        "inactive",
        "insufficient_scope",
        "claim_mismatch",
        "keys_unavailable",
        "revocation_unavailable",
    ] {
        assert!(doc.contains(&format!("| `{reason}` |")), "{reason}");
    }
}
