//! Fixture-tree tests: `tests/fixtures/local/anomalies` is a recorded host with known anomalies
//! (see make_anomalies.py there); each test asserts the finding the anomaly must produce.

use super::{findings::Findings, *};

fn fixture() -> Root {
    Root::recorded(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/local/anomalies"
    ))
}

fn has(f: &Findings, sev: Severity, needle: &str) -> bool {
    f.titles()
        .any(|x| x.severity == sev && (x.title.contains(needle) || x.detail.contains(needle)))
}

fn dump(f: &Findings) -> String {
    f.titles()
        .map(|x| format!("{:?} {} | {}\n", x.severity, x.title, x.detail))
        .collect()
}

#[test]
fn memgraph_flags_the_leaking_cgroup_and_exhaustion() {
    let (f, fig) = memory::collect(&fixture(), true);
    assert!(
        has(
            &f,
            Severity::Critical,
            "cgroup /system.slice/leaky.service at 96.9% of its memory limit"
        ),
        "{}",
        dump(&f)
    );
    assert!(
        has(&f, Severity::Critical, "Anonymous memory dominates"),
        "{}",
        dump(&f)
    );
    assert!(
        has(
            &f,
            Severity::Critical,
            "Memory nearly exhausted: 5.0% available"
        ),
        "{}",
        dump(&f)
    );
    assert!(
        has(&f, Severity::Warning, "Memory pressure"),
        "{}",
        dump(&f)
    );
    let top = &fig.top_processes[0];
    assert_eq!((top.pid, top.name.as_str()), (100, "leaky-app"));
    assert_eq!(top.rss, 6_000_000 * 1024);
    assert_eq!(top.pss, Some(5_990_000 * 1024));
    assert_eq!(top.cgroup.as_deref(), Some("/system.slice/leaky.service"));
    assert_eq!(fig.meminfo.as_ref().unwrap().total, 8_000_000 * 1024);
    assert_eq!(fig.cgroups[0].path, "/system.slice");
    assert_eq!(fig.cgroups[1].oom_kills, 1);
    assert_eq!(fig.processes_scanned, 5);
}

