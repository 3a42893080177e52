use std::borrow::Cow;

use super::path::check_pattern;
use super::*;
use crate::config::{ForwardConfig, RouteAuth, Upstream};
use std::time::Duration;

fn route(
    name: &str,
    path: PathMatch,
    methods: Option<Vec<Method>>,
    host: Option<&str>,
) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        host: host.map(str::to_owned),
        path,
        methods,
        upstream: Some(Upstream {
            https: false,
            http2: false,
            authority: "127.0.0.1:1".parse().unwrap(),
            host: http::HeaderValue::from_static("127.0.0.1:1"),
        }),
        auth: RouteAuth::Public,
        forward: ForwardConfig {
            headers: vec![],
            keep_authorization: false,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            ca_file: None,
            max_connections: 256,
            client_cert: false,
            phantom_jwt: false,
        },
    }
}

fn find<'t>(t: &'t RouteTable, method: &Method, host: Option<&str>, path: &str) -> Option<&'t str> {
    t.find(Target { method, host, path })
        .map(|(r, _)| &*r.config.name)
}

#[test]
fn plain_paths_are_borrowed_unchanged() {
    assert!(matches!(
        normalise("/orders/7?x"),
        Ok(Cow::Borrowed("/orders/7?x"))
    ));
    assert_eq!(
        normalise("/a.b/.well-known/x..y").unwrap(),
        "/a.b/.well-known/x..y"
    );
}

#[test]
fn unreserved_escapes_are_decoded_and_others_kept_upper_case() {
    assert_eq!(normalise("/%61dmin/%7euser").unwrap(), "/admin/~user");
    assert_eq!(normalise("/a%20b/%3f").unwrap(), "/a%20b/%3F");
}

#[test]
fn empty_segments_merge_and_trailing_slash_stays() {
    assert_eq!(normalise("//admin//x/").unwrap(), "/admin/x/");
    assert_eq!(normalise("//").unwrap(), "/");
}

#[test]
fn dot_segments_in_any_spelling_are_refused() {
    for p in [
        "/public/../admin",
        "/public/./admin",
        "/public/%2e%2e/admin",
        "/public/.%2E/admin",
        "/public/%2E/admin",
        "/public/..",
    ] {
        assert_eq!(normalise(p), Err(BadPath::DotSegment), "{p}");
    }
}

#[test]
fn encoded_separators_controls_and_bad_escapes_are_refused() {
    for p in [
        "/public%2Fadmin",
        "/public%2fadmin",
        "/a%5Cb",
        "/a\\b",
        "/a%00b",
        "/a%0d%0ab",
    ] {
        assert_eq!(normalise(p), Err(BadPath::ForbiddenCharacter), "{p}");
    }
    assert_eq!(normalise("/a%zz"), Err(BadPath::BadEscape));
    assert_eq!(normalise("/a%4"), Err(BadPath::BadEscape));
    assert_eq!(normalise("a"), Err(BadPath::NotAbsolute));
}

#[test]
fn prefix_matches_whole_segments_only() {
    let t = RouteTable::new(vec![route(
        "orders",
        PathMatch::Prefix("/orders".into()),
        None,
        None,
    )]);
    let get = Method::GET;
    assert_eq!(find(&t, &get, None, "/orders"), Some("orders"));
    assert_eq!(find(&t, &get, None, "/orders/7"), Some("orders"));
    assert_eq!(find(&t, &get, None, "/orders/"), Some("orders"));
    assert_eq!(find(&t, &get, None, "/ordersx"), None);
    assert_eq!(find(&t, &get, None, "/Orders"), None);
}

#[test]
fn first_match_in_file_order_wins_across_index_buckets() {
    let t = RouteTable::new(vec![
        route(
            "catch-all",
            PathMatch::Prefix("".into()),
            Some(vec![Method::POST]),
            None,
        ),
        route("orders", PathMatch::Prefix("/orders".into()), None, None),
        route("root", PathMatch::Prefix("".into()), None, None),
    ]);
    assert_eq!(
        find(&t, &Method::POST, None, "/orders/1"),
        Some("catch-all")
    );
    assert_eq!(find(&t, &Method::GET, None, "/orders/1"), Some("orders"));
    assert_eq!(find(&t, &Method::GET, None, "/other"), Some("root"));
}

