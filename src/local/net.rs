//! local_packetdrop (deltas of the kernel's drop and error counters over a window, each counter
//! explained) and local_netjitter (TCP RTT and retransmissions of live sockets via sock_diag,
//! softnet time squeeze, retransmission rate).

use std::collections::BTreeMap;

use procfs_core::net::InterfaceDeviceStatus;
use schemars::JsonSchema;
use serde::Serialize;

use super::{
    findings::{Findings, Severity, round1},
    root::Root,
};

/// Drop and error counters of /proc/net/snmp and /proc/net/netstat, with what a rise means
/// (meanings from the kernel's include/uapi/linux/snmp.h and Documentation/networking/snmp_counter.rst).
pub const DROP_COUNTERS: &[(&str, &str)] = &[
    (
        "Ip.InDiscards",
        "IP datagrams dropped on input for lack of resources (no buffer) or by policy",
    ),
    (
        "Ip.InHdrErrors",
        "IP datagrams with bad headers (checksum, version, TTL exceeded)",
    ),
    (
        "Ip.InAddrErrors",
        "IP datagrams for an address this host does not have, with forwarding off",
    ),
    (
        "Ip.OutDiscards",
        "outgoing IP datagrams dropped for lack of resources",
    ),
    ("Ip.OutNoRoutes", "outgoing IP datagrams with no route"),
    (
        "IpExt.InNoRoutes",
        "incoming IP datagrams with no route (forwarding)",
    ),
    (
        "Tcp.InErrs",
        "TCP segments received in error (bad checksum, too short)",
    ),
    ("Tcp.InCsumErrors", "TCP segments with a bad checksum"),
    (
        "Udp.InErrors",
        "UDP datagrams that could not be delivered (includes receive buffer overflows)",
    ),
    ("Udp.NoPorts", "UDP datagrams to a port nobody listens on"),
    (
        "Udp.RcvbufErrors",
        "UDP datagrams dropped because the socket receive buffer was full: the application reads too slowly (raise SO_RCVBUF / net.core.rmem_max)",
    ),
    (
        "Udp.SndbufErrors",
        "UDP datagrams dropped because the socket send buffer was full",
    ),
    ("Udp.InCsumErrors", "UDP datagrams with a bad checksum"),
    (
        "Udp.MemErrors",
        "UDP datagrams dropped at the UDP memory limit (net.ipv4.udp_mem)",
    ),
    (
        "TcpExt.ListenOverflows",
        "connections dropped because a listen backlog was full: the server accepts too slowly (raise the backlog / net.core.somaxconn)",
    ),
    (
        "TcpExt.ListenDrops",
        "incoming connection requests dropped at a listening socket (overflows and other reasons)",
    ),
    (
        "TcpExt.TCPBacklogDrop",
        "TCP segments dropped because the socket backlog was full while the socket was locked by the application",
    ),
    (
        "TcpExt.PFMemallocDrop",
        "TCP segments dropped under memory pressure (PF_MEMALLOC)",
    ),
    (
        "TcpExt.TCPRcvQDrop",
        "TCP segments dropped because the receive queue hit its memory limit",
    ),
    (
        "TcpExt.TCPZeroWindowDrop",
        "TCP segments dropped because the receive window was zero",
    ),
    (
        "TcpExt.TCPMinTTLDrop",
        "TCP segments dropped below the socket's minimum TTL",
    ),
    (
        "TcpExt.TCPAbortOnMemory",
        "TCP connections aborted for lack of memory (net.ipv4.tcp_mem)",
    ),
    (
        "TcpExt.TCPReqQFullDrop",
        "SYNs dropped because the SYN queue was full and syncookies are off",
    ),
    (
        "TcpExt.TCPTimeouts",
        "TCP retransmission timeouts (a peer or path stopped answering)",
    ),
];

/// The derived counter for datagrams the kernel drops without counting them anywhere.
pub const UNDELIVERED: &str = "Ip.InUndelivered";
const UNDELIVERED_MEANING: &str = "IPv4 datagrams received that were neither delivered, forwarded nor counted by any \
error counter (derived: InReceives minus InDelivers, ForwDatagrams, InHdrErrors, InAddrErrors, InUnknownProtos, \
InDiscards, InNoRoutes, InTruncatedPkts, IPReversePathFilter and unreassembled fragments): packets dropped by a \
netfilter rule (an nftables/iptables DROP in prerouting or input), which no /proc/net counter records; \
`nft list ruleset` with counters shows which rule";

