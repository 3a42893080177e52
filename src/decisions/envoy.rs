//! Envoy's gRPC `envoy.service.auth.v3.Authorization/Check` (ext_authz),
//! on the decision listener over h2c, with envoy-types' generated service.
//! The `CheckRequest`'s HTTP attributes become the judged request; the
//! answer is the proxy's judgement in Envoy's terms:
//!
//! - allowed: `OkHttpResponse` setting every identity header with
//!   `OVERWRITE_IF_EXISTS_OR_ADD`, and `headers_to_remove` naming
//!   `authorization` (unless the route keeps it) and every identity header
//!   name of the config that the answer does not set (Envoy removes after it
//!   sets, so a client's own copy of an unset one is gone too);
//! - refused: `DeniedHttpResponse` with the proxy's status,
//!   `WWW-Authenticate` and JSON body, and `status.code` 16 for 401, 7
//!   otherwise.

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use http::{HeaderName, Request, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tonic::codegen::Service;

use crate::gateway::Runtime;
use crate::response::grpc;
use crate::telemetry::access_log::AccessLog;

/// The gRPC method Envoy calls.
pub(super) const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// `google.rpc.Code` values of a `CheckResponse`'s status.
const OK: i32 = 0;

/// Whether `req` is Envoy's gRPC Check: that path, HTTP/2, a gRPC body.
/// A client request relayed by an HTTP-mode authorizer with the same path
/// would arrive with the client's own body; see docs/operations.md.
pub(super) fn is_check(req: &Request<Incoming>) -> bool {
    req.uri().path() == CHECK && req.version() == Version::HTTP_2 && grpc::is_grpc(req.headers())
}

/// Serves one Check call. Any gRPC error (a body that is not a
/// `CheckRequest`, say) is sent as HTTP 403 as well as its `grpc-status`:
/// a gRPC client reads 403 as `PERMISSION_DENIED`, and an authorizer in
/// HTTP mode that somehow reached this path reads it as a refusal, never as
/// the 200 a gRPC error otherwise carries.
pub(super) async fn check(
    rt: &Arc<Runtime>,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
    log: &mut AccessLog,
) -> Response {
    let judged_log = Arc::new(std::sync::Mutex::new(None));
    let service = Checker {
        runtime: rt.clone(),
        log: judged_log.clone(),
        peer,
    };
    let mut server = AuthorizationServer::new(service);
    let mut response = match server.call(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let failed = response
        .headers()
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() != b"0");
    // The line logged is the judged request's: its route, issuer, reason.
    if let Some(judged) = judged_log.lock().unwrap_or_else(|p| p.into_inner()).take() {
        *log = judged;
    }
    if failed {
        log.reason = Some("bad_check_request");
        *response.status_mut() = http::StatusCode::FORBIDDEN;
    }
    response
}

type Response = http::Response<tonic::body::Body>;

/// One `Authorization` service per call, holding the call's snapshot and
/// handing back the judged request's log record.
struct Checker {
    runtime: Arc<Runtime>,
    log: Arc<std::sync::Mutex<Option<AccessLog>>>,
    peer: std::net::IpAddr,
}

#[tonic::async_trait]
impl Authorization for Checker {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let judged = judged_request(request.get_ref()).ok_or_else(|| {
            tonic::Status::invalid_argument("the CheckRequest has no HTTP request")
        })?;
        let https = request
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .is_some_and(|h| h.scheme == "https");
        let client = crate::proxy::headers::ClientInfo::new(self.peer, https);
        let mut log = AccessLog::start(&judged.method, &judged.uri);
        log.listener = "decisions";
        let (answer, route) =
            super::allowed_or_refused(&self.runtime, &judged, &client, &mut log).await;
        let keep_authorization = route.is_some_and(|r| r.config.forward.keep_authorization);
        let response = into_check_response(&self.runtime, answer, keep_authorization).await;
        *self.log.lock().unwrap_or_else(|p| p.into_inner()) = Some(log);
        Ok(tonic::Response::new(response))
    }
}

/// The request Envoy asks about, from the `CheckRequest`'s attributes.
fn judged_request(req: &CheckRequest) -> Option<http::request::Parts> {
    let http = req.attributes.as_ref()?.request.as_ref()?.http.as_ref()?;
    let mut judged = Request::new(()).into_parts().0;
    judged.method = http::Method::from_bytes(http.method.as_bytes()).ok()?;
    judged.uri = http.path.parse::<Uri>().ok()?;
    judged.version = Version::HTTP_11;
    for (name, value) in &http.headers {
        // Pseudo-headers (`:authority`, `:path`) are carried by the fields.
        if name.starts_with(':') {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            judged.headers.append(n, v);
        }
    }
    let host = http::HeaderValue::from_str(&http.host).ok()?;
    judged.headers.insert(http::header::HOST, host);
    Some(judged)
}

/// The proxy's judgement as Envoy wants it.
async fn into_check_response(
    rt: &Runtime,
    answer: http::Response<crate::proxy::Body>,
    keep_authorization: bool,
) -> CheckResponse {
    let (parts, body) = answer.into_parts();
    if parts.status == http::StatusCode::OK {
        let mut ok = OkHttpResponse::default();
        for (name, value) in &parts.headers {
            if name == http::header::CACHE_CONTROL {
                continue;
            }
            ok.headers.push(header(name.as_str(), value, true));
        }
        if !keep_authorization {
            ok.headers_to_remove.push("authorization".into());
        }
        for name in rt.identity_names.all() {
            if !parts.headers.contains_key(name) {
                ok.headers_to_remove.push(name.as_str().to_owned());
            }
        }
        return CheckResponse {
            status: Some(rpc::Status {
                code: OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(ok)),
            ..Default::default()
        };
    }
    let code = match parts.status.as_u16() {
        401 => grpc::UNAUTHENTICATED,
        _ => grpc::PERMISSION_DENIED,
    };
    let body = body
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let denied = DeniedHttpResponse {
        status: Some(HttpStatus {
            code: i32::from(parts.status.as_u16()),
        }),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| header(n.as_str(), v, true))
            .collect(),
        body,
    };
    CheckResponse {
        status: Some(rpc::Status {
            code: i32::from(code),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
        ..Default::default()
    }
}

/// A header Envoy sets, overwriting any the client sent.
fn header(name: &str, value: &http::HeaderValue, overwrite: bool) -> HeaderValueOption {
    let action = match overwrite {
        true => HeaderAppendAction::OverwriteIfExistsOrAdd,
        false => HeaderAppendAction::AppendIfExistsOrAdd,
    };
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: action.into(),
        keep_empty_value: false,
    }
}
