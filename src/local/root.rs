//! The directory the engine reads kernel interfaces under: `/` on a live host, a recorded tree in
//! tests. Every read goes through here, so a missing or forbidden file becomes an [`Unreadable`]
//! that the tool turns into a finding instead of failing as a whole.

use std::{
    fmt,
    io::{ErrorKind, Read},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use procfs_core::FromRead;

/// Why an input could not be read.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The path as the kernel names it (without the root prefix).
    pub path: String,
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Unreadable {
    /// How to make the input readable, by where it lives and why it failed.
    pub fn remedy(&self) -> &'static str {
        let p = self.path.as_str();
        if p == "/dev/kmsg" {
            return match self.kind {
                ErrorKind::PermissionDenied => {
                    "Reading the kernel log needs CAP_SYSLOG (root) and, under systemd, \
                     ProtectKernelLogs=no: install the local-diagnosis drop-in \
                     (systemd/local-diagnosis.conf)"
                }
                _ => {
                    "The kernel log device is missing (a container without /dev/kmsg?): \
                     bind-mount /dev/kmsg or run on the host"
                }
            };
        }
        if p.starts_with("/proc/pressure") {
            return "Pressure stall information needs a kernel with CONFIG_PSI=y; \
                    some distributions also need psi=1 on the kernel command line";
        }
        if p.starts_with("/sys/fs/cgroup") {
            return "Per-cgroup figures need the unified cgroup v2 hierarchy mounted at \
                    /sys/fs/cgroup (systemd.unified_cgroup_hierarchy=1); memory figures \
                    are also read from a cgroup v1 memory controller at /sys/fs/cgroup/memory";
        }
        if p.starts_with("/proc/") && matches!(self.kind, ErrorKind::PermissionDenied) {
            return "Other users' processes are readable only by root (CAP_SYS_PTRACE for \
                    stacks and io); under systemd install the local-diagnosis drop-in, which \
                    lifts ProtectProc=invisible";
        }
        match self.kind {
            ErrorKind::NotFound => {
                "This kernel does not provide it (older kernel or feature disabled)"
            }
            ErrorKind::PermissionDenied => {
                "Run the server as root, or install the local-diagnosis drop-in"
            }
            _ => "Check that /proc and /sys are mounted",
        }
    }
}

/// Recorded `statvfs` answers of a fixture tree: a fixture cannot fake a file system's size.
#[derive(Debug, Clone)]
pub struct RecordedStatvfs {
    pub mountpoint: String,
    pub block_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
}

/// A file system's size and use, from statvfs(3).
#[derive(Debug, Clone, Copy)]
pub struct FsSpace {
    pub size: u64,
    pub free: u64,
    pub avail: u64,
    pub files: u64,
    pub files_free: u64,
}

#[derive(Debug, Clone)]
pub struct Root {
    base: PathBuf,
    /// Later samples of a recorded tree, in order; empty on a live host, where a second read of
    /// the same file is the later sample.
    samples: Vec<PathBuf>,
    /// Recorded statvfs answers; `None` means ask the kernel.
    recorded_statvfs: Option<Vec<RecordedStatvfs>>,
    /// Which sample is being read (0 = the base tree).
    current: usize,
}

/// The file under a recorded tree that holds its statvfs answers, one mount a line:
/// `mountpoint block_size blocks blocks_free blocks_avail files files_free`.
pub const RECORDED_STATVFS: &str = "statvfs.recorded";

