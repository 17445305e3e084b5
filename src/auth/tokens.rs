//! The tokens file: named bearer tokens with scopes, stored as SHA-256 hashes.
//!
//! One token per line, `NAME SCOPES sha256:HEX`, e.g.
//! `ci-bot sysom:read,sysom:diagnose sha256:9f86d0…`. A line holding a single word is a plain
//! token of the old format: it still works, with every scope, and `check` warns about it.
//! Several lines may carry the same name (rotation: old and new token of one principal).
//!
//! A presented token is hashed and compared, in constant time, with every stored hash, so the
//! file never needs to hold a usable token.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::scope::Scopes;

/// Name of the credential file (under `$CREDENTIALS_DIRECTORY`) holding client tokens.
pub const TOKENS_CREDENTIAL: &str = "mcp-tokens";

/// Where `token new` writes when no file is named: the packaged service's credential.
pub const DEFAULT_TOKENS_FILE: &str = "/etc/sysom-mcp/credentials/mcp-tokens";

/// Prefix of generated tokens, so secret scanners can recognise a leaked one.
const TOKEN_PREFIX: &str = "smcp_";

/// One accepted token.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub scopes: Scopes,
    hash: [u8; 32],
    /// A plain token of the old format (the file holds the token itself).
    pub plain: bool,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("plain", &self.plain)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token (256 bits from the OS generator).
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Token names end up in logs and the audit trail: keep them to a safe alphabet.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// The line `token new` appends for a token.
pub fn line_for(name: &str, scopes: Scopes, token: &str) -> String {
    format!("{name} {scopes} sha256:{}", hex::encode(hash(token)))
}

/// Parses one file. `origin` names it in errors; errors never quote a line (it may be a token).
fn parse(text: &str, origin: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = || format!("{origin}:{}", n + 1);
        match fields.as_slice() {
            [plain] => {
                let hash = hash(plain);
                entries.push(Entry {
                    // A stable name that identifies the token in the audit trail without
                    // revealing it (32 bits of the hash of a high-entropy secret).
                    name: format!("plain-{}", &hex::encode(hash)[..8]),
                    scopes: Scopes::ALL,
                    hash,
                    plain: true,
                });
            }
            [name, scopes, digest] => {
                if !valid_name(name) {
                    return Err(format!(
                        "{}: token names may only hold letters, digits and . _ - @",
                        at()
                    ));
                }
                let scopes = Scopes::parse_list(scopes).map_err(|e| format!("{}: {e}", at()))?;
                let hex_digest = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| format!("{}: the third field must be sha256:HEX", at()))?;
                let mut hash = [0u8; 32];
                hex::decode_to_slice(hex_digest, &mut hash)
                    .map_err(|_| format!("{}: sha256: must be followed by 64 hex digits", at()))?;
                entries.push(Entry {
                    name: name.to_string(),
                    scopes,
                    hash,
                    plain: false,
                });
            }
            _ => {
                return Err(format!(
                    "{}: expected `NAME SCOPES sha256:HEX` or a single plain token",
                    at()
                ));
            }
        }
    }
    Ok(entries)
}

/// The set of accepted tokens.
#[derive(Debug, Default, Clone)]
pub struct Tokens(Vec<Entry>);

impl Tokens {
    /// Reads every token file, plus `$CREDENTIALS_DIRECTORY/mcp-tokens` if present. A listed file
    /// that cannot be read or parsed is an error: a typo must not silently drop authentication.
    /// An existing but empty file adds no token; whether zero tokens is acceptable is decided by
    /// the caller (only on loopback or with an explicit opt-out).
    pub fn load(files: &[PathBuf], credentials_dir: Option<&Path>) -> Result<Self, String> {
        let mut entries = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read token file {}: {e}", file.display()))?;
            entries.extend(parse(&text, &file.display().to_string())?);
        }
        if let Some(dir) = credentials_dir {
            let path = dir.join(TOKENS_CREDENTIAL);
            if let Ok(text) = std::fs::read_to_string(&path) {
                entries.extend(parse(&text, &path.display().to_string())?);
            }
        }
        Ok(Self(entries))
    }

    /// The client tokens the configuration names, plus `$CREDENTIALS_DIRECTORY/mcp-tokens`.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, String> {
        let dir = crate::credentials::credentials_dir(&crate::config::process_env);
        Self::load(&config.auth.token_files, dir.as_deref())
    }

    pub fn from_text(text: &str) -> Result<Self, String> {
        parse(text, "tokens").map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.0
    }

    /// How many tokens are plain (old format, all scopes).
    pub fn plain_count(&self) -> usize {
        self.0.iter().filter(|e| e.plain).count()
    }

    /// The entry whose hash matches `presented`. Every entry is compared, whatever matches.
    pub fn find(&self, presented: &str) -> Option<&Entry> {
        let digest = hash(presented);
        let mut found = None;
        for e in &self.0 {
            if bool::from(e.hash.ct_eq(&digest)) && found.is_none() {
                found = Some(e);
            }
        }
        found
    }
}