/// Received IPv4 datagrams that no counter accounts for. The kernel increments InReceives when
/// a datagram enters ip_rcv, and then exactly one of the subtracted counters unless a netfilter
/// hook (or a multicast route for a group the host did not join) drops it silently.
fn undelivered(c: &BTreeMap<String, i64>) -> Option<i64> {
    let g = |k: &str| c.get(k).copied().unwrap_or(0);
    let received = *c.get("Ip.InReceives")?;
    let accounted = [
        "Ip.InDelivers",
        "Ip.ForwDatagrams",
        "Ip.InHdrErrors",
        "Ip.InAddrErrors",
        "Ip.InUnknownProtos",
        "Ip.InDiscards",
        "IpExt.InNoRoutes",
        "IpExt.InTruncatedPkts",
        "TcpExt.IPReversePathFilter",
    ]
    .iter()
    .map(|k| g(k))
    .sum::<i64>()
        + (g("Ip.ReasmReqds") - g("Ip.ReasmOKs")).max(0);
    Some((received - accounted).max(0))
}

/// Per-second rise of drops that is worth a warning (engine's choice: any sustained drop rate
/// of one packet a second or more hurts TCP throughput noticeably).
pub const DROPS_PER_S_WARNING: f64 = 1.0;
/// Retransmitted share of sent segments above which a path is lossy (engine's choice; 1 % is
/// the usual line at which TCP throughput collapses per the Mathis et al. model).
pub const RETRANS_PCT_WARNING: f64 = 1.0;
/// Smoothed RTT (ms) of an established socket above this is worth naming; the tool's
/// `threshold` overrides it (SysOM's netjitter default is 10 ms).
pub const RTT_MS_DEFAULT_THRESHOLD: f64 = 10.0;