impl Root {
    /// The live host, or a tree mirroring it under `base`.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self {
            base: base.into(),
            samples: Vec::new(),
            recorded_statvfs: None,
            current: 0,
        }
    }

    /// A recorded tree: `base` is the first sample, `base/../<name>.sample-N` the later ones
    /// when they exist, and statvfs answers come from [`RECORDED_STATVFS`].
    pub fn recorded(base: impl Into<PathBuf>) -> Self {
        let base: PathBuf = base.into();
        let mut samples = Vec::new();
        for n in 1.. {
            let mut name = base.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".sample-{n}"));
            let p = base.with_file_name(name);
            if !p.is_dir() {
                break;
            }
            samples.push(p);
        }
        let recorded = std::fs::read_to_string(base.join(RECORDED_STATVFS))
            .map(|text| parse_recorded_statvfs(&text))
            .unwrap_or_default();
        Self {
            base,
            samples,
            recorded_statvfs: Some(recorded),
            current: 0,
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn is_live(&self) -> bool {
        self.recorded_statvfs.is_none()
    }

    /// Moves to the next sample of a recorded tree (a no-op on a live host).
    pub fn advance(&mut self) {
        if self.current < self.samples.len() {
            self.current += 1;
        }
    }

    /// The host path of `path` (an absolute kernel path such as `/proc/meminfo`).
    pub fn path(&self, path: &str) -> PathBuf {
        let rel = path.trim_start_matches('/');
        if self.current > 0 {
            let p = self.samples[self.current - 1].join(rel);
            if p.exists() {
                return p;
            }
        }
        self.base.join(rel)
    }

    fn unreadable(path: &str, e: &std::io::Error) -> Unreadable {
        Unreadable {
            path: path.to_string(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    pub fn read(&self, path: &str) -> Result<String, Unreadable> {
        std::fs::read_to_string(self.path(path)).map_err(|e| Self::unreadable(path, &e))
    }

    /// Reads and parses with a procfs-core parser.
    pub fn parse<T: FromRead>(&self, path: &str) -> Result<T, Unreadable> {
        let bytes = std::fs::read(self.path(path)).map_err(|e| Self::unreadable(path, &e))?;
        T::from_read(bytes.as_slice()).map_err(|e| Unreadable {
            path: path.to_string(),
            kind: ErrorKind::InvalidData,
            message: format!("unexpected format: {e}"),
        })
    }

    /// A file holding one number (cgroup and sysfs attributes); `max` reads as `None`.
    pub fn read_u64(&self, path: &str) -> Option<u64> {
        let text = self.read(path).ok()?;
        text.trim().parse().ok()
    }

    /// Numeric entries of a directory (pids under /proc, tids under /proc/PID/task).
    pub fn pids(&self, dir: &str) -> Result<Vec<i32>, Unreadable> {
        let mut pids: Vec<i32> = self
            .list(dir)?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// Names in a directory, sorted. A later sample of a recorded tree holds only what changed,
    /// so its entries are merged with the base tree's.
    pub fn list(&self, dir: &str) -> Result<Vec<String>, Unreadable> {
        let rel = dir.trim_start_matches('/');
        let mut dirs = vec![self.base.join(rel)];
        if self.current > 0 {
            dirs.push(self.samples[self.current - 1].join(rel));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut first_err = None;
        let mut any = false;
        for d in dirs {
            match std::fs::read_dir(&d) {
                Ok(entries) => {
                    any = true;
                    names.extend(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match (any, first_err) {
            (false, Some(e)) => Err(Self::unreadable(dir, &e)),
            _ => Ok(names.into_iter().collect()),
        }
    }

    pub fn read_link(&self, path: &str) -> Option<String> {
        std::fs::read_link(self.path(path))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// Size and use of the file system mounted at `mountpoint`.
    pub fn statvfs(&self, mountpoint: &str) -> Result<FsSpace, Unreadable> {
        if let Some(recorded) = &self.recorded_statvfs {
            let r = recorded
                .iter()
                .find(|r| r.mountpoint == mountpoint)
                .ok_or_else(|| Unreadable {
                    path: mountpoint.to_string(),
                    kind: ErrorKind::NotFound,
                    message: "not recorded in this tree".into(),
                })?;
            return Ok(FsSpace {
                size: r.blocks * r.block_size,
                free: r.blocks_free * r.block_size,
                avail: r.blocks_avail * r.block_size,
                files: r.files,
                files_free: r.files_free,
            });
        }
        let st = nix::sys::statvfs::statvfs(&self.path(mountpoint)).map_err(|e| Unreadable {
            path: mountpoint.to_string(),
            kind: std::io::Error::from(e).kind(),
            message: e.desc().to_string(),
        })?;
        let frsize = st.fragment_size() as u64;
        Ok(FsSpace {
            size: st.blocks() as u64 * frsize,
            free: st.blocks_free() as u64 * frsize,
            avail: st.blocks_available() as u64 * frsize,
            files: st.files() as u64,
            files_free: st.files_free() as u64,
        })
    }

    /// The kernel log records still in the ring buffer, from `/dev/kmsg`.
    ///
    /// Opened non-blocking so the read stops at the end of the buffer instead of waiting for new
    /// records; each read(2) of the device returns one record. A recorded tree holds the same
    /// records as a plain file.
    pub fn kernel_log(&self) -> Result<Vec<KmsgRecord>, Unreadable> {
        const PATH: &str = "/dev/kmsg";
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(self.path(PATH))
            .map_err(|e| Self::unreadable(PATH, &e))?;
        let mut all = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        // Bounded: the ring buffer is at most a few MiB; stop well past that.
        while all.len() < 64 * 1024 * 1024 {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // A record overwritten while reading: carry on with the next one.
                Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Self::unreadable(PATH, &e)),
            }
        }
        Ok(parse_kmsg(&String::from_utf8_lossy(&all)))
    }

    /// Boot time, Unix seconds (btime of /proc/stat), to turn kernel-log timestamps into dates.
    pub fn boot_time(&self) -> Option<u64> {
        let stat = self.read("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn first_line(&self, path: &str) -> String {
        self.read(path)
            .map(|s| s.lines().next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    }
}

/// Whether this process runs as root (owner of its own /proc entry).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn parse_recorded_statvfs(text: &str) -> Vec<RecordedStatvfs> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f.get(i)?.parse::<u64>().ok();
            Some(RecordedStatvfs {
                mountpoint: f.first()?.to_string(),
                block_size: n(1)?,
                blocks: n(2)?,
                blocks_free: n(3)?,
                blocks_avail: n(4)?,
                files: n(5)?,
                files_free: n(6)?,
            })
        })
        .collect()
}

/// One kernel log record.
#[derive(Debug, Clone)]
pub struct KmsgRecord {
    /// syslog priority (0 emerg … 7 debug).
    pub level: u8,
    /// Microseconds since boot.
    pub usec: u64,
    pub message: String,
}

/// Parses `/dev/kmsg` records: `prio,seq,usec,flags[,...];message`, continuation lines (the
/// key=value dictionary) start with a space and are skipped. Hand-written: no crate parses it.
pub fn parse_kmsg(text: &str) -> Vec<KmsgRecord> {
    text.lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| {
            let (head, message) = l.split_once(';')?;
            let mut f = head.split(',');
            let prio: u32 = f.next()?.parse().ok()?;
            let _seq = f.next()?;
            let usec = f.next()?.parse().ok()?;
            Some(KmsgRecord {
                level: (prio & 7) as u8,
                usec,
                message: message.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records_and_continuations() {
        let recs = parse_kmsg(
            "6,1,100,-;first\n SUBSYSTEM=x\n3,2,2000000,-,caller=T1;second; with semicolon\n",
        );
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].level, 3);
        assert_eq!(recs[1].usec, 2_000_000);
        assert_eq!(recs[1].message, "second; with semicolon");
    }

    #[test]
    fn missing_file_is_unreadable_with_a_remedy() {
        let root = Root::new("/nonexistent-root");
        let err = root.read("/proc/pressure/memory").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.remedy().contains("CONFIG_PSI"));
    }
}
