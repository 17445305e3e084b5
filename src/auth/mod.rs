//! Who is calling and what they may do: principals, scopes, the tokens file, OAuth access
//! tokens, and per-principal limits. [`authenticate`] turns a request's credential into a
//! [`Principal`], which travels with the request (HTTP extensions) to the tools; they check its
//! scopes.

pub mod authenticate;
pub mod command;
pub mod limits;
pub mod oauth;
pub mod scope;
pub mod tokens;

use std::fmt;

pub use scope::{Scope, Scopes};

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A bearer token from the tokens file.
    Token,
    /// An OAuth access token (JWT) from the configured issuer.
    OAuth,
    /// No credential: the server runs without tokens (loopback or explicit opt-out).
    Anonymous,
    /// The local user on stdio.
    Stdio,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::OAuth => "oauth",
            Self::Anonymous => "anonymous",
            Self::Stdio => "stdio",
        }
    }
}

/// The caller of a request: a name for logs and session ownership, and its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
    pub kind: Kind,
    pub scopes: Scopes,
}

impl Principal {
    pub fn token(name: impl Into<String>, scopes: Scopes) -> Self {
        Self {
            name: name.into(),
            kind: Kind::Token,
            scopes,
        }
    }

    pub fn oauth(name: impl Into<String>, scopes: Scopes) -> Self {
        Self {
            name: name.into(),
            kind: Kind::OAuth,
            scopes,
        }
    }

    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            kind: Kind::Anonymous,
            scopes: Scopes::ALL,
        }
    }

    /// stdio keeps every scope: whoever runs the process already holds its credentials.
    pub fn stdio() -> Self {
        Self {
            name: "stdio".into(),
            kind: Kind::Stdio,
            scopes: Scopes::ALL,
        }
    }

    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// Identity for session ownership and limits: a token name and an OAuth subject of the
    /// same spelling are different principals.
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.name)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id())
    }
}
