//! OAuth 2.1 resource server: validates JWT access tokens issued by one authorization server.
//!
//! Keys come from the issuer's JWKS (its URL configured, or discovered from the issuer's
//! metadata), cached, and fetched again when a token names a `kid` the cache does not hold
//! (key rotation), at most once per [`MIN_REFRESH`] so garbage `kid`s cannot make us hammer the
//! issuer. A token must carry our issuer, be within `nbf`..`exp`, and name this server's
//! canonical URI as audience (RFC 8707: a token minted for another resource is refused).
//! Only asymmetric algorithms are accepted; the token itself is never forwarded anywhere.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    errors::ErrorKind,
    jwk::{Jwk, JwkSet},
};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{Principal, scope::Scopes};

/// Shortest time between two JWKS fetches triggered by unknown `kid`s.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Keys are re-fetched after this long even without an unknown `kid`.
const MAX_AGE: Duration = Duration::from_secs(3600);

pub use crate::config::OAuthSettings;

/// Why a token was refused. The text goes into the 401's `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token was issued for another audience")]
    Audience,
    #[error("the access token comes from an issuer this server does not trust")]
    Issuer,
    #[error("the access token's signature does not verify")]
    Signature,
    #[error("the access token is signed with an unknown key")]
    UnknownKey,
    #[error("the access token is malformed or uses an unsupported algorithm")]
    Malformed,
    #[error("the issuer's keys cannot be fetched")]
    KeysUnavailable,
}

type KeyFuture = Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send>>;
type Fetcher = Box<dyn Fn() -> KeyFuture + Send + Sync>;

struct Cache {
    keys: Option<JwkSet>,
    fetched: Option<Instant>,
}

/// Validates access tokens for one issuer.
pub struct Validator {
    settings: OAuthSettings,
    fetch: Fetcher,
    cache: Mutex<Cache>,
}

/// Asymmetric algorithms only: a shared secret would make every holder an issuer.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    /// Some issuers send scopes as an array.
    scp: Option<Vec<String>>,
}

/// A JWT has three base64url parts; static tokens never contain a dot.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// Plain http is only acceptable to a loopback issuer (tests, a local proxy).
fn url_allowed(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if !url_allowed(&parsed) {
        return Err(format!("{url}: must be https (http only on loopback)"));
    }
    let resp = http
        .get(parsed)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    resp.json::<T>().await.map_err(|e| format!("{url}: {e}"))
}

