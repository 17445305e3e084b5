//! Where the task key ring comes from: the `task-keys` file in the systemd credentials directory
//! (`LoadCredential=task-keys:/etc/sysom-mcp/credentials/task-keys`), shared by every instance
//! of a fleet, else a key generated for this boot, else one for this process.
//!
//! The boot key is derived from the SysOM AccessKey secret and the kernel's boot id, so the
//! instances of one host agree on it and it survives restarts (socket activation, idle exit,
//! the watchdog) without any file to manage; it changes at reboot or when the AccessKey does.
//! Without an AccessKey (STS tokens, the ECS role) the key is random and lives as long as the
//! process. A key file that exists but cannot be used is an error, never a silent fallback.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use super::handle::{KeyRing, MIN_KEY_LEN};

/// The credential (file) name of the key ring.
pub const KEY_FILE: &str = "task-keys";
/// The kernel's id of this boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// What the boot key is derived for, so the derivation means nothing elsewhere.
const LABEL: &str = "sysom-mcp task handle key v1";

/// Where the ring in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Boot,
    Process,
}

impl Origin {
    /// For logs and `sysom-mcp check`.
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => format!("key file {}", p.display()),
            Self::Boot => "a key derived for this boot (no task-keys credential): task handles \
                           survive restarts on this host only"
                .into(),
            Self::Process => "a random key for this process (no task-keys credential and no \
                              AccessKey): task handles do not survive a restart"
                .into(),
        }
    }
}

/// The environment variable naming a key file to use instead of the credential: a file the
/// service can re-read on reload (systemd copies credentials only at start).
pub const KEY_FILE_ENV: &str = "SYSOM_MCP_TASK_KEY_FILE";

/// Loads the ring from `explicit` (an error if it is missing) or the `task-keys` credential.
/// Either file holding no key (blank, or comments only) counts as no file: the unit stages an
/// empty `explicit` file when there is no key file to copy. `derive(label)` is the HMAC of
/// `label` under the AccessKey secret, if there is a long-lived AccessKey.
pub fn load(
    explicit: Option<&Path>,
    credentials_dir: Option<&Path>,
    derive: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Result<(KeyRing, Origin), String> {
    if let Some(path) = explicit {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read task key file {}: {e}", path.display()))?;
        if has_keys(&text) {
            return from_text(&text)
                .map(|ring| (ring, Origin::File(path.to_path_buf())))
                .map_err(|e| format!("task key file {}: {e}", path.display()));
        }
    }
    if let Some(path) = credentials_dir.map(|d| d.join(KEY_FILE)) {
        match std::fs::read_to_string(&path) {
            Ok(text) if has_keys(&text) => {
                return from_text(&text)
                    .map(|ring| (ring, Origin::File(path.clone())))
                    .map_err(|e| format!("task key file {}: {e}", path.display()));
            }
            // systemd's SetCredential= fallback is a blank line: the same as no file.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read task key file {}: {e}", path.display())),
        }
    }
    let boot_id = std::fs::read_to_string(BOOT_ID).unwrap_or_default();
    let boot_id = boot_id.trim();
    if !boot_id.is_empty()
        && let Some(key) = derive(format!("{LABEL}\0{boot_id}").as_bytes())
    {
        let ring = KeyRing::new([hex::encode(key)])?;
        return Ok((ring, Origin::Boot));
    }
    let ring = KeyRing::new([process_key()])?;
    Ok((ring, Origin::Process))
}

fn keys_of(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn has_keys(text: &str) -> bool {
    keys_of(text).next().is_some()
}

/// Parses a key file: one key per line (its text is the key), the sealing key first, blank
/// lines and `#` comments skipped. Errors name the line, never the key.
fn from_text(text: &str) -> Result<KeyRing, String> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') && line.len() < MIN_KEY_LEN {
            return Err(format!(
                "line {}: a task key must be at least {MIN_KEY_LEN} characters (make one with \
                 `openssl rand -hex 32`)",
                n + 1
            ));
        }
    }
    KeyRing::new(keys_of(text))
}

