//! Bearer-token authentication. Tokens come from token files and the systemd credentials
//! directory; several may be valid at once so they can be rotated. Comparison is constant-time.

use std::path::{Path, PathBuf};

use http::{HeaderMap, header::AUTHORIZATION};
use subtle::ConstantTimeEq;

use crate::{
    config::{self, Config},
    credentials,
    secret::Secret,
};

/// Name of the credential file (under `$CREDENTIALS_DIRECTORY`) holding client tokens.
pub const TOKENS_CREDENTIAL: &str = "mcp-tokens";

/// The set of accepted tokens.
#[derive(Debug, Default, Clone)]
pub struct Tokens(Vec<Secret>);

/// Why a request was refused; the text goes into the 401 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Invalid,
}

impl AuthFailure {
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Self::Missing => (
                "missing_token",
                "this server requires an Authorization: Bearer <token> header",
            ),
            Self::Malformed => (
                "malformed_authorization",
                "the Authorization header must be of the form: Bearer <token>",
            ),
            Self::Invalid => ("invalid_token", "the bearer token is not valid"),
        }
    }
}

fn parse_tokens(text: &str) -> impl Iterator<Item = Secret> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Secret::new)
}

impl Tokens {
    /// The client tokens the configuration names, plus `$CREDENTIALS_DIRECTORY/mcp-tokens`.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let dir = credentials::credentials_dir(&config::process_env);
        Self::load(&config.auth.token_files, dir.as_deref())
    }

    /// Reads every token file, plus `$CREDENTIALS_DIRECTORY/mcp-tokens` if present. A listed file
    /// that cannot be read is an error: a typo in a path must not silently drop authentication.
    /// An existing but empty file adds no token; whether zero tokens is acceptable is decided by
    /// the caller (only on loopback or with an explicit opt-out).
    pub fn load(files: &[PathBuf], credentials_dir: Option<&Path>) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read token file {}: {e}", file.display()))?;
            tokens.extend(parse_tokens(&text));
        }
        if let Some(dir) = credentials_dir {
            let path = dir.join(TOKENS_CREDENTIAL);
            if let Ok(text) = std::fs::read_to_string(&path) {
                tokens.extend(parse_tokens(&text));
            }
        }
        Ok(Self(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Checks the `Authorization` header against every token, always comparing all of them.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let value = headers.get(AUTHORIZATION).ok_or(AuthFailure::Missing)?;
        let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthFailure::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::Malformed);
        }
        let presented = token.trim().as_bytes();
        let mut matched = subtle::Choice::from(0);
        for t in &self.0 {
            matched |= t.expose().as_bytes().ct_eq(presented);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn several_tokens_are_valid_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "# rotated\nold-token\n\nnew-token\n").unwrap();
        let t = Tokens::load(&[f], None).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.check(&headers("Bearer old-token")).is_ok());
        assert!(t.check(&headers("bearer new-token")).is_ok());
        assert_eq!(t.check(&headers("Bearer nope")), Err(AuthFailure::Invalid));
        assert_eq!(t.check(&headers("Basic abc")), Err(AuthFailure::Malformed));
        assert_eq!(t.check(&HeaderMap::new()), Err(AuthFailure::Missing));
    }

    #[test]
    fn credentials_directory_tokens_are_added() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENS_CREDENTIAL), "cred-token\n").unwrap();
        let t = Tokens::load(&[], Some(dir.path())).unwrap();
        assert!(t.check(&headers("Bearer cred-token")).is_ok());
    }

    #[test]
    fn unreadable_file_is_an_error_but_empty_file_means_no_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tokens::load(&[dir.path().join("absent")], None).unwrap_err();
        assert!(err.contains("cannot read token file"), "{err}");
        let f = dir.path().join("empty");
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(Tokens::load(&[f], None).unwrap().is_empty());
    }
}
