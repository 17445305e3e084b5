//! Sealed task handles: the SysOM task id, region, service, the principal that created the
//! task and an expiry, authenticated with HMAC-SHA256 so that any instance holding the key can
//! answer for the task and nobody else can mint or alter one.
//!
//! Format: `v1.<key id>.<claims>.<tag>` with the claims as base64url JSON and the tag the
//! base64url HMAC-SHA256 of everything before it. The claims are authenticated, not encrypted:
//! they hold nothing the client does not already know (it chose the region and service, and
//! the tool result shows the task id).
//!
//! Keys come as a ring: the first key seals, every key opens, so a key rotates by prepending
//! the new one, waiting for the old handles to expire, then dropping the old one.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";
/// Shortest key accepted, in bytes: 128 bits of entropy even for hex-encoded keys.
pub const MIN_KEY_LEN: usize = 32;

/// What a handle says about its task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// SysOM's task id.
    #[serde(rename = "t")]
    pub task_id: String,
    #[serde(rename = "r")]
    pub region: String,
    /// The diagnosis service (tool), e.g. memgraph.
    #[serde(rename = "s")]
    pub service: String,
    /// Who created the task; only the same principal may use the handle.
    #[serde(rename = "p")]
    pub principal: String,
    /// Unix seconds when the task was created (its diagnosis deadline counts from here).
    #[serde(rename = "c")]
    pub created_at: u64,
    /// Unix seconds after which the handle is refused.
    #[serde(rename = "e")]
    pub expires_at: u64,
    /// Random, so that two callers sharing one SysOM task (coalesced in the same second) hold
    /// different handles and cancelling one does not cancel the other.
    #[serde(rename = "n", default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
}

/// Why a handle was refused. The text never repeats the handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the task handle is malformed")]
    Malformed,
    #[error("the task handle was not issued by this service (unknown key or bad signature)")]
    Forged,
    #[error("the task handle has expired")]
    Expired,
    #[error("the task handle belongs to another principal")]
    ForeignPrincipal,
}

struct Key {
    id: String,
    secret: Vec<u8>,
}

/// The keys handles are sealed and opened with.
pub struct KeyRing {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

fn key_id(secret: &[u8]) -> String {
    // A public name for the key (8 hex digits of its SHA-256), so opening tries one key.
    hex::encode(&Sha256::digest(secret)[..4])
}

impl KeyRing {
    /// A ring from keys, the sealing one first. Each key must be at least [`MIN_KEY_LEN`] bytes.
    pub fn new<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Result<Self, String> {
        let keys: Vec<Key> = keys
            .into_iter()
            .map(|k| {
                let secret = k.as_ref().to_vec();
                if secret.len() < MIN_KEY_LEN {
                    return Err(format!("a task key is shorter than {MIN_KEY_LEN} bytes"));
                }
                Ok(Key {
                    id: key_id(&secret),
                    secret,
                })
            })
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Err("the task key ring is empty".into());
        }
        Ok(Self { keys })
    }

    /// Reads a key file: one key per line (its text is the key), blank lines and `#` comments
    /// skipped, the sealing key first.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the task key file {}: {e}", path.display()))?;
        Self::new(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The public ids of the keys, the sealing one first (for logs; never the keys).
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    fn mac(key: &Key, signed: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&key.secret).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        mac
    }

