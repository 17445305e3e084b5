//! local_memgraph: where the memory went — meminfo breakdown, slab, page cache, shmem/tmpfs,
//! hugepages, top processes by RSS (PSS for the top few), cgroup v2 per service and pod, PSI.

use procfs_core::{
    Meminfo,
    process::{Stat, Status},
};
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    cgroup, disk,
    findings::{Findings, Severity, human_bytes, percent},
    psi::{self, Psi},
    root::{Root, Unreadable},
};

/// MemAvailable below this share of MemTotal is memory pressure (SysOM's own local classifier,
/// aliyun/alibabacloud-aiops-skills `sysom_cli/memory/lib/classify_engine.py`).
pub const MEM_AVAILABLE_LOW_PCT: f64 = 8.0;
/// Free swap below this share of SwapTotal (same source).
pub const SWAP_FREE_LOW_PCT: f64 = 15.0;
/// A cgroup using this share of its memory.max is close to an OOM kill: reclaim can no longer
/// keep up once anon memory dominates (engine's choice, leaving headroom for one allocation burst).
pub const CGROUP_NEAR_LIMIT_PCT: f64 = 90.0;
/// Anonymous share of a cgroup's memory above which reclaim cannot free it (engine's choice:
/// file pages below 10 % leave reclaim nothing to take, so growth means an OOM kill).
pub const CGROUP_ANON_DOMINANT_PCT: f64 = 80.0;
/// Unreclaimable slab above this share of MemTotal suggests a kernel memory leak (engine's
/// choice; a healthy host keeps SUnreclaim to a few percent).
pub const SUNRECLAIM_HIGH_PCT: f64 = 10.0;
/// Processes listed by RSS; PSS is read (smaps_rollup walks every mapping) only for the first few.
const TOP_PROCESSES: usize = 10;
const PSS_FOR: usize = 5;
/// Resident memory whose PSS is read by default, summed over the processes read. The kernel
/// builds smaps_rollup by walking the page tables of every mapping: measured 0.1–0.7 µs per
/// resident page on the 2-core development VM, about 0.1 s per GiB, so one compiler of 1 GiB
/// costs more than the whole 50 ms snapshot target. Within 64 MiB the walks take ~10 ms; bigger
/// processes keep `pss: null` unless the call asks for `pss: true` (engine's choice).
pub const PSS_RSS_BUDGET: u64 = 64 << 20;
const TOP_CGROUPS: usize = 10;