/// `token list`: names, scopes and kind, one per line. Never prints a hash or a token.
pub fn describe(tokens: &Tokens) -> String {
    let mut out = String::new();
    let width = tokens
        .entries()
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(out, "{:width$}  SCOPES", "NAME");
    for e in tokens.entries() {
        let scopes = if e.scopes.is_empty() {
            "(none)".to_string()
        } else {
            e.scopes.to_string()
        };
        let note = if e.plain {
            "  (plain token of the old format: every scope; replace it with `token new`)"
        } else {
            ""
        };
        let _ = writeln!(out, "{:width$}  {scopes}{note}", e.name);
    }
    out
}

/// Appends a new token line to `file` (created with mode 0600 if missing) and returns the token.
pub fn append_new(file: &Path, name: &str, scopes: Scopes) -> Result<String, String> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if !valid_name(name) {
        return Err("token names may only hold letters, digits and . _ - @ (at most 64)".into());
    }
    if scopes.is_empty() {
        return Err("give at least one --scope (read, diagnose, admin)".into());
    }
    // Refuse to append to a file we could not parse afterwards.
    if let Ok(text) = std::fs::read_to_string(file) {
        parse(&text, &file.display().to_string())?;
    }
    let token = generate();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let needs_newline = std::fs::read(file)
        .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
        .unwrap_or(false);
    let line = format!(
        "{}{}\n",
        if needs_newline { "\n" } else { "" },
        line_for(name, scopes, &token)
    );
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::Scope;

    #[test]
    fn hashed_and_plain_lines() {
        let t = generate();
        let text = format!(
            "# comment\n{}\nold-plain-token\n\n",
            line_for("ci", Scopes::NONE.with(Scope::Read), &t)
        );
        let tokens = Tokens::from_text(&text).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.plain_count(), 1);
        let e = tokens.find(&t).unwrap();
        assert_eq!(e.name, "ci");
        assert!(e.scopes.contains(Scope::Read) && !e.scopes.contains(Scope::Admin));
        let p = tokens.find("old-plain-token").unwrap();
        assert!(p.plain && p.scopes == Scopes::ALL && p.name.starts_with("plain-"));
        assert!(tokens.find("nope").is_none());
        // The file holds the hash, not the token.
        assert!(!text.contains(&t));
    }

    #[test]
    fn same_name_twice_is_rotation() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        let text = format!(
            "{}\n{}\n",
            line_for("bot", Scopes::ALL, &a),
            line_for("bot", Scopes::ALL, &b)
        );
        let tokens = Tokens::from_text(&text).unwrap();
        assert_eq!(tokens.find(&a).unwrap().name, "bot");
        assert_eq!(tokens.find(&b).unwrap().name, "bot");
    }

    #[test]
    fn bad_lines_are_errors_that_do_not_quote_the_line() {
        for (line, want) in [
            ("a b", "expected"),
            ("bad/name sysom:read sha256:00", "names"),
            ("n sysom:root sha256:00", "unknown scope"),
            ("n read md5:00", "sha256:HEX"),
            ("n read sha256:zz", "64 hex"),
        ] {
            let err = Tokens::from_text(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
            assert!(err.starts_with("tokens:1:"), "{err}");
        }
        let err = Tokens::from_text("secret-token extra").unwrap_err();
        assert!(!err.contains("secret-token"), "{err}");
    }

    #[test]
    fn append_creates_a_private_file_and_the_token_works() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mcp-tokens");
        let t1 = append_new(&f, "alice", Scopes::NONE.with(Scope::Diagnose)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|mut h| std::io::Write::write_all(&mut h, b"legacy"))
            .unwrap();
        let t2 = append_new(&f, "bob", Scopes::ALL).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let tokens = Tokens::load(std::slice::from_ref(&f), None).unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens.find(&t1).unwrap().name, "alice");
        assert_eq!(tokens.find(&t2).unwrap().name, "bob");
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(&t1) && !text.contains(&t2));
        let listing = describe(&tokens);
        assert!(listing.contains("alice") && listing.contains("sysom:diagnose"));
        assert!(listing.contains("old format"));
        assert!(append_new(&f, "x y", Scopes::ALL).is_err());
        assert!(append_new(&f, "carol", Scopes::NONE).is_err());
    }

    #[test]
    fn credentials_directory_tokens_are_added_and_unreadable_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENS_CREDENTIAL), "cred-token\n").unwrap();
        let t = Tokens::load(&[], Some(dir.path())).unwrap();
        assert!(t.find("cred-token").is_some());
        let err = Tokens::load(&[dir.path().join("absent")], None).unwrap_err();
        assert!(err.contains("cannot read token file"), "{err}");
        let f = dir.path().join("empty");
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(Tokens::load(&[f], None).unwrap().is_empty());
    }
}