    /// Seals `claims` with the first key.
    pub fn seal(&self, claims: &Claims) -> String {
        let key = &self.keys[0];
        let body = B64.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signed = format!("{VERSION}.{}.{body}", key.id);
        let tag = B64.encode(Self::mac(key, &signed).finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// Opens a handle for `principal` at time `now`: the signature must verify with a key of
    /// the ring, the handle must not have expired and must belong to `principal`.
    pub fn open(&self, handle: &str, principal: &str, now: SystemTime) -> Result<Claims, Refused> {
        let (signed, tag) = handle.rsplit_once('.').ok_or(Refused::Malformed)?;
        let mut parts = signed.split('.');
        let (Some(version), Some(kid), Some(body), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refused::Malformed);
        };
        if version != VERSION {
            return Err(Refused::Malformed);
        }
        let tag = B64.decode(tag).map_err(|_| Refused::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or(Refused::Forged)?;
        // Constant-time comparison (hmac's verify_slice).
        Self::mac(key, signed)
            .verify_slice(&tag)
            .map_err(|_| Refused::Forged)?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Refused::Malformed)?;
        if unix_secs(now) >= claims.expires_at {
            return Err(Refused::Expired);
        }
        if claims.principal != principal {
            return Err(Refused::ForeignPrincipal);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The expiry for a handle issued at `now` that lives `ttl`.
pub fn expiry(now: SystemTime, ttl: Duration) -> u64 {
    unix_secs(now).saturating_add(ttl.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "first-key-0123456789abcdef0123456789";
    const K2: &str = "second-key-0123456789abcdef012345678";

    fn claims(now: SystemTime) -> Claims {
        Claims {
            task_id: "T123".into(),
            region: "cn-hangzhou".into(),
            service: "memgraph".into(),
            principal: "alice".into(),
            created_at: unix_secs(now),
            expires_at: expiry(now, Duration::from_secs(3600)),
            nonce: String::new(),
        }
    }

    #[test]
    fn a_sealed_handle_opens_for_its_principal() {
        let now = SystemTime::now();
        let ring = KeyRing::new([K1]).unwrap();
        let handle = ring.seal(&claims(now));
        assert_eq!(ring.open(&handle, "alice", now), Ok(claims(now)));
    }

    #[test]
    fn another_principal_is_refused() {
        let now = SystemTime::now();
        let ring = KeyRing::new([K1]).unwrap();
        let handle = ring.seal(&claims(now));
        assert_eq!(
            ring.open(&handle, "mallory", now),
            Err(Refused::ForeignPrincipal)
        );
    }

    #[test]
    fn an_expired_handle_is_refused() {
        let now = SystemTime::now();
        let ring = KeyRing::new([K1]).unwrap();
        let handle = ring.seal(&claims(now));
        let later = now + Duration::from_secs(3601);
        assert_eq!(ring.open(&handle, "alice", later), Err(Refused::Expired));
    }

    #[test]
    fn a_tampered_handle_is_refused() {
        let now = SystemTime::now();
        let ring = KeyRing::new([K1]).unwrap();
        let handle = ring.seal(&claims(now));
        let mut other = claims(now);
        other.task_id = "T999".into();
        let forged_body = B64.encode(serde_json::to_vec(&other).unwrap());
        let parts: Vec<&str> = handle.split('.').collect();
        let tampered = format!("{}.{}.{forged_body}.{}", parts[0], parts[1], parts[3]);
        assert_eq!(ring.open(&tampered, "alice", now), Err(Refused::Forged));
        // Changing one character inside the tag also fails (not the last one, whose low bits
        // are padding).
        let mut bytes = handle.into_bytes();
        let inside = bytes.len() - 10;
        bytes[inside] = if bytes[inside] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(ring.open(&flipped, "alice", now), Err(Refused::Forged));
    }

    #[test]
    fn a_handle_from_another_key_is_refused() {
        let now = SystemTime::now();
        let theirs = KeyRing::new([K2]).unwrap().seal(&claims(now));
        let ours = KeyRing::new([K1]).unwrap();
        assert_eq!(ours.open(&theirs, "alice", now), Err(Refused::Forged));
    }

    #[test]
    fn rotation_first_key_seals_all_keys_open() {
        let now = SystemTime::now();
        let old = KeyRing::new([K1]).unwrap().seal(&claims(now));
        let rotated = KeyRing::new([K2, K1]).unwrap();
        assert_eq!(rotated.open(&old, "alice", now), Ok(claims(now)));
        let new = rotated.seal(&claims(now));
        assert!(new.contains(&key_id(K2.as_bytes())));
        assert_eq!(
            KeyRing::new([K1]).unwrap().open(&new, "alice", now),
            Err(Refused::Forged),
            "a ring without the new key cannot open new handles"
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let ring = KeyRing::new([K1]).unwrap();
        let now = SystemTime::now();
        for bad in ["", "x", "v1.a.b", "v2.a.b.c", "v1.a.b.c.d", "v1.a.b.!!"] {
            assert_eq!(
                ring.open(bad, "alice", now),
                Err(Refused::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn short_keys_and_empty_rings_are_rejected() {
        assert!(KeyRing::new(["short"]).is_err());
        assert!(KeyRing::new(Vec::<String>::new()).is_err());
    }

    #[test]
    fn key_file_skips_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task-keys");
        std::fs::write(&path, format!("# newest first\n{K2}\n\n{K1}\n")).unwrap();
        let ring = KeyRing::from_file(&path).unwrap();
        assert_eq!(ring.keys.len(), 2);
        assert_eq!(ring.keys[0].id, key_id(K2.as_bytes()));
        assert!(
            !format!("{ring:?}").contains(K1),
            "Debug must not show keys"
        );
    }
}