#[test]
fn oomcheck_reports_victim_cgroup_constraint_and_state() {
    let (f, fig) = oom::collect(&fixture(), oom::Window::default());
    assert_eq!(fig.events.len(), 1, "{}", dump(&f));
    let e = &fig.events[0];
    assert_eq!(e.victim.as_deref(), Some("leaky-worker"));
    assert_eq!(e.pid, Some(150));
    assert_eq!(e.cgroup.as_deref(), Some("/system.slice/leaky.service"));
    assert_eq!(e.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
    assert_eq!(e.trigger.as_deref(), Some("leaky-app"));
    assert_eq!(e.cgroup_limit, Some(6_400_000 * 1024));
    assert_eq!(e.anon_rss, Some(6_100_000 * 1024));
    // btime 1764000000 + 9000 s after boot
    assert_eq!(e.time, Some(1_764_009_000));
    assert!(
        has(&f, Severity::Critical, "OOM kill: leaky-worker"),
        "{}",
        dump(&f)
    );
    // memory.events counts the same kill; the deepest cgroup is the one named
    assert_eq!(fig.cgroups.len(), 1);
    assert_eq!(fig.cgroups[0].path, "/system.slice/leaky.service");
    assert_eq!(fig.oom_kills_since_boot, Some(1));
    // a window after the kill leaves it out
    let (_, later) = oom::collect(&fixture(), oom::Window::parse(Some("1764009001")).unwrap());
    assert!(later.events.is_empty());
    let (_, range) = oom::collect(
        &fixture(),
        oom::Window::parse(Some("1764008000~1764009500")).unwrap(),
    );
    assert_eq!(range.events.len(), 1);
    assert!(oom::Window::parse(Some("yesterday")).is_err());
}

#[test]
fn loadtask_explains_load_with_d_state_tasks_and_names_the_busy_loop() {
    let (f, fig) = load::collect(&fixture());
    assert_eq!(
        (fig.running, fig.uninterruptible, fig.cpus),
        (1, 2, Some(4))
    );
    assert!(
        has(
            &f,
            Severity::Warning,
            "Load 9.50 exceeds the 4 CPU(s): mostly tasks in uninterruptible sleep"
        ),
        "{}",
        dump(&f)
    );
    assert!(
        has(&f, Severity::Warning, "dd (pid 200) in io_schedule"),
        "{}",
        dump(&f)
    );
    let dd = fig
        .uninterruptible_tasks
        .iter()
        .find(|t| t.pid == 200)
        .unwrap();
    assert_eq!(dd.stack[0], "io_schedule+0x42/0x70");
    assert_eq!(fig.cpu_hogs[0].comm, "spin");
    assert!(
        has(&f, Severity::Info, "CPU hog: spin (pid 300)"),
        "{}",
        dump(&f)
    );
    assert!(has(&f, Severity::Warning, "io pressure"), "{}", dump(&f));
}

#[test]
fn disk_reports_the_full_file_system() {
    let (f, fig) = disk::collect(&fixture(), None);
    assert!(
        has(
            &f,
            Severity::Critical,
            "File system / is full (100.0% used)"
        ),
        "{}",
        dump(&f)
    );
    assert!(
        !has(&f, Severity::Critical, "File system /data"),
        "{}",
        dump(&f)
    );
    let root_fs = fig
        .filesystems
        .iter()
        .find(|fs| fs.mountpoint == "/")
        .unwrap();
    assert_eq!(root_fs.size, 2_621_440 * 4096);
    assert_eq!(fig.walk.as_ref().unwrap().path, "/");
    assert!(!fig.biggest.is_empty());
}

#[test]
fn crash_reads_the_panic_from_vmcore_dmesg() {
    let (f, fig) = crash::collect(&fixture());
    assert_eq!(fig.saved_dumps.len(), 1);
    assert_eq!(
        fig.saved_dumps[0].panic.as_deref(),
        Some("Kernel panic - not syncing: sysrq triggered crash")
    );
    assert!(
        has(&f, Severity::Critical, "sysrq triggered crash"),
        "{}",
        dump(&f)
    );
    assert!(
        has(&f, Severity::Warning, "kdump is not set up"),
        "{}",
        dump(&f)
    );
    assert!(has(&f, Severity::Warning, "hung task"), "{}", dump(&f));
}

#[test]
fn triage_points_at_the_right_diagnoses() {
    let (f, fig) = triage::collect(&fixture());
    let report = f.into_report(fig);
    let next: Vec<&str> = report.next_steps.iter().map(|n| n.tool.as_str()).collect();
    for tool in [
        "local_loadtask",
        "local_iodiagnose",
        "local_disk",
        "local_oomcheck",
        "local_crash",
        "local_memgraph",
    ] {
        assert!(next.contains(&tool), "{tool} missing from {next:?}");
    }
    assert_eq!(report.findings[0].severity, Severity::Critical);
    assert_eq!(report.figures.oom_kills_in_log, Some(1));
    assert_eq!(report.figures.saved_dumps, 1);
}

#[test]
fn missing_inputs_degrade_to_findings() {
    let empty = tempfile::tempdir().unwrap();
    let root = Root::recorded(empty.path());
    let (f, _) = memory::collect(&root, false);
    assert!(
        has(&f, Severity::Unavailable, "/proc/meminfo"),
        "{}",
        dump(&f)
    );
    assert!(has(&f, Severity::Unavailable, "CONFIG_PSI"), "{}", dump(&f));
    assert!(has(&f, Severity::Unavailable, "cgroup v2"), "{}", dump(&f));
    let (f, _) = oom::collect(&root, oom::Window::default());
    assert!(has(&f, Severity::Unavailable, "/dev/kmsg"), "{}", dump(&f));
    for (f, _) in [
        load::collect(&root).0,
        triage::collect(&root).0,
        crash::collect(&root).0,
    ]
    .into_iter()
    .map(|f| (f, ()))
    {
        assert!(f.worst().is_some());
    }
}

/// Every snapshot collector answers on the host running the tests (whatever it can read).
#[test]
fn live_host_collectors_answer() {
    let root = Root::new("/");
    let (_, m) = memory::collect(&root, false);
    assert!(m.meminfo.unwrap().total > 0);
    let (_, l) = load::collect(&root);
    assert!(l.tasks_total > 0);
    let (_, d) = disk::collect(&root, None);
    assert!(!d.filesystems.is_empty());
    let _ = crash::collect(&root);
    let _ = oom::collect(&root, oom::Window::default());
    let (_, t) = triage::collect(&root);
    assert!(t.mem_total.unwrap() > 0);
}

#[test]
fn packetdrop_reports_climbing_counters_with_their_meaning() {
    let mut root = fixture();
    let a = net::sample(&root, None);
    root.advance();
    let b = net::sample(&root, None);
    let (f, fig) = net::judge_drops(&a, &b, 1.0, None);
    let names: Vec<&str> = fig.rising.iter().map(|c| c.counter.as_str()).collect();
    assert_eq!(
        &names[..3],
        ["Ip.InDiscards", "Udp.InErrors", "Udp.RcvbufErrors"],
        "{names:?}"
    );
    assert!(names.contains(&"TcpExt.ListenOverflows"));
    assert!(
        has(
            &f,
            Severity::Warning,
            "Udp.RcvbufErrors rose by 300 in 1.0 s (300/s)"
        ),
        "{}",
        dump(&f)
    );
    assert!(
        has(&f, Severity::Warning, "the application reads too slowly"),
        "{}",
        dump(&f)
    );
    assert!(
        has(&f, Severity::Warning, "eth0: 1000 rx drops"),
        "{}",
        dump(&f)
    );
    assert_eq!(
        (fig.softnet_dropped, fig.softnet_time_squeeze),
        (0x40, 0x10)
    );
    // an unchanged tree shows nothing rising
    let (_, same) = net::judge_drops(&a, &a, 1.0, None);
    assert!(same.rising.is_empty() && same.devices.is_empty());
}

#[test]
fn packetdrop_counts_netfilter_drops_that_no_kernel_counter_records() {
    // An nftables `drop` in the input hook: 300 datagrams entered ip_rcv (InReceives), 20 were
    // delivered, none was counted by an error counter.
    let snmp = |received: i64, delivered: i64| {
        let text = format!(
            "Ip: Forwarding InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers ReasmReqds ReasmOKs\n\
             Ip: 1 {received} 0 0 0 0 0 {delivered} 0 0\n"
        );
        net::NetSample {
            counters: net::snmp_counters(&text),
            ..Default::default()
        }
    };
    let a = snmp(1000, 990);
    let b = snmp(1300, 1010);
    let (f, fig) = net::judge_drops(&a, &b, 2.0, Some(42));
    let c = fig
        .rising
        .iter()
        .find(|c| c.counter == net::UNDELIVERED)
        .unwrap_or_else(|| panic!("{}", dump(&f)));
    assert_eq!((c.delta, c.per_second, c.total), (280, 140.0, 290));
    assert!(
        has(&f, Severity::Warning, "Ip.InUndelivered rose by 280"),
        "{}",
        dump(&f)
    );
    assert!(has(&f, Severity::Warning, "netfilter rule"), "{}", dump(&f));
    // delivered as fast as received: nothing
    let (_, quiet) = net::judge_drops(&a, &snmp(1300, 1290), 2.0, None);
    assert!(quiet.rising.is_empty(), "{:?}", quiet.rising);
}

#[test]
fn iofsstat_names_the_top_writer_and_the_saturated_disk() {
    let mut root = fixture();
    let a = io::sample(&root);
    root.advance();
    let (f, fig) = io::judge_iofsstat(&root, &a, 1.0);
    let sda = &fig.devices[0];
    assert_eq!(sda.device, "sda");
    assert_eq!((sda.read_iops, sda.write_iops), (100.0, 2000.0));
    assert_eq!(sda.write_bps, 16_000.0 * 1024.0);
    assert_eq!(sda.util_pct, 99.0);
    assert_eq!(sda.write_await_ms, 400.0);
    assert!(fig.devices.iter().all(|d| d.device != "loop0"));
    assert_eq!(fig.top_processes[0].comm, "dd");
    assert_eq!(fig.top_processes[0].write_bytes, 2000 * 8192);
    assert_eq!(fig.top_cgroups[0].path, "/system.slice/backup.service");
    assert!(
        has(&f, Severity::Warning, "sda is saturated: util 99%"),
        "{}",
        dump(&f)
    );
    assert!(
        has(&f, Severity::Info, "Top IO process: dd (pid 200)"),
        "{}",
        dump(&f)
    );
    let (f, fig) = io::judge_iodiagnose(&root, &a, 1.0);
    let sda = fig.queues.iter().find(|q| q.device == "sda").unwrap();
    assert_eq!(
        (sda.scheduler.as_str(), sda.rotational),
        ("mq-deadline", Some(true))
    );
    assert_eq!(fig.uninterruptible.len(), 2);
    assert!(
        has(&f, Severity::Warning, "2 task(s) in uninterruptible sleep"),
        "{}",
        dump(&f)
    );
}

#[test]
fn netjitter_retransmission_rate_from_two_samples() {
    let mut root = fixture();
    let a = net::sample(&root, None);
    root.advance();
    let b = net::sample(&root, None);
    let (f, fig) = net::judge_jitter(&root, &a, &b, 1.0, 10.0);
    assert_eq!(fig.retrans_pct, Some(10.0));
    assert!(
        has(&f, Severity::Warning, "10% of TCP segments retransmitted"),
        "{}",
        dump(&f)
    );
    assert!(has(&f, Severity::Unavailable, "sock_diag"), "{}", dump(&f));
}

#[test]
fn live_sock_diag_dump_works() {
    // Every Linux CI host can dump its own TCP sockets; an error here is a decoding bug.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let sockets = net::tcp_sockets().unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    assert!(
        sockets
            .iter()
            .any(|s| s.remote.ends_with(&format!(":{port}"))),
        "{sockets:?}"
    );
}

#[test]
fn memgraph_ranks_by_stat_and_reads_status_only_for_the_top() {
    // The fixture's five processes all fit in the top 10: the status breakdown is read for each,
    // and the order is by RSS.
    let (_, fig) = memory::collect(&fixture(), false);
    let names: Vec<&str> = fig.top_processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names[..3], ["leaky-app", "systemd", "dd"], "{names:?}");
    assert_eq!(fig.processes_scanned, 5);
    assert_eq!(fig.top_processes[0].rss_anon, 5_950_000 * 1024);
    // 6 GB resident is beyond the PSS walk budget: not read unless asked (pss: true, above)
    assert!(memory::PSS_RSS_BUDGET < fig.top_processes[0].rss);
    assert_eq!(fig.top_processes[0].pss, None);
    // the live host: our own process is ranked from its stat and has a status breakdown
    let (_, live) = memory::collect(&Root::new("/"), false);
    assert!(live.processes_scanned > 0);
    assert!(live.top_processes.iter().all(|p| p.rss >= p.rss_anon));
}
