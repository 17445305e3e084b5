//! local_disk: file system space and inodes, deleted-but-open files still holding space, and the
//! biggest directories of a bounded walk.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt, path::Path};

use procfs_core::process::MountInfos;
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    findings::{Findings, Severity, human_bytes, percent, round1},
    root::Root,
};

/// A file system with this little space left for unprivileged writers is full: mke2fs(8)
/// reserves 5 % of an ext4 file system for root by default, so ordinary writers already see
/// ENOSPC when 5 % remains.
pub const FS_AVAIL_CRITICAL_PCT: f64 = 5.0;
/// Used share at which a file system is worth a warning (engine's choice: the usual 90 % alert
/// line of monitoring defaults, leaving time to act before the 5 % reserve is reached).
pub const FS_USED_WARNING_PCT: f64 = 90.0;
/// Same lines for inodes.
pub const INODES_FREE_CRITICAL_PCT: f64 = 5.0;
pub const INODES_USED_WARNING_PCT: f64 = 90.0;
/// Deleted files still open and this large are worth naming (engine's choice).
pub const DELETED_OPEN_REPORT_BYTES: u64 = 1024 * 1024;
/// Bounds of the scans: every fd readlink and every directory entry costs a syscall.
const MAX_FDS: usize = 100_000;
const MAX_WALK_ENTRIES: usize = 200_000;
const TOP_DIRS: usize = 10;

/// File system types that hold no user data (pseudo file systems).
const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
    "selinuxfs",
    "devtmpfs",
    "ramfs",
    "overlay_pseudo",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "squashfs",
    "nfsd",
];

#[derive(Debug, Clone)]
pub struct Mount {
    pub mountpoint: String,
    pub source: String,
    pub fstype: String,
}