#[derive(Debug, Serialize, JsonSchema)]
pub struct MemoryFigures {
    /// /proc/meminfo, bytes.
    pub meminfo: Option<MeminfoFigures>,
    /// /proc/pressure/memory.
    pub psi: Option<Psi>,
    pub top_processes: Vec<ProcessMemory>,
    /// cgroups with the most memory charged (services, pods): cgroup v2, or v1's memory
    /// controller where the host still mounts it.
    pub cgroups: Vec<CgroupMemory>,
    pub hugepages: Vec<HugepagePool>,
    /// tmpfs mounts and what they hold (tmpfs pages are shmem: not freed by reclaim).
    pub tmpfs: Vec<TmpfsUse>,
    pub processes_scanned: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MeminfoFigures {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub page_cache: u64,
    pub shmem: u64,
    pub anon: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
    pub kernel_stack: u64,
    pub page_tables: u64,
    pub vmalloc_used: u64,
    pub hugetlb: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub dirty: u64,
    pub committed_as: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProcessMemory {
    pub pid: i32,
    pub name: String,
    /// Resident set size, bytes.
    pub rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub swap: u64,
    /// Proportional set size, bytes: read for the first five while their RSS fits 64 MiB
    /// (smaps_rollup walks page tables, ~0.1 s per GiB), for all five with `pss: true`; null
    /// when not read.
    pub pss: Option<u64>,
    pub cgroup: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CgroupMemory {
    pub path: String,
    /// memory.current (v1: memory.usage_in_bytes), bytes.
    pub current: u64,
    /// memory.max (v1: memory.limit_in_bytes), bytes; null when unlimited.
    pub max: Option<u64>,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    /// memory.events (v1: memory.oom_control) oom_kill.
    pub oom_kills: u64,
    /// memory.events max (v1: memory.failcnt): times usage hit the limit.
    pub max_events: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HugepagePool {
    pub size_kib: u64,
    pub total: u64,
    pub free: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TmpfsUse {
    pub mountpoint: String,
    pub used: u64,
    pub size: u64,
}

pub fn meminfo(root: &Root, f: &mut Findings) -> Option<MeminfoFigures> {
    match root.parse::<Meminfo>("/proc/meminfo") {
        Ok(m) => Some(MeminfoFigures {
            total: m.mem_total,
            free: m.mem_free,
            available: m.mem_available.unwrap_or(m.mem_free + m.cached),
            buffers: m.buffers,
            page_cache: m.cached,
            shmem: m.shmem.unwrap_or(0),
            anon: m.anon_pages.unwrap_or(0),
            slab_reclaimable: m.s_reclaimable.unwrap_or(0),
            slab_unreclaimable: m.s_unreclaim.unwrap_or(0),
            kernel_stack: m.kernel_stack.unwrap_or(0),
            page_tables: m.page_tables.unwrap_or(0),
            vmalloc_used: m.vmalloc_used,
            hugetlb: m.hugetlb.unwrap_or(0),
            swap_total: m.swap_total,
            swap_free: m.swap_free,
            dirty: m.dirty,
            committed_as: m.committed_as,
        }),
        Err(e) => {
            f.unavailable("Memory totals", &e);
            None
        }
    }
}

/// Findings on the host-wide figures; shared with triage.
pub fn judge_meminfo(m: &MeminfoFigures, f: &mut Findings) {
    let avail_pct = percent(m.available, m.total);
    if avail_pct < MEM_AVAILABLE_LOW_PCT {
        f.add(
            Severity::Critical,
            format!("Memory nearly exhausted: {:.1}% available", avail_pct),
            format!(
                "MemAvailable {} of MemTotal {} (below {MEM_AVAILABLE_LOW_PCT}%); anon {}, page cache {}, shmem {}, unreclaimable slab {}",
                human_bytes(m.available),
                human_bytes(m.total),
                human_bytes(m.anon),
                human_bytes(m.page_cache),
                human_bytes(m.shmem),
                human_bytes(m.slab_unreclaimable)
            ),
            "/proc/meminfo",
        );
        f.next(
            "local_oomcheck",
            "memory is nearly exhausted; see whether the OOM killer has run",
        );
    } else {
        f.add(
            Severity::Info,
            format!("{:.1}% of memory available", avail_pct),
            format!(
                "MemAvailable {} of {}; anon {}, page cache {}, shmem {}, slab {} (unreclaimable {})",
                human_bytes(m.available),
                human_bytes(m.total),
                human_bytes(m.anon),
                human_bytes(m.page_cache),
                human_bytes(m.shmem),
                human_bytes(m.slab_reclaimable + m.slab_unreclaimable),
                human_bytes(m.slab_unreclaimable)
            ),
            "/proc/meminfo",
        );
    }
    if m.swap_total > 0 {
        let free_pct = percent(m.swap_free, m.swap_total);
        if free_pct < SWAP_FREE_LOW_PCT {
            f.add(
                Severity::Warning,
                format!("Swap nearly full: {:.1}% free", free_pct),
                format!(
                    "SwapFree {} of SwapTotal {} (below {SWAP_FREE_LOW_PCT}%)",
                    human_bytes(m.swap_free),
                    human_bytes(m.swap_total)
                ),
                "/proc/meminfo",
            );
        }
    }
    let sunr_pct = percent(m.slab_unreclaimable, m.total);
    if sunr_pct > SUNRECLAIM_HIGH_PCT {
        f.add(
            Severity::Warning,
            format!("Unreclaimable slab holds {:.1}% of memory", sunr_pct),
            format!(
                "SUnreclaim {} of MemTotal {} (above {SUNRECLAIM_HIGH_PCT}%): kernel objects that reclaim cannot free; a steady rise is a kernel memory leak (see /proc/slabinfo as root)",
                human_bytes(m.slab_unreclaimable),
                human_bytes(m.total)
            ),
            "/proc/meminfo",
        );
    }
}

/// Top processes by RSS: every process's /proc/PID/stat (one small file each, opened and closed
/// in turn; the kernel formats it about four times faster than status) ranks them, and only the
/// top `n` have their /proc/PID/status read for the anon/file/shmem/swap split.
pub fn top_processes(
    root: &Root,
    hierarchy: cgroup::Memory,
    f: &mut Findings,
    n: usize,
    all_pss: bool,
) -> (Vec<ProcessMemory>, usize) {
    let pids = match root.pids("/proc") {
        Ok(p) => p,
        Err(e) => {
            f.unavailable("The process list", &e);
            return (Vec::new(), 0);
        }
    };
    let page = page_size();
    let mut ranked: Vec<(i32, String, u64)> = pids
        .iter()
        .filter_map(|&pid| {
            let s: Stat = root.parse(&format!("/proc/{pid}/stat")).ok()?;
            Some((pid, s.comm, s.rss * page))
        })
        .collect();
    let scanned = ranked.len();
    ranked.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    ranked.truncate(n);
    let kib = |v: Option<u64>| v.unwrap_or(0) * 1024;
    let mut procs: Vec<ProcessMemory> = ranked
        .into_iter()
        .map(
            |(pid, comm, rss)| match root.parse::<Status>(&format!("/proc/{pid}/status")) {
                Ok(s) => ProcessMemory {
                    pid,
                    name: s.name,
                    rss: kib(s.vmrss),
                    rss_anon: kib(s.rssanon),
                    rss_file: kib(s.rssfile),
                    rss_shmem: kib(s.rssshmem),
                    swap: kib(s.vmswap),
                    pss: None,
                    cgroup: None,
                },
                // exited between the two reads
                Err(_) => ProcessMemory {
                    pid,
                    name: comm,
                    rss,
                    rss_anon: 0,
                    rss_file: 0,
                    rss_shmem: 0,
                    swap: 0,
                    pss: None,
                    cgroup: None,
                },
            },
        )
        .collect();
    procs.sort_by(|a, b| b.rss.cmp(&a.rss).then(a.pid.cmp(&b.pid)));
    let mut walked = 0u64;
    for (i, p) in procs.iter_mut().enumerate() {
        p.cgroup = hierarchy.of_pid(root, p.pid);
        if i < PSS_FOR && (all_pss || walked + p.rss <= PSS_RSS_BUDGET) {
            walked += p.rss;
            p.pss = pss(root, p.pid);
        }
    }
    (procs, scanned)
}

/// Bytes per page, for the rss field of /proc/PID/stat: AT_PAGESZ of this process's auxiliary
/// vector (pairs of native-endian u64 type and value; no sysconf call, which would need unsafe).
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        const AT_PAGESZ: u64 = 6;
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        auxv.chunks_exact(16)
            .find_map(|e| {
                let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
                (word(&e[..8]) == AT_PAGESZ).then(|| word(&e[8..]))
            })
            .filter(|p| *p > 0)
            .unwrap_or(4096)
    })
}

fn pss(root: &Root, pid: i32) -> Option<u64> {
    let text = root.read(&format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| {
        let v = l.strip_prefix("Pss:")?;
        Some(v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
    })
}

pub fn cgroups(
    root: &Root,
    hierarchy: &Result<cgroup::Memory, Unreadable>,
    f: &mut Findings,
) -> Vec<CgroupMemory> {
    let hierarchy = match hierarchy {
        Ok(h) => *h,
        Err(e) => {
            f.unavailable("cgroup memory accounting", e);
            return Vec::new();
        }
    };
    let mut groups: Vec<CgroupMemory> = hierarchy
        .walk(root)
        .into_iter()
        .filter(|cg| cg != "/")
        .filter_map(|cg| {
            let m = hierarchy.read(root, &cg)?;
            Some(CgroupMemory {
                current: m.current,
                max: m.max,
                anon: m.anon,
                file: m.file,
                shmem: m.shmem,
                oom_kills: m.oom_kill,
                max_events: m.limit_hits,
                path: cg,
            })
        })
        .collect();
    for g in &groups {
        let Some(max) = g.max else { continue };
        let use_pct = percent(g.current, max);
        let anon_pct = percent(g.anon, g.current);
        if use_pct >= CGROUP_NEAR_LIMIT_PCT {
            let growing = anon_pct >= CGROUP_ANON_DOMINANT_PCT;
            f.add(
                if growing { Severity::Critical } else { Severity::Warning },
                format!("cgroup {} at {:.1}% of its memory limit", g.path, use_pct),
                format!(
                    "{} {} of limit {} (at or above {CGROUP_NEAR_LIMIT_PCT}%); anon {} ({:.1}%), file {}, shmem {}; limit hit {} time(s), {} OOM kill(s) so far.{}",
                    hierarchy.usage_name(),
                    human_bytes(g.current),
                    human_bytes(max),
                    human_bytes(g.anon),
                    anon_pct,
                    human_bytes(g.file),
                    human_bytes(g.shmem),
                    g.max_events,
                    g.oom_kills,
                    if growing {
                        " Anonymous memory dominates, so reclaim cannot make room: a leak or undersized limit that ends in an OOM kill."
                    } else {
                        ""
                    }
                ),
                hierarchy.current_file(&g.path),
            );
            f.next(
                "local_oomcheck",
                format!("cgroup {} is at its memory limit", g.path),
            );
        }
    }
    groups.sort_by(|a, b| b.current.cmp(&a.current).then(a.path.cmp(&b.path)));
    groups.truncate(TOP_CGROUPS);
    groups
}

fn hugepages(root: &Root) -> Vec<HugepagePool> {
    const DIR: &str = "/sys/kernel/mm/hugepages";
    root.list(DIR)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| {
            let size_kib = d
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(HugepagePool {
                size_kib,
                total: root.read_u64(&format!("{DIR}/{d}/nr_hugepages"))?,
                free: root
                    .read_u64(&format!("{DIR}/{d}/free_hugepages"))
                    .unwrap_or(0),
            })
        })
        .collect()
}

/// The memory breakdown; `all_pss` reads PSS for the top processes whatever their size.
pub fn collect(root: &Root, all_pss: bool) -> (Findings, MemoryFigures) {
    let mut f = Findings::default();
    let meminfo = meminfo(root, &mut f);
    if let Some(m) = &meminfo {
        judge_meminfo(m, &mut f);
    }
    let psi = psi::read(root, "memory", &mut f);
    if let Some(p) = &psi {
        psi::judge_memory(p, &mut f);
    }
    // Read once: the processes' cgroups and the per-cgroup figures come from one hierarchy.
    let hierarchy = cgroup::Memory::detect(root);
    let (top, scanned) = top_processes(
        root,
        *hierarchy.as_ref().unwrap_or(&cgroup::Memory::V2),
        &mut f,
        TOP_PROCESSES,
        all_pss,
    );
    if let (Some(m), Some(p)) = (&meminfo, top.first()) {
        f.add(
            Severity::Info,
            format!(
                "Largest process: {} (pid {}), {} RSS",
                p.name,
                p.pid,
                human_bytes(p.rss)
            ),
            format!(
                "{:.1}% of MemTotal; anon {}, file {}, shmem {}, swap {}{}",
                percent(p.rss, m.total),
                human_bytes(p.rss_anon),
                human_bytes(p.rss_file),
                human_bytes(p.rss_shmem),
                human_bytes(p.swap),
                p.cgroup
                    .as_deref()
                    .map(|c| format!(", cgroup {c}"))
                    .unwrap_or_default()
            ),
            format!("/proc/{}/status", p.pid),
        );
    }
    let cgroups = cgroups(root, &hierarchy, &mut f);
    let hugepages = hugepages(root);
    for h in &hugepages {
        if h.total > 0 && h.free == h.total {
            f.add(
                Severity::Warning,
                format!("{} hugepages of {} KiB reserved and unused", h.total, h.size_kib),
                format!(
                    "{} reserved in the hugetlb pool, all free: memory no process can use unless it maps hugetlbfs",
                    human_bytes(h.total * h.size_kib * 1024)
                ),
                "/sys/kernel/mm/hugepages",
            );
        }
    }
    let tmpfs: Vec<TmpfsUse> = disk::mounts(root)
        .into_iter()
        .filter(|m| m.fstype == "tmpfs")
        .filter_map(|m| {
            let s = root.statvfs(&m.mountpoint).ok()?;
            Some(TmpfsUse {
                used: s.size.saturating_sub(s.free),
                size: s.size,
                mountpoint: m.mountpoint,
            })
        })
        .filter(|t| t.used > 0)
        .collect();
    if let Some(m) = &meminfo {
        let tmpfs_total: u64 = tmpfs.iter().map(|t| t.used).sum();
        if percent(tmpfs_total, m.total) > 10.0 {
            f.add(
                Severity::Warning,
                format!("tmpfs holds {} ({:.1}% of memory)", human_bytes(tmpfs_total), percent(tmpfs_total, m.total)),
                "Files on tmpfs are shmem: reclaim cannot drop them, only deleting the files frees the memory".to_string(),
                "/proc/self/mountinfo",
            );
        }
    }
    (
        f,
        MemoryFigures {
            meminfo,
            psi,
            top_processes: top,
            cgroups,
            hugepages,
            tmpfs,
            processes_scanned: scanned,
        },
    )
}