/// One random key per process, so a reload without a key file keeps the handles valid.
fn process_key() -> String {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let bytes: [u8; 32] = rand::random();
        hex::encode(bytes)
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::tasks::handle::{Claims, unix_secs};

    const K1: &str = "0123456789abcdef0123456789abcdef-one";
    const K2: &str = "0123456789abcdef0123456789abcdef-two";

    fn claims() -> Claims {
        let now = unix_secs(SystemTime::now());
        Claims {
            task_id: "T1".into(),
            region: "cn-hangzhou".into(),
            service: "memgraph".into(),
            principal: "anonymous:anonymous".into(),
            created_at: now,
            expires_at: now + 60,
            nonce: String::new(),
        }
    }

    fn no_access_key(_: &[u8]) -> Option<Vec<u8>> {
        None
    }

    #[test]
    fn the_credential_file_is_used_and_its_first_key_seals() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(KEY_FILE),
            format!("# new first\n{K2}\n{K1}\n"),
        )
        .unwrap();
        let (ring, origin) = load(None, Some(dir.path()), no_access_key).unwrap();
        assert_eq!(origin, Origin::File(dir.path().join(KEY_FILE)));
        let old = KeyRing::new([K1]).unwrap().seal(&claims());
        assert!(
            ring.open(&old, "anonymous:anonymous", SystemTime::now())
                .is_ok()
        );
        let new = ring.seal(&claims());
        assert!(
            KeyRing::new([K2])
                .unwrap()
                .open(&new, "anonymous:anonymous", SystemTime::now())
                .is_ok()
        );
    }

    #[test]
    fn a_malformed_key_file_is_an_error_naming_the_line_not_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), format!("{K1}\nshort-secret\n")).unwrap();
        let err = load(None, Some(dir.path()), no_access_key).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains(KEY_FILE), "{err}");
        assert!(!err.contains("short-secret") && !err.contains(K1), "{err}");
    }

    #[test]
    fn an_explicit_file_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = dir.path().join("staged");
        assert!(load(Some(&explicit), None, no_access_key).is_err());
        std::fs::write(&explicit, format!("{K1}\n")).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), format!("{K2}\n")).unwrap();
        let (_, origin) = load(Some(&explicit), Some(dir.path()), no_access_key).unwrap();
        assert_eq!(origin, Origin::File(explicit));
    }

    #[test]
    fn a_blank_explicit_file_is_no_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join("staged");
        std::fs::write(&staged, "").unwrap();
        std::fs::write(dir.path().join(KEY_FILE), format!("{K2}\n")).unwrap();
        let (_, origin) = load(Some(&staged), Some(dir.path()), no_access_key).unwrap();
        assert_eq!(origin, Origin::File(dir.path().join(KEY_FILE)));
        let (_, origin) = load(Some(&staged), None, no_access_key).unwrap();
        assert_eq!(origin, Origin::Process);
    }

    #[test]
    fn a_blank_credential_is_no_key_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "\n").unwrap();
        let (_, origin) = load(None, Some(dir.path()), no_access_key).unwrap();
        assert_ne!(origin, Origin::File(dir.path().join(KEY_FILE)));
    }

    #[test]
    fn the_boot_key_is_stable_and_depends_on_the_access_key() {
        if !Path::new(BOOT_ID).exists() {
            return; // not Linux
        }
        let derive = |secret: &'static str| {
            move |label: &[u8]| {
                use hmac::Mac;
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).ok()?;
                mac.update(label);
                Some(mac.finalize().into_bytes().to_vec())
            }
        };
        let (a, origin) = load(None, None, derive("secret-a")).unwrap();
        assert_eq!(origin, Origin::Boot);
        let (again, _) = load(None, None, derive("secret-a")).unwrap();
        let (b, _) = load(None, None, derive("secret-b")).unwrap();
        assert_eq!(a.key_ids(), again.key_ids());
        assert_ne!(a.key_ids(), b.key_ids());
    }

    #[test]
    fn without_anything_the_process_key_is_stable_within_the_process() {
        let (a, origin) = load(None, None, no_access_key).unwrap();
        let (b, _) = load(None, None, no_access_key).unwrap();
        assert_eq!(origin, Origin::Process);
        assert_eq!(a.key_ids(), b.key_ids());
    }
}