#[test]
fn host_and_methods_restrict_a_route() {
    let t = RouteTable::new(vec![route(
        "a",
        PathMatch::Exact("/x".into()),
        Some(vec![Method::GET, Method::HEAD]),
        Some("api.example.com"),
    )]);
    assert_eq!(
        find(&t, &Method::GET, Some("api.example.com"), "/x"),
        Some("a")
    );
    assert_eq!(
        find(&t, &Method::HEAD, Some("api.example.com"), "/x"),
        Some("a")
    );
    assert_eq!(find(&t, &Method::POST, Some("api.example.com"), "/x"), None);
    assert_eq!(
        find(&t, &Method::GET, Some("other.example.com"), "/x"),
        None
    );
    assert_eq!(find(&t, &Method::GET, None, "/x"), None);
    assert_eq!(
        find(&t, &Method::GET, Some("api.example.com"), "/x/"),
        Some("a"),
        "one trailing slash is the same exact path"
    );
    assert_eq!(
        find(&t, &Method::GET, Some("api.example.com"), "/x/y"),
        None
    );
}

#[test]
fn templates_bind_parameters_and_need_every_segment() {
    let t = RouteTable::new(vec![route(
        "t",
        PathMatch::Template("/tenants/{tenant}/orders/{id}".into()),
        None,
        None,
    )]);
    let (r, params) = t
        .find(Target {
            method: &Method::GET,
            host: None,
            path: "/tenants/acme/orders/7",
        })
        .unwrap();
    assert_eq!(&*r.config.name, "t");
    assert_eq!(params.get("tenant"), Some("acme"));
    assert_eq!(params.get("id"), Some("7"));
    assert_eq!(find(&t, &Method::GET, None, "/tenants/acme/orders"), None);
    assert_eq!(
        find(&t, &Method::GET, None, "/tenants/acme/orders/7/x"),
        None
    );
    assert_eq!(find(&t, &Method::GET, None, "/tenants//orders/7"), None);
}

#[test]
fn exact_and_template_routes_also_match_one_trailing_slash() {
    let t = RouteTable::new(vec![
        route(
            "tenant",
            PathMatch::Template("/tenants/{tenant}/orders".into()),
            None,
            None,
        ),
        route("health", PathMatch::Exact("/health".into()), None, None),
    ]);
    let name = |path: &str| find(&t, &Method::GET, None, path);
    assert_eq!(name("/tenants/acme/orders/"), Some("tenant"));
    assert_eq!(name("/health/"), Some("health"));
    assert_eq!(name("/health//"), None);
    assert_eq!(name("/tenants/acme/orders//"), None);
    assert_eq!(name("/healthx"), None);
}

#[test]
fn semicolons_are_refused_in_any_spelling() {
    for path in [
        "/a;b",
        "/public;x/admin",
        "/a/%3B",
        "/a/%3b/b",
        "/..;/admin",
    ] {
        assert!(normalise(path).is_err(), "{path}");
    }
    assert_eq!(normalise("/a;b"), Err(BadPath::Semicolon));
    assert_eq!(normalise("/a%3Bb"), Err(BadPath::Semicolon));
}

#[test]
fn patterns_must_be_normal() {
    assert_eq!(
        check_pattern("/tenants/{t}/x", true),
        Ok(vec!["t".to_owned()])
    );
    assert!(check_pattern("/a/../b", false).is_err());
    assert!(check_pattern("/a//b", false).is_err());
    assert!(check_pattern("/a/{t}", false).is_err());
    assert!(check_pattern("/a/{t}/{t}", true).is_err());
    assert!(check_pattern("/a/x{t}", true).is_err());
}
