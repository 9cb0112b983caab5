//! How a webhook reaches its endpoint.
//!
//! **Directly**, by default: hyper's pooled HTTP/1.1 client with rustls and
//! the platform's root certificates (rustls-platform-verifier, as reqwest
//! does for the other channels). A webhook is the call nurture makes most
//! often, one per message and thousands a second, and reqwest's layers over
//! that same hyper client cost a fifth of the CPU per message in the
//! delivery benchmark (BENCHMARKS.md, "webhooks on hyper directly").
//!
//! **Through reqwest** when the environment names a proxy (`HTTP_PROXY`,
//! `HTTPS_PROXY` or `ALL_PROXY`, in either case): reqwest applies the proxy
//! rules, `NO_PROXY` included, that the direct path does not have.
//!
//! Both send the same request and read the answer the same way: at most
//! `MAX_BODY_BYTES` (64 KiB) of it, its `Retry-After`, a transport error as a retry
//! without the URL, and the whole exchange (connect, send, read) bounded by
//! the channel's `timeout`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, USER_AGENT};

use crate::channels::Delivery;
use crate::channels::http::{
    USER_AGENT_VALUE, failed, http_client, install_crypto_provider, keep_bounded, read_answer,
    retry_after,
};

/// The environment variables that make reqwest use a proxy.
pub const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether `env` names a proxy, so that webhooks go through reqwest.
pub fn proxy_configured(env: &dyn Fn(&str) -> Option<String>) -> bool {
    PROXY_VARS
        .iter()
        .any(|v| env(v).is_some_and(|value| !value.trim().is_empty()))
}

/// An answer: its status, `Retry-After` delay and (bounded) body.
pub(super) type Answer = (StatusCode, Option<Duration>, Vec<u8>);

/// Idle connections are closed after this long (reqwest's default).
const POOL_IDLE: Duration = Duration::from_secs(90);

#[derive(Clone)]
pub(super) enum Transport {
    Direct {
        client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
        /// The URL without its user and password, which go in `auth`.
        uri: hyper::Uri,
        /// `Authorization: Basic` from the URL's `user:password@`, as
        /// reqwest sends it.
        auth: Option<HeaderValue>,
        timeout: Duration,
    },
    Proxied {
        client: reqwest::Client,
        url: reqwest::Url,
    },
}

impl std::fmt::Debug for Transport {
    // The URL may carry a credential in its query string: not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Direct { .. } => "Transport::Direct",
            Transport::Proxied { .. } => "Transport::Proxied",
        })
    }
}

impl Transport {
    /// A transport to `url` keeping up to `max_idle` connections open.
    pub(super) fn new(
        url: &reqwest::Url,
        timeout: Duration,
        max_idle: usize,
        proxied: bool,
    ) -> Result<Transport, String> {
        if proxied {
            return Ok(Transport::Proxied {
                client: http_client(timeout, max_idle)?,
                url: url.clone(),
            });
        }
        let mut bare = url.clone();
        let auth = take_credentials(&mut bare);
        let uri: hyper::Uri = bare
            .as_str()
            .parse()
            .map_err(|e| format!("the url is not a valid request target: {e}"))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(url.scheme() == "https")?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle.max(1))
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Transport::Direct {
            client,
            uri,
            auth,
            timeout,
        })
    }

    /// POSTs `body` with `headers` (plus `User-Agent` and `Accept: */*`) and
    /// reads the answer.
    pub(super) async fn post(
        &self,
        mut headers: HeaderMap,
        body: Vec<u8>,
        now: SystemTime,
    ) -> Result<Answer, Delivery> {
        match self {
            Transport::Proxied { client, url } => {
                read_answer(client.post(url.clone()).headers(headers).body(body), now).await
            }
            Transport::Direct {
                client,
                uri,
                auth,
                timeout,
            } => {
                if let Some(auth) = auth {
                    headers.insert(AUTHORIZATION, auth.clone());
                }
                headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
                headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
                let mut req = hyper::Request::new(Full::new(Bytes::from(body)));
                *req.method_mut() = hyper::Method::POST;
                *req.uri_mut() = uri.clone();
                *req.headers_mut() = headers;
                match tokio::time::timeout(*timeout, exchange(client, req, now)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(Delivery::Retry {
                        after: None,
                        reason: format!("timed out: no whole answer within {timeout:?}"),
                    }),
                }
            }
        }
    }
}

/// Sends `req` and reads at most `MAX_BODY_BYTES` of the answer (`keep_bounded`).
async fn exchange(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
    now: SystemTime,
) -> Result<Answer, Delivery> {
    let resp = client.request(req).await.map_err(|e| {
        let what = if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        failed(what, &e)
    })?;
    let status = resp.status();
    let delay = retry_after(resp.headers(), now);
    let mut body = resp.into_body();
    let mut answer = Vec::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data()
                    && keep_bounded(&mut answer, &chunk)
                {
                    break;
                }
            }
            // As `read_answer`: a broken body after a success status does
            // not undo the success.
            Some(Err(e)) if status.is_success() => {
                tracing::debug!(error = %e, "answer body unreadable after a success status");
                break;
            }
            Some(Err(e)) => return Err(failed("request failed", &e)),
        }
    }
    Ok((status, delay, answer))
}

/// Removes `user:password@` from `url` and gives it as an `Authorization:
/// Basic` value (marked sensitive), as reqwest does for a URL with
/// credentials: a webhook URL such as `https://crm:secret@host/hook` keeps
/// working, and the credentials never reach the `Host` header.
fn take_credentials(url: &mut reqwest::Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    use percent_encoding::percent_decode_str;
    let user = percent_decode_str(url.username())
        .decode_utf8()
        .ok()?
        .into_owned();
    let password = url
        .password()
        .and_then(|p| percent_decode_str(p).decode_utf8().ok())
        .map(|p| p.into_owned());
    if user.is_empty() && password.is_none() {
        return None;
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let pair = format!("{user}:{}", password.unwrap_or_default());
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// rustls' client configuration: the platform's roots for an `https://`
/// endpoint; for an `http://` one no roots are loaded (none are used, and a
/// machine without a CA bundle can still call a plain-HTTP endpoint).
fn tls_config(https: bool) -> Result<rustls::ClientConfig, String> {
    install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .ok_or("no TLS crypto provider is installed")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    // ALPN (http/1.1) is set by the connector builder's `enable_http1`.
    let config = if https {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_become_basic_auth() {
        let mut url = reqwest::Url::parse("https://crm:p%40ss@example.com/hook?x=1").unwrap();
        let auth = take_credentials(&mut url).unwrap();
        // base64("crm:p@ss")
        assert_eq!(auth.to_str().unwrap(), "Basic Y3JtOnBAc3M=");
        assert!(auth.is_sensitive());
        assert_eq!(url.as_str(), "https://example.com/hook?x=1");
        let mut plain = reqwest::Url::parse("https://example.com/hook").unwrap();
        assert!(take_credentials(&mut plain).is_none());
    }

    #[test]
    fn a_proxy_in_the_environment_is_noticed_in_either_case() {
        let none = |_: &str| None;
        assert!(!proxy_configured(&none));
        let lower = |v: &str| (v == "https_proxy").then(|| "http://proxy:3128".to_string());
        assert!(proxy_configured(&lower));
        let upper = |v: &str| (v == "ALL_PROXY").then(|| "socks5://proxy".to_string());
        assert!(proxy_configured(&upper));
        let blank = |v: &str| (v == "HTTP_PROXY").then(|| " ".to_string());
        assert!(!proxy_configured(&blank));
    }
}
