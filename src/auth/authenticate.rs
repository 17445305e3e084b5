//! Turns a request's `Authorization` header into a [`Principal`]: a token from the tokens file
//! (hashed named tokens with their scopes, or plain tokens of the old format with every scope),
//! or an OAuth access token (JWT) validated against the configured issuer.
//!
//! A value shaped like a JWT goes to the OAuth validator when one is configured; anything else
//! (and a JWT-shaped value when OAuth is off) is looked up in the tokens file.

use std::sync::Arc;

use http::{HeaderMap, header::AUTHORIZATION};

use super::{
    Principal,
    oauth::{self, TokenError, Validator},
    tokens::Tokens,
};

/// Why a request was refused; the text goes into the 401 body and `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Invalid,
    OAuth(TokenError),
}

impl AuthFailure {
    /// The short code (JSON body) and the human text (body and `error_description`).
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Self::Missing => (
                "missing_token",
                "this server requires an Authorization: Bearer <token> header".into(),
            ),
            Self::Malformed => (
                "malformed_authorization",
                "the Authorization header must be of the form: Bearer <token>".into(),
            ),
            Self::Invalid => ("invalid_token", "the bearer token is not valid".into()),
            Self::OAuth(e) => ("invalid_token", e.to_string()),
        }
    }
}

/// The bearer credential of a request, if it has a well-formed one.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthFailure> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthFailure::Missing)?;
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthFailure::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// The accepted credentials: the tokens file and, optionally, one OAuth issuer. Replaced whole
/// on SIGHUP (the validator, with its key cache, is kept while its settings do not change).
#[derive(Default, Clone)]
pub struct Authenticator {
    pub tokens: Tokens,
    pub oauth: Option<Arc<Validator>>,
}

impl Authenticator {
    #[cfg(test)]
    pub fn new(tokens: Tokens, oauth: Option<Arc<Validator>>) -> Self {
        Self { tokens, oauth }
    }

    /// The credentials `config` names. The OAuth validator of `previous` (and its key cache)
    /// is kept when the issuer settings are unchanged.
    pub fn from_config(
        config: &crate::config::Config,
        previous: Option<&Authenticator>,
    ) -> Result<Self, String> {
        let tokens = Tokens::from_config(config)?;
        let oauth = config.auth.oauth.as_ref().map(|settings| {
            previous
                .and_then(|p| p.oauth.clone())
                .filter(|v| v.settings() == settings)
                .unwrap_or_else(|| Arc::new(Validator::from_settings(settings)))
        });
        Ok(Self { tokens, oauth })
    }

    /// Whether any credential is configured (no: the server may serve openly, on loopback or
    /// with the explicit opt-out).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.oauth.is_none()
    }

    /// Who the request speaks for.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthFailure> {
        let presented = bearer(headers)?;
        if let Some(validator) = &self.oauth
            && oauth::looks_like_jwt(presented)
        {
            return validator
                .validate(presented)
                .await
                .map_err(AuthFailure::OAuth);
        }
        self.tokens
            .find(presented)
            .map(|e| Principal::token(e.name.clone(), e.scopes))
            .ok_or(AuthFailure::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Kind, Scope, Scopes, tokens};
    use http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[tokio::test]
    async fn plain_and_named_tokens_map_to_principals() {
        let named = tokens::generate();
        let text = format!(
            "old-plain\n{}\n",
            tokens::line_for("ci", Scopes::NONE.with(Scope::Read), &named)
        );
        let a = Authenticator::new(Tokens::from_text(&text).unwrap(), None);
        let p = a
            .authenticate(&headers(&format!("Bearer {named}")))
            .await
            .unwrap();
        assert_eq!((p.name.as_str(), p.kind), ("ci", Kind::Token));
        assert!(p.may(Scope::Read) && !p.may(Scope::Diagnose) && !p.may(Scope::Admin));
        let plain = a.authenticate(&headers("bearer old-plain")).await.unwrap();
        assert_eq!(plain.scopes, Scopes::ALL);
        assert!(plain.name.starts_with("plain-") && !plain.name.contains("old-plain"));
        assert_eq!(
            a.authenticate(&headers("Bearer nope")).await,
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            a.authenticate(&headers("Basic abc")).await,
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            a.authenticate(&headers("Bearer ")).await,
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            a.authenticate(&HeaderMap::new()).await,
            Err(AuthFailure::Missing)
        );
        // Without OAuth, a JWT-shaped value is just an unknown token.
        assert_eq!(
            a.authenticate(&headers("Bearer eyJa.eyJb.c")).await,
            Err(AuthFailure::Invalid)
        );
        assert!(!a.is_empty());
        assert!(Authenticator::default().is_empty());
    }
}
