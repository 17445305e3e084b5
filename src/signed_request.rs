//! One ACS3-signed Alibaba Cloud OpenAPI request, sent with a given key pair. A leaf below both
//! the SysOM client (`upstream`) and the STS AssumeRole call (`credentials`), which speak the
//! same signature.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::{secret::Secret, signing};

/// One usable key pair, plus the STS token when the pair is temporary.
#[derive(Clone, Debug)]
pub struct AccessKey {
    pub id: String,
    pub secret: Secret,
    pub security_token: Option<Secret>,
}

/// Why [`SignedRequest::send`] got no complete answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// Reads a response body, refusing it as soon as it is known to exceed `limit` bytes (from the
/// Content-Length, or while it streams in), so a huge answer never sits in memory whole.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<String, SendError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(SendError::TooLarge(limit));
    }
    let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > limit {
            return Err(SendError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// One signed request. Also used for STS AssumeRole, which speaks the same signature.
pub struct SignedRequest<'a> {
    pub action: &'a str,
    pub version: &'a str,
    pub method: Method,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub body: Option<&'a Value>,
}

/// `host[:port]` as the HTTP client will send it in the Host header.
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

impl SignedRequest<'_> {
    /// Signs and sends the request; returns the status and body text (at most `limit` bytes).
    pub async fn send(
        &self,
        http: &reqwest::Client,
        endpoint: &Url,
        key: &AccessKey,
        limit: usize,
    ) -> Result<(StatusCode, String), SendError> {
        let body = self.body.map(|b| b.to_string()).unwrap_or_default();
        let hashed = signing::sha256_hex(body.as_bytes());
        let mut headers = vec![
            ("host".to_string(), host_header(endpoint)),
            ("x-acs-action".to_string(), self.action.to_string()),
            ("x-acs-version".to_string(), self.version.to_string()),
            (
                "x-acs-date".to_string(),
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
            (
                "x-acs-signature-nonce".to_string(),
                uuid::Uuid::new_v4().simple().to_string(),
            ),
            ("x-acs-content-sha256".to_string(), hashed.clone()),
        ];
        if self.body.is_some() {
            headers.push((
                "content-type".to_string(),
                "application/json; charset=utf-8".to_string(),
            ));
        }
        if let Some(token) = &key.security_token {
            headers.push((
                "x-acs-security-token".to_string(),
                token.expose().to_string(),
            ));
        }
        let sig = signing::sign(
            &signing::SignInput {
                method: self.method.as_str(),
                path: self.path,
                query: self.query,
                headers: &headers,
                hashed_payload: &hashed,
            },
            key.secret.expose(),
        );
        // The query goes on the wire exactly as it was signed.
        let mut url = endpoint.clone();
        url.set_path(self.path);
        let query = signing::canonical_query(self.query);
        url.set_query((!query.is_empty()).then_some(query.as_str()));

        let mut req = http
            .request(self.method.clone(), url)
            .header("accept", "application/json")
            .header("authorization", signing::authorization(&key.id, &sig));
        for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
            req = req.header(name.as_str(), value.as_str());
        }
        if self.body.is_some() {
            req = req.body(body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = read_limited(resp, limit).await?;
        Ok((status, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_keeps_explicit_port() {
        assert_eq!(
            host_header(&Url::parse("http://127.0.0.1:8080/x").unwrap()),
            "127.0.0.1:8080"
        );
        assert_eq!(
            host_header(&Url::parse("https://sysom.cn-hangzhou.aliyuncs.com").unwrap()),
            "sysom.cn-hangzhou.aliyuncs.com"
        );
    }
}