/// Every counter of /proc/net/snmp and /proc/net/netstat as `Group.Name`: both files are pairs
/// of lines, a header of names and a line of values. Hand-written: procfs-core's `Snmp` has
/// fixed fields and no netstat (TcpExt) parser.
pub fn snmp_counters(text: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((g1, names)), Some((g2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if g1 != g2 {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse() {
                out.insert(format!("{g1}.{n}"), v);
            }
        }
    }
    out
}

/// Per-CPU (processed, dropped, time_squeeze) from /proc/net/softnet_stat (hex columns).
pub fn softnet(text: &str) -> Vec<(u64, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l
                .split_whitespace()
                .map(|h| u64::from_str_radix(h, 16).ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect()
}

/// One reading of every counter the packet-drop sampler compares.
#[derive(Debug, Clone, Default)]
pub struct NetSample {
    pub counters: BTreeMap<String, i64>,
    /// name → (rx_drop, rx_errs, rx_fifo, tx_drop, tx_errs)
    pub devices: BTreeMap<String, [u64; 5]>,
    pub softnet_dropped: u64,
    pub softnet_squeezed: u64,
    pub missing: Vec<super::root::Unreadable>,
}

/// Reads the counters of the network namespace of `pid` (`/proc/PID/net/...`) or of the
/// server's own (`/proc/net/...`).
pub fn sample(root: &Root, pid: Option<i32>) -> NetSample {
    let base = pid.map_or("/proc/net".to_string(), |p| format!("/proc/{p}/net"));
    let mut s = NetSample::default();
    for file in ["snmp", "netstat"] {
        match root.read(&format!("{base}/{file}")) {
            Ok(t) => s.counters.extend(snmp_counters(&t)),
            Err(e) => s.missing.push(e),
        }
    }
    match root.parse::<InterfaceDeviceStatus>(&format!("{base}/dev")) {
        Ok(devs) => {
            for (name, d) in devs.0 {
                s.devices.insert(
                    name,
                    [
                        d.recv_drop,
                        d.recv_errs,
                        d.recv_fifo,
                        d.sent_drop,
                        d.sent_errs,
                    ],
                );
            }
        }
        Err(e) => s.missing.push(e),
    }
    match root.read(&format!("{base}/softnet_stat")) {
        Ok(t) => {
            for (_, dropped, squeezed) in softnet(&t) {
                s.softnet_dropped += dropped;
                s.softnet_squeezed += squeezed;
            }
        }
        Err(e) => s.missing.push(e),
    }
    s
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PacketDropFigures {
    pub window_s: f64,
    /// The network namespace sampled: the pid whose namespace was read, null for the server's own.
    pub netns_pid: Option<i32>,
    /// Counters that rose in the window, biggest rise first.
    pub rising: Vec<CounterDelta>,
    pub devices: Vec<DeviceDelta>,
    /// softnet_stat: packets dropped because a CPU's backlog was full (net.core.netdev_max_backlog).
    pub softnet_dropped: u64,
    /// softnet_stat: times NAPI polling ran out of budget with work left (net.core.netdev_budget).
    pub softnet_time_squeeze: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CounterDelta {
    pub counter: String,
    pub delta: i64,
    pub per_second: f64,
    pub total: i64,
    pub meaning: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeviceDelta {
    pub interface: String,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub rx_fifo: u64,
    pub tx_dropped: u64,
    pub tx_errors: u64,
}

pub fn judge_drops(
    a: &NetSample,
    b: &NetSample,
    window_s: f64,
    pid: Option<i32>,
) -> (Findings, PacketDropFigures) {
    let mut f = Findings::default();
    for e in &b.missing {
        f.unavailable("A network counter file", e);
    }
    let window = window_s.max(0.001);
    let mut rising: Vec<CounterDelta> = DROP_COUNTERS
        .iter()
        .filter_map(|(name, meaning)| {
            let total = *b.counters.get(*name)?;
            let delta = total - a.counters.get(*name).copied().unwrap_or(total);
            (delta > 0).then(|| CounterDelta {
                counter: name.to_string(),
                delta,
                per_second: round1(delta as f64 / window),
                total,
                meaning: meaning.to_string(),
            })
        })
        .collect();
    if let (Some(x), Some(y)) = (undelivered(&a.counters), undelivered(&b.counters))
        && y > x
    {
        rising.push(CounterDelta {
            counter: UNDELIVERED.to_string(),
            delta: y - x,
            per_second: round1((y - x) as f64 / window),
            total: y,
            meaning: UNDELIVERED_MEANING.to_string(),
        });
    }
    rising.sort_by(|x, y| y.delta.cmp(&x.delta).then(x.counter.cmp(&y.counter)));
    for c in &rising {
        let sev = if c.per_second >= DROPS_PER_S_WARNING {
            Severity::Warning
        } else {
            Severity::Info
        };
        f.add(
            sev,
            format!(
                "{} rose by {} in {window_s:.1} s ({}/s)",
                c.counter, c.delta, c.per_second
            ),
            format!("{}; {} since boot", c.meaning, c.total),
            if c.counter.starts_with("TcpExt") || c.counter.starts_with("IpExt") {
                "/proc/net/netstat"
            } else {
                "/proc/net/snmp"
            },
        );
    }
    let devices: Vec<DeviceDelta> = b
        .devices
        .iter()
        .filter_map(|(name, v)| {
            let o = a.devices.get(name).copied().unwrap_or(*v);
            let d: Vec<u64> = v
                .iter()
                .zip(o.iter())
                .map(|(x, y)| x.saturating_sub(*y))
                .collect();
            d.iter().any(|x| *x > 0).then(|| DeviceDelta {
                interface: name.clone(),
                rx_dropped: d[0],
                rx_errors: d[1],
                rx_fifo: d[2],
                tx_dropped: d[3],
                tx_errors: d[4],
            })
        })
        .collect();
    for d in &devices {
        f.add(
            Severity::Warning,
            format!("{}: {} rx drops, {} rx errors in {window_s:.1} s", d.interface, d.rx_dropped, d.rx_errors),
            format!(
                "rx_dropped {} (no buffer in the driver ring or the stack, or an unknown protocol), rx_errors {}, rx_fifo {} (ring overrun: raise it with ethtool -G), tx_dropped {}, tx_errors {}",
                d.rx_dropped, d.rx_errors, d.rx_fifo, d.tx_dropped, d.tx_errors
            ),
            "/proc/net/dev",
        );
    }
    let dropped = b.softnet_dropped.saturating_sub(a.softnet_dropped);
    let squeezed = b.softnet_squeezed.saturating_sub(a.softnet_squeezed);
    if dropped > 0 {
        f.add(
            Severity::Warning,
            format!("{dropped} packet(s) dropped at full CPU backlogs in {window_s:.1} s"),
            "softnet_stat dropped: the per-CPU input queue was full; raise net.core.netdev_max_backlog or spread receive load (RPS/RSS)",
            "/proc/net/softnet_stat",
        );
    }
    if squeezed > 0 {
        f.add(
            Severity::Info,
            format!("NAPI budget ran out {squeezed} time(s) in {window_s:.1} s"),
            "softnet_stat time_squeeze: receive processing had work left when its budget ended; raise net.core.netdev_budget if drops follow",
            "/proc/net/softnet_stat",
        );
    }
    if rising.is_empty() && devices.is_empty() && dropped == 0 {
        f.add(
            Severity::Info,
            format!("No packet drop counter rose in {window_s:.1} s"),
            format!("{} counters compared", DROP_COUNTERS.len() + 1),
            "/proc/net/snmp",
        );
    } else {
        f.next(
            "local_netjitter",
            "packets are being dropped; see which connections retransmit and their RTT",
        );
    }
    (
        f,
        PacketDropFigures {
            window_s: round1(window_s),
            netns_pid: pid,
            rising,
            devices,
            softnet_dropped: dropped,
            softnet_time_squeeze: squeezed,
        },
    )
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TcpSocket {
    pub local: String,
    pub remote: String,
    /// Smoothed RTT and its variation, ms.
    pub rtt_ms: f64,
    pub rttvar_ms: f64,
    pub min_rtt_ms: f64,
    /// Retransmissions over the connection's life.
    pub total_retrans: u32,
    /// Segments lost right now.
    pub lost: u32,
    pub segs_out: u32,
}

/// Established TCP sockets with their tcp_info, by a sock_diag dump over netlink (IPv4 and
/// IPv6); no /proc/net/tcp parsing, which lacks RTT.
pub fn tcp_sockets() -> Result<Vec<TcpSocket>, String> {
    use netlink_packet_core::{
        NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_sock_diag::{
        SockDiagMessage,
        constants::{AF_INET, AF_INET6, IPPROTO_TCP},
        inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla},
    };
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| format!("netlink socket: {e}"))?;
    socket
        .bind_auto()
        .map_err(|e| format!("netlink bind: {e}"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| format!("netlink connect: {e}"))?;
    let mut out = Vec::new();
    for (family, id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut packet = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::INFO,
                states: StateFlags::ESTABLISHED,
                socket_id: id,
            })
            .into(),
        );
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf[..]);
        socket
            .send(&buf, 0)
            .map_err(|e| format!("netlink send: {e}"))?;
        let mut rx = vec![0u8; 64 * 1024];
        'dump: loop {
            rx.clear();
            let size = socket
                .recv(&mut rx, 0)
                .map_err(|e| format!("netlink recv: {e}"))?;
            let mut offset = 0;
            while offset < size {
                let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size])
                    .map_err(|e| format!("netlink decode: {e}"))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let id = &r.header.socket_id;
                        for nla in &r.nlas {
                            if let Nla::TcpInfo(t) = nla {
                                out.push(TcpSocket {
                                    local: format!("{}:{}", id.source_address, id.source_port),
                                    remote: format!(
                                        "{}:{}",
                                        id.destination_address, id.destination_port
                                    ),
                                    rtt_ms: round1(t.rtt as f64 / 1000.0),
                                    rttvar_ms: round1(t.rttvar as f64 / 1000.0),
                                    min_rtt_ms: round1(t.min_rtt as f64 / 1000.0),
                                    total_retrans: t.total_retrans,
                                    lost: t.lost,
                                    segs_out: t.segs_out,
                                });
                            }
                        }
                    }
                    NetlinkPayload::Done(_) => break 'dump,
                    NetlinkPayload::Error(e) => return Err(format!("sock_diag: {e:?}")),
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct JitterFigures {
    pub window_s: f64,
    pub threshold_ms: f64,
    /// Established TCP sockets seen.
    pub sockets: usize,
    /// Sockets by smoothed RTT, slowest first.
    pub slowest: Vec<TcpSocket>,
    /// Sockets with the most retransmissions.
    pub most_retransmitting: Vec<TcpSocket>,
    /// Tcp.RetransSegs / Tcp.OutSegs in the window, percent.
    pub retrans_pct: Option<f64>,
    pub softnet_time_squeeze: u64,
    pub softnet_dropped: u64,
}

pub fn judge_jitter(
    root: &Root,
    a: &NetSample,
    b: &NetSample,
    window_s: f64,
    threshold_ms: f64,
) -> (Findings, JitterFigures) {
    let mut f = Findings::default();
    let get = |s: &NetSample, k: &str| s.counters.get(k).copied().unwrap_or(0);
    let out_segs = get(b, "Tcp.OutSegs") - get(a, "Tcp.OutSegs");
    let retrans = get(b, "Tcp.RetransSegs") - get(a, "Tcp.RetransSegs");
    let retrans_pct = (out_segs > 0).then(|| round1(retrans as f64 * 100.0 / out_segs as f64));
    if let Some(p) = retrans_pct {
        f.add(
            if p >= RETRANS_PCT_WARNING { Severity::Warning } else { Severity::Info },
            format!("{p}% of TCP segments retransmitted in {window_s:.1} s"),
            format!("Tcp.RetransSegs +{retrans} of Tcp.OutSegs +{out_segs} (warning at {RETRANS_PCT_WARNING}%)"),
            "/proc/net/snmp",
        );
    }
    let squeezed = b.softnet_squeezed.saturating_sub(a.softnet_squeezed);
    let dropped = b.softnet_dropped.saturating_sub(a.softnet_dropped);
    if squeezed > 0 || dropped > 0 {
        f.add(
            Severity::Warning,
            format!("Receive processing fell behind: {squeezed} time squeeze(s), {dropped} backlog drop(s) in {window_s:.1} s"),
            "softnet_stat: packets wait in CPU queues, which shows as latency jitter; raise net.core.netdev_budget / netdev_max_backlog or spread load with RPS",
            "/proc/net/softnet_stat",
        );
    }
    let mut sockets = Vec::new();
    if root.is_live() {
        match tcp_sockets() {
            Ok(s) => sockets = s,
            Err(e) => f.add(
                Severity::Unavailable,
                "TCP socket details (sock_diag) could not be read",
                format!("{e}; the server needs AF_NETLINK sockets (RestrictAddressFamilies= must allow AF_NETLINK)"),
                "NETLINK_SOCK_DIAG",
            ),
        }
    } else {
        f.add(
            Severity::Unavailable,
            "TCP socket details are not part of a recorded tree",
            "sock_diag answers only for the live kernel",
            "NETLINK_SOCK_DIAG",
        );
    }
    let mut slowest = sockets.clone();
    slowest.sort_by(|x, y| y.rtt_ms.total_cmp(&x.rtt_ms));
    slowest.truncate(10);
    let mut most = sockets.clone();
    most.sort_by_key(|s| std::cmp::Reverse(s.total_retrans));
    most.retain(|s| s.total_retrans > 0);
    most.truncate(10);
    let slow: Vec<&TcpSocket> = slowest
        .iter()
        .filter(|s| s.rtt_ms >= threshold_ms)
        .collect();
    if !slow.is_empty() {
        f.add(
            Severity::Warning,
            format!(
                "{} TCP connection(s) with RTT ≥ {threshold_ms} ms",
                slow.len()
            ),
            slow.iter()
                .take(5)
                .map(|s| {
                    format!(
                        "{} → {}: rtt {} ms ± {} (min {} ms), {} retransmission(s)",
                        s.local, s.remote, s.rtt_ms, s.rttvar_ms, s.min_rtt_ms, s.total_retrans
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            "NETLINK_SOCK_DIAG tcp_info",
        );
    } else if !sockets.is_empty() {
        f.add(
            Severity::Info,
            format!(
                "{} established TCP connection(s), none with RTT ≥ {threshold_ms} ms",
                sockets.len()
            ),
            slowest
                .first()
                .map(|s| format!("slowest: {} → {} at {} ms", s.local, s.remote, s.rtt_ms))
                .unwrap_or_default(),
            "NETLINK_SOCK_DIAG tcp_info",
        );
    }
    if sockets.is_empty() && root.is_live() {
        f.add(
            Severity::Info,
            "No established TCP connection to measure",
            "sock_diag returned no ESTABLISHED TCP socket in this network namespace",
            "NETLINK_SOCK_DIAG",
        );
    }
    if let Some(top) = most.first() {
        f.add(
            Severity::Info,
            format!(
                "Most retransmissions: {} → {} ({})",
                top.local, top.remote, top.total_retrans
            ),
            format!("{} lost now, rtt {} ms", top.lost, top.rtt_ms),
            "NETLINK_SOCK_DIAG tcp_info",
        );
    }
    (
        f,
        JitterFigures {
            window_s: round1(window_s),
            threshold_ms,
            sockets: sockets.len(),
            slowest,
            most_retransmitting: most,
            retrans_pct,
            softnet_time_squeeze: squeezed,
            softnet_dropped: dropped,
        },
    )
}