/// Finds the JWKS URL in the issuer's metadata (OpenID Connect discovery, then RFC 8414).
async fn discover_jwks(http: &reqwest::Client, issuer: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Metadata {
        jwks_uri: String,
    }
    let base = issuer.trim_end_matches('/');
    let mut last = String::new();
    for well_known in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        match get_json::<Metadata>(http, &format!("{base}{well_known}")).await {
            Ok(m) => return Ok(m.jwks_uri),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Validator {
    /// A validator fetching keys over HTTP with `http`.
    pub fn new(settings: OAuthSettings, http: reqwest::Client) -> Self {
        let issuer = settings.issuer.clone();
        let configured = settings.jwks_uri.clone();
        let jwks_uri: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(configured));
        let fetch: Fetcher = Box::new(move || {
            let http = http.clone();
            let issuer = issuer.clone();
            let jwks_uri = jwks_uri.clone();
            Box::pin(async move {
                let mut known = jwks_uri.lock().await;
                let url = match &*known {
                    Some(u) => u.clone(),
                    None => {
                        let u = discover_jwks(&http, &issuer).await?;
                        *known = Some(u.clone());
                        u
                    }
                };
                drop(known);
                get_json::<JwkSet>(&http, &url).await
            })
        });
        Self::with_fetcher(settings, fetch)
    }

    /// A validator for the configured issuer, with its own HTTP client (short deadlines: a
    /// slow issuer must not hold requests for long).
    pub fn from_settings(settings: &OAuthSettings) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self::new(settings.clone(), http)
    }

    /// A validator whose keys come from `fetch` (tests).
    pub fn with_fetcher(settings: OAuthSettings, fetch: Fetcher) -> Self {
        Self {
            settings,
            fetch,
            cache: Mutex::new(Cache {
                keys: None,
                fetched: None,
            }),
        }
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// The key for `kid`, fetching the key set when it is not cached (or stale).
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, TokenError> {
        let mut cache = self.cache.lock().await;
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            // Without a kid, only an issuer with a single key is unambiguous.
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let stale = cache.fetched.is_none_or(|t| t.elapsed() > MAX_AGE);
        if !stale && let Some(key) = cache.keys.as_ref().and_then(find) {
            return Ok(key);
        }
        let may_refresh = cache.fetched.is_none_or(|t| t.elapsed() >= MIN_REFRESH);
        if may_refresh {
            match (self.fetch)().await {
                Ok(set) => {
                    cache.keys = Some(set);
                    cache.fetched = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot fetch the OAuth issuer's keys");
                    // Keep serving with the keys we have; note the attempt so that a dead
                    // issuer is not asked again on every request.
                    cache.fetched = Some(Instant::now());
                    if cache.keys.is_none() {
                        return Err(TokenError::KeysUnavailable);
                    }
                }
            }
        }
        cache
            .keys
            .as_ref()
            .and_then(find)
            .ok_or(TokenError::UnknownKey)
    }

    /// Validates `token` and returns who it speaks for.
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Malformed);
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != format!("{:?}", header.alg)
        {
            return Err(TokenError::Signature);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| TokenError::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.resource]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway.as_secs();
        let data = decode::<Claims>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::Audience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => TokenError::Issuer,
            _ => TokenError::Malformed,
        })?;
        let claims = data.claims;
        let mut scopes = Scopes::from_oauth_claim(claims.scope.as_deref().unwrap_or(""));
        for s in claims.scp.iter().flatten() {
            scopes = scopes.union(Scopes::from_oauth_claim(s));
        }
        let name = claims
            .sub
            .or(claims.client_id)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown".into());
        Ok(Principal::oauth(name, scopes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Kind, scope::Scope};
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use ring::signature::KeyPair;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TestKey {
        kid: String,
        encoding: EncodingKey,
        jwk: Jwk,
    }

    fn key(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key());
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
        }))
        .unwrap();
        TestKey {
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk,
        }
    }

    const ISS: &str = "https://issuer.test";
    const AUD: &str = "https://mcp.test/mcp/unified";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn sign(k: &TestKey, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(k.kid.clone());
        encode(&h, &claims, &k.encoding).unwrap()
    }

    fn good_claims() -> serde_json::Value {
        serde_json::json!({
            "iss": ISS, "aud": AUD, "sub": "agent-1", "exp": now() + 300, "nbf": now() - 10,
            "scope": "openid sysom:read sysom:diagnose",
        })
    }

    /// A validator whose key set is whatever `keys` holds at fetch time; counts fetches.
    fn validator(keys: Arc<std::sync::Mutex<Vec<Jwk>>>, fetches: Arc<AtomicUsize>) -> Validator {
        let settings = OAuthSettings {
            issuer: ISS.into(),
            resource: AUD.into(),
            jwks_uri: None,
            leeway: Duration::ZERO,
        };
        Validator::with_fetcher(
            settings,
            Box::new(move || {
                fetches.fetch_add(1, Ordering::SeqCst);
                let set = JwkSet {
                    keys: keys.lock().unwrap().clone(),
                };
                Box::pin(async move { Ok(set) })
            }),
        )
    }

    #[tokio::test]
    async fn right_token_gives_a_principal_with_mapped_scopes() {
        let k = key("k1");
        let v = validator(
            Arc::new(std::sync::Mutex::new(vec![k.jwk.clone()])),
            Arc::default(),
        );
        let p = v.validate(&sign(&k, good_claims())).await.unwrap();
        assert_eq!(p.name, "agent-1");
        assert_eq!(p.kind, Kind::OAuth);
        assert!(p.scopes.contains(Scope::Read) && p.scopes.contains(Scope::Diagnose));
        assert!(!p.scopes.contains(Scope::Admin));
    }

    #[tokio::test]
    async fn each_defect_has_its_error() {
        let k = key("k1");
        let v = validator(
            Arc::new(std::sync::Mutex::new(vec![k.jwk.clone()])),
            Arc::default(),
        );
        let with = |field: &str, value: serde_json::Value| {
            let mut c = good_claims();
            c[field] = value;
            sign(&k, c)
        };
        let cases = [
            (
                with("aud", "https://other.test/mcp".into()),
                TokenError::Audience,
            ),
            (with("iss", "https://evil.test".into()), TokenError::Issuer),
            (with("exp", (now() - 5).into()), TokenError::Expired),
            (with("nbf", (now() + 600).into()), TokenError::NotYetValid),
        ];
        for (token, want) in cases {
            assert_eq!(v.validate(&token).await.unwrap_err(), want);
        }
        let mut no_aud = good_claims();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            v.validate(&sign(&k, no_aud)).await.unwrap_err(),
            TokenError::Audience
        );
        // Signed by another key that claims the same kid.
        let forged = key("k1");
        assert_eq!(
            v.validate(&sign(&forged, good_claims())).await.unwrap_err(),
            TokenError::Signature
        );
        // A symmetric token is refused before any key is looked at.
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &good_claims(),
            &EncodingKey::from_secret(b"shared"),
        )
        .unwrap();
        assert_eq!(v.validate(&hs).await.unwrap_err(), TokenError::Malformed);
        assert_eq!(
            v.validate("eyJ.not.jwt").await.unwrap_err(),
            TokenError::Malformed
        );
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_then_waits() {
        let old = key("old");
        let keys = Arc::new(std::sync::Mutex::new(vec![old.jwk.clone()]));
        let fetches = Arc::new(AtomicUsize::new(0));
        let v = validator(keys.clone(), fetches.clone());
        assert!(v.validate(&sign(&old, good_claims())).await.is_ok());
        assert!(v.validate(&sign(&old, good_claims())).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "keys are cached");

        // The issuer rotates: the new key is only found by fetching again. Pretend the last
        // fetch was long enough ago.
        let new = key("new");
        *keys.lock().unwrap() = vec![new.jwk.clone()];
        v.cache.lock().await.fetched = Some(Instant::now() - MIN_REFRESH);
        assert!(v.validate(&sign(&new, good_claims())).await.is_ok());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // The rotated-out key is gone from the set, so its tokens no longer verify.
        assert_eq!(
            v.validate(&sign(&old, good_claims())).await.unwrap_err(),
            TokenError::UnknownKey
        );
        // Unknown kids right after a fetch do not trigger another one.
        let stranger = key("stranger");
        assert_eq!(
            v.validate(&sign(&stranger, good_claims()))
                .await
                .unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn jwt_shape_and_issuer_urls() {
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIi.c2ln"));
        assert!(!looks_like_jwt("smcp_0123abcd"));
        let ok = |u: &str| url_allowed(&url::Url::parse(u).unwrap());
        assert!(ok("https://idp.example.com/jwks"));
        assert!(ok("http://127.0.0.1:4000/jwks"));
        assert!(ok("http://localhost:4000/jwks"));
        assert!(!ok("http://idp.example.com/jwks"));
        assert!(!ok("file:///etc/passwd"));
    }
}
