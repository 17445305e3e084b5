//! Scopes: what a principal may call. Every tool declares the one scope it needs
//! ([`crate::tools::ToolDef`]); a principal holds a set of them.
//!
//! The three scopes are independent (admin does not imply diagnose): a token made to activate
//! SysOM need not be able to run diagnoses. Their wire names (`sysom:read`, …) are what tokens
//! files store, what OAuth `scope` claims carry and what 403 challenges name.

use std::fmt;

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// List instances, clusters and pods, query results and task status.
    Read,
    /// Run diagnoses on instances (they only observe, but they run code on the machines).
    Diagnose,
    /// Activate SysOM, create tasks that fetch URLs: anything that changes state.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Diagnose, Scope::Admin];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "sysom:read",
            Self::Diagnose => "sysom:diagnose",
            Self::Admin => "sysom:admin",
        }
    }

    /// Accepts the wire name or the short form (`read`, `diagnose`, `admin`).
    pub fn parse(s: &str) -> Option<Self> {
        let short = s.strip_prefix("sysom:").unwrap_or(s);
        match short {
            "read" => Some(Self::Read),
            "diagnose" => Some(Self::Diagnose),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes (a bit set: there are three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);
    pub const ALL: Scopes = Scopes(0b111);

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    pub fn union(self, other: Scopes) -> Self {
        Self(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A small number identifying the set (0..8), e.g. to index prepared answers.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// Every possible set, for precomputing per-set answers.
    pub fn every() -> impl Iterator<Item = Scopes> {
        (0..=Self::ALL.0).map(Scopes)
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parses a comma- or space-separated list; unknown names are an error.
    pub fn parse_list(text: &str) -> Result<Self, String> {
        text.split([',', ' '])
            .filter(|s| !s.is_empty())
            .try_fold(Self::NONE, |set, name| {
                Scope::parse(name)
                    .map(|s| set.with(s))
                    .ok_or_else(|| format!("unknown scope {name:?} (known: read, diagnose, admin)"))
            })
    }

    /// Maps an OAuth `scope` claim (space-separated) onto ours; names that are not ours are
    /// ignored (the same authorization server may issue scopes for other resources).
    pub fn from_oauth_claim(claim: &str) -> Self {
        claim
            .split(' ')
            .filter_map(|s| s.strip_prefix("sysom:").and_then(Scope::parse))
            .fold(Self::NONE, Self::with)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Display for Scopes {
    /// Comma-separated wire names (the tokens-file form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_short_and_wire_names() {
        let s = Scopes::parse_list("read,sysom:admin").unwrap();
        assert!(s.contains(Scope::Read) && s.contains(Scope::Admin));
        assert!(!s.contains(Scope::Diagnose));
        assert_eq!(s.to_string(), "sysom:read,sysom:admin");
        assert_eq!(Scopes::parse_list(&s.to_string()).unwrap(), s);
        assert!(
            Scopes::parse_list("read,root")
                .unwrap_err()
                .contains("root")
        );
        assert_eq!(Scopes::parse_list("").unwrap(), Scopes::NONE);
    }

    #[test]
    fn oauth_claim_keeps_only_ours() {
        let s = Scopes::from_oauth_claim("openid sysom:diagnose read admin sysom:read");
        assert_eq!(s, Scopes::NONE.with(Scope::Diagnose).with(Scope::Read));
        assert_eq!(Scopes::from_oauth_claim(""), Scopes::NONE);
    }

    #[test]
    fn every_set_is_enumerated_once() {
        let all: Vec<_> = Scopes::every().collect();
        assert_eq!(all.len(), 8);
        assert!(all.iter().enumerate().all(|(i, s)| s.index() == i));
    }
}