/// The mounts this process sees (/proc/self/mountinfo), without pseudo file systems and with
/// each mount point once (the last mount on top wins).
pub fn mounts(root: &Root) -> Vec<Mount> {
    let Ok(infos) = root.parse::<MountInfos>("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut by_point: BTreeMap<String, Mount> = BTreeMap::new();
    for m in infos.iter() {
        if PSEUDO_FS.contains(&m.fs_type.as_str()) {
            continue;
        }
        let mountpoint = m.mount_point.to_string_lossy().into_owned();
        by_point.insert(
            mountpoint.clone(),
            Mount {
                mountpoint,
                source: m.mount_source.clone().unwrap_or_default(),
                fstype: m.fs_type.clone(),
            },
        );
    }
    by_point.into_values().collect()
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DiskFigures {
    pub filesystems: Vec<FsUse>,
    /// Deleted files that a process still holds open (their space is freed only on close).
    pub deleted_open: Vec<DeletedOpen>,
    /// Biggest entries under `walk.path`, bytes on disk.
    pub biggest: Vec<DirSize>,
    pub walk: Option<WalkSummary>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FsUse {
    pub mountpoint: String,
    pub source: String,
    pub fstype: String,
    /// Bytes.
    pub size: u64,
    pub used: u64,
    /// Bytes available to unprivileged writers.
    pub avail: u64,
    /// used / (used + avail), as df(1) computes Use%.
    pub used_pct: f64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub inodes_used_pct: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedOpen {
    pub pid: i32,
    pub process: String,
    pub path: String,
    /// Bytes; null when the file could not be stat'ed.
    pub size: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DirSize {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WalkSummary {
    pub path: String,
    pub entries: usize,
    /// True when the entry budget ran out before the walk ended (sizes are then lower bounds).
    pub truncated: bool,
}

pub fn filesystems(root: &Root, f: &mut Findings) -> Vec<FsUse> {
    let mounts = mounts(root);
    if mounts.is_empty() {
        f.add(
            Severity::Unavailable,
            "The mount table could not be read",
            "/proc/self/mountinfo is missing or empty: mount /proc",
            "/proc/self/mountinfo",
        );
    }
    let mut out = Vec::new();
    for m in mounts {
        let Ok(s) = root.statvfs(&m.mountpoint) else {
            continue;
        };
        if s.size == 0 {
            continue;
        }
        let used = s.size.saturating_sub(s.free);
        let fs = FsUse {
            used_pct: round1(percent(used, used + s.avail)),
            inodes_used_pct: round1(percent(s.files.saturating_sub(s.files_free), s.files)),
            size: s.size,
            used,
            avail: s.avail,
            inodes: s.files,
            inodes_free: s.files_free,
            mountpoint: m.mountpoint,
            source: m.source,
            fstype: m.fstype,
        };
        judge(&fs, f);
        out.push(fs);
    }
    out
}

fn judge(fs: &FsUse, f: &mut Findings) {
    let avail_pct = percent(fs.avail, fs.size);
    let detail = format!(
        "{} used of {}, {} available to unprivileged writers ({:.1}% used); inodes {:.1}% used ({} free of {}); {} on {}",
        human_bytes(fs.used),
        human_bytes(fs.size),
        human_bytes(fs.avail),
        fs.used_pct,
        fs.inodes_used_pct,
        fs.inodes_free,
        fs.inodes,
        fs.fstype,
        fs.source
    );
    if avail_pct <= FS_AVAIL_CRITICAL_PCT {
        f.add(
            Severity::Critical,
            format!(
                "File system {} is full ({:.1}% used)",
                fs.mountpoint, fs.used_pct
            ),
            format!("{detail}; at {FS_AVAIL_CRITICAL_PCT}% left or less, writes fail with ENOSPC"),
            "statvfs(3)",
        );
        f.next(
            "local_disk",
            format!("find what fills {} (path={})", fs.mountpoint, fs.mountpoint),
        );
    } else if fs.used_pct >= FS_USED_WARNING_PCT {
        f.add(
            Severity::Warning,
            format!("File system {} is {:.1}% used", fs.mountpoint, fs.used_pct),
            detail.clone(),
            "statvfs(3)",
        );
    }
    if fs.inodes > 0 {
        let free_pct = percent(fs.inodes_free, fs.inodes);
        if free_pct <= INODES_FREE_CRITICAL_PCT {
            f.add(
                Severity::Critical,
                format!(
                    "File system {} is out of inodes ({:.1}% used)",
                    fs.mountpoint, fs.inodes_used_pct
                ),
                format!("{detail}; new files fail with ENOSPC although space may remain"),
                "statvfs(3)",
            );
        } else if fs.inodes_used_pct >= INODES_USED_WARNING_PCT {
            f.add(
                Severity::Warning,
                format!(
                    "File system {} has {:.1}% of its inodes used",
                    fs.mountpoint, fs.inodes_used_pct
                ),
                detail,
                "statvfs(3)",
            );
        }
    }
}

/// Deleted files still open, from the fd links of every process: each fd is one readlink(2);
/// no descriptor is kept open.
pub fn deleted_open(root: &Root, f: &mut Findings) -> Vec<DeletedOpen> {
    let Ok(pids) = root.pids("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut fds_seen = 0usize;
    let mut unreadable = 0usize;
    for pid in pids {
        if fds_seen >= MAX_FDS {
            break;
        }
        let dir = format!("/proc/{pid}/fd");
        let fds = match root.list(&dir) {
            Ok(fds) => fds,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        for fd in fds {
            fds_seen += 1;
            let Some(target) = root.read_link(&format!("{dir}/{fd}")) else {
                continue;
            };
            let Some(path) = target.strip_suffix(" (deleted)") else {
                continue;
            };
            if !path.starts_with('/') || path.starts_with("/memfd:") || path.starts_with("/dev/") {
                continue;
            }
            let size = std::fs::metadata(root.path(&format!("{dir}/{fd}")))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            let process = root.first_line(&format!("/proc/{pid}/comm"));
            out.push(DeletedOpen {
                pid,
                process,
                path: path.to_string(),
                size,
            });
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.size));
    // One file open in many processes (forked workers) is one file.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|d| seen.insert((d.path.clone(), d.size)));
    let total: u64 = out.iter().filter_map(|d| d.size).sum();
    if let Some(big) = out
        .first()
        .filter(|d| d.size.unwrap_or(0) >= DELETED_OPEN_REPORT_BYTES)
    {
        f.add(
            Severity::Warning,
            format!(
                "{} deleted file(s) still open hold {}",
                out.len(),
                human_bytes(total)
            ),
            format!(
                "largest: {} ({}) held by {} (pid {}); the space returns only when the process closes it or exits",
                big.path,
                human_bytes(big.size.unwrap_or(0)),
                big.process,
                big.pid
            ),
            "/proc/PID/fd",
        );
    }
    if unreadable > 0 && root.is_live() && !super::root::running_as_root() {
        f.add(
            Severity::Unavailable,
            format!("Open files of {unreadable} process(es) could not be read"),
            "Other users' /proc/PID/fd are readable only by root: run as root or install the local-diagnosis drop-in",
            "/proc/PID/fd",
        );
    }
    out.truncate(20);
    out
}

/// Bytes on disk under each entry of `path`, by a walk bounded to [`MAX_WALK_ENTRIES`] that does
/// not cross into other file systems. Hand-written: `walkdir` would do the iteration, but the
/// per-child sums and the budget are the whole job here.
pub fn biggest(root: &Root, path: &str) -> (Vec<DirSize>, WalkSummary) {
    let base = root.path(path);
    let dev = std::fs::symlink_metadata(&base).map(|m| m.dev()).ok();
    let mut budget = MAX_WALK_ENTRIES;
    let mut sizes = Vec::new();
    if let (Some(dev), Ok(entries)) = (dev, std::fs::read_dir(&base)) {
        for e in entries.flatten() {
            if budget == 0 {
                break;
            }
            let bytes = du(&e.path(), dev, &mut budget);
            let name = e.file_name().to_string_lossy().into_owned();
            sizes.push(DirSize {
                path: format!("{}/{}", path.trim_end_matches('/'), name),
                bytes,
            });
        }
    }
    sizes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
    sizes.truncate(TOP_DIRS);
    (
        sizes,
        WalkSummary {
            path: path.to_string(),
            entries: MAX_WALK_ENTRIES - budget,
            truncated: budget == 0,
        },
    )
}

fn du(path: &Path, dev: u64, budget: &mut usize) -> u64 {
    if *budget == 0 {
        return 0;
    }
    *budget -= 1;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.dev() != dev {
        return 0;
    }
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return own;
    };
    own + entries
        .flatten()
        .map(|e| du(&e.path(), dev, budget))
        .sum::<u64>()
}

pub fn collect(root: &Root, path: Option<&str>) -> (Findings, DiskFigures) {
    let mut f = Findings::default();
    let filesystems = filesystems(root, &mut f);
    if let Some(fullest) = filesystems
        .iter()
        .max_by(|a, b| a.used_pct.total_cmp(&b.used_pct))
    {
        f.add(
            Severity::Info,
            format!(
                "{} file system(s); the fullest is {} at {:.1}%",
                filesystems.len(),
                fullest.mountpoint,
                fullest.used_pct
            ),
            format!(
                "{} used of {}, {} available",
                human_bytes(fullest.used),
                human_bytes(fullest.size),
                human_bytes(fullest.avail)
            ),
            "statvfs(3)",
        );
    }
    let deleted_open = deleted_open(root, &mut f);
    // Walk the path asked for, else the fullest real file system when it is in trouble.
    let walk_path = path.map(str::to_string).or_else(|| {
        filesystems
            .iter()
            .filter(|fs| fs.fstype != "tmpfs" && fs.used_pct >= FS_USED_WARNING_PCT)
            .max_by(|a, b| a.used_pct.total_cmp(&b.used_pct))
            .map(|fs| fs.mountpoint.clone())
    });
    let (biggest, walk) = match walk_path {
        Some(p) => {
            let (b, w) = biggest(root, &p);
            if let Some(top) = b.first() {
                f.add(
                    Severity::Info,
                    format!(
                        "Biggest entry under {}: {} ({})",
                        w.path,
                        top.path,
                        human_bytes(top.bytes)
                    ),
                    format!(
                        "{} entries walked{}",
                        w.entries,
                        if w.truncated {
                            " (budget reached: sizes are lower bounds)"
                        } else {
                            ""
                        }
                    ),
                    "lstat(2)",
                );
            }
            (b, Some(w))
        }
        None => (Vec::new(), None),
    };
    (
        f,
        DiskFigures {
            filesystems,
            deleted_open,
            biggest,
            walk,
        },
    )
}
