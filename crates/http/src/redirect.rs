//! A cleartext listener that only sends clients to HTTPS (`https_redirect_port`): 308, which
//! unlike 301 keeps the method and body, to the same host and target on the HTTPS port.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::body::ProxyBody;

/// The redirect for `request` to https on `port` (443 is left out of the URL).
pub fn to_https<B>(request: &Request<B>, port: u16) -> Response<ProxyBody> {
    let host = request.uri().host().map(str::to_owned).or_else(|| {
        let value = request.headers().get(header::HOST)?.to_str().ok()?;
        let authority: http::uri::Authority = value.parse().ok()?;
        Some(authority.host().to_owned())
    });
    let Some(host) = host else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a redirect to HTTPS needs a Host header\n",
        );
    };
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    let Ok(value) = HeaderValue::from_str(&location) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "the request cannot be redirected\n",
        );
    };
    let mut response = plain(StatusCode::PERMANENT_REDIRECT, "use HTTPS\n");
    response.headers_mut().insert(header::LOCATION, value);
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(
        http_body_util::Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: Option<&str>, target: &str) -> Request<()> {
        let mut builder = Request::builder().uri(target);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn keeps_host_and_target_and_drops_the_cleartext_port() {
        let response = to_https(&request(Some("example.com:8080"), "/a/b?x=1"), 8443);
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            response.headers()[header::LOCATION],
            "https://example.com:8443/a/b?x=1"
        );
        let response = to_https(&request(Some("example.com"), "/"), 443);
        assert_eq!(response.headers()[header::LOCATION], "https://example.com/");
        let response = to_https(&request(Some("[::1]:80"), "/v6"), 443);
        assert_eq!(response.headers()[header::LOCATION], "https://[::1]/v6");
    }

    #[test]
    fn without_a_host_there_is_nowhere_to_send_the_client() {
        assert_eq!(
            to_https(&request(None, "/"), 443).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            to_https(&request(Some("bad host"), "/"), 443).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
