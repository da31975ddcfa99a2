//! Operating it like a gateway: restarts that keep traffic flowing, reload, metrics, flush.

use integration_tests::{
    daemon::NatDaemon,
    lab::{LAN_HOST_A, Lab, SERVER},
    traffic::{TcpSink, tcp_connect, tcp_send_paced, udp_echo, udp_request, udp_send, udp_socket},
};
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpStream},
    time::Duration,
};

fn udp_flow(lab: &Lab, sport: u16) {
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 1).unwrap();
    assert!(
        udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, sport), server, b"x")
            .unwrap()
            .is_some()
    );
    echo.join().unwrap();
}

fn udp_expiry(nat: &NatDaemon) -> u64 {
    let s = nat.json(&["sessions", "--proto", "udp"]);
    s[0]["expires_in"]
        .as_u64()
        .unwrap_or_else(|| panic!("no UDP session: {s}"))
}

#[test]
fn a_transfer_and_a_udp_stream_survive_sigkill_and_restart_of_the_daemon() {
    let lab = Lab::new("kill").unwrap();
    let instance = integration_tests::unique("kill");
    let mut first = NatDaemon::start_instance(&lab, &instance, &[]).unwrap();
    let sink = TcpSink::start(&lab.wan, SERVER, 5001).unwrap();
    const DATAGRAMS: usize = 40;
    let echo = udp_echo(&lab.wan, SocketAddrV4::new(SERVER, 7000), DATAGRAMS).unwrap();
    let udp = lab
        .lan
        .run(|| std::net::UdpSocket::bind((LAN_HOST_A, 27000)))
        .unwrap()
        .unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (transfer, answered, second) = std::thread::scope(|s| {
        let t = s.spawn(|| {
            tcp_send_paced(
                &lab.lan,
                LAN_HOST_A,
                sink.addr,
                64 * 1024,
                120,
                Duration::from_millis(25),
            )
            .unwrap()
        });
        // A datagram every 25 ms through the whole kill and restart, each answered.
        let u = s.spawn(|| {
            let mut answered = 0;
            let mut buf = [0u8; 64];
            for i in 0..DATAGRAMS {
                udp.send_to(format!("{i}").as_bytes(), (SERVER, 7000))
                    .unwrap();
                if udp.recv_from(&mut buf).is_ok() {
                    answered += 1;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            answered
        });
        std::thread::sleep(Duration::from_millis(500));
        first.kill();
        std::thread::sleep(Duration::from_millis(300));
        // Restart: adopts the pinned maps and swaps the program inside the pinned links.
        let second = NatDaemon::start_instance(&lab, &instance, &["--detach-on-exit"]).unwrap();
        assert!(
            second
                .log()
                .contains("program replaced in the existing link"),
            "{}",
            second.log()
        );
        (t.join().unwrap(), u.join().unwrap(), second)
    });
    let (sent, echoed) = transfer;
    let (_, n, digest) = sink.finish().unwrap();
    assert_eq!(n, 64 * 1024 * 120);
    assert_eq!(digest, sent, "the server got different bytes");
    assert_eq!(echoed, sent);
    assert_eq!(answered, DATAGRAMS, "UDP datagrams lost across the restart");
    echo.join().unwrap();
    let tcp = second.json(&["sessions", "--proto", "tcp"]);
    assert_eq!(
        tcp.as_array().unwrap().len(),
        1,
        "the TCP session was kept: {tcp}"
    );
    let udp_sessions = second.json(&["sessions", "--proto", "udp"]);
    assert_eq!(
        udp_sessions.as_array().unwrap().len(),
        1,
        "the UDP session was kept: {udp_sessions}"
    );
    drop(first);
}

#[test]
fn pinned_state_from_an_incompatible_version_is_refused() {
    use aya::maps::{Array, Map, MapData};
    use nat_common::config::NatConfig;
    let lab = Lab::new("lay").unwrap();
    let instance = integration_tests::unique("lay");
    let mut first = NatDaemon::start_instance(&lab, &instance, &[]).unwrap();
    assert!(first.stop().unwrap().success());
    // Another version's layout number in the pinned CONFIG.
    let pin = format!("/sys/fs/bpf/{instance}/CONFIG");
    let mut config: Array<MapData, NatConfig> =
        Map::from_map_data(MapData::from_pin(&pin).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
    let mut c = config.get(&0, 0).unwrap();
    c.layout_version = 999;
    config.set(0, c, 0).unwrap();
    for args in [vec!["status"], vec!["sessions"]] {
        let out = first.ctl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("layout version 999") && err.contains("detach"),
            "{args:?}: {err}"
        );
    }
    let again = NatDaemon::start_instance(&lab, &instance, &[]);
    let err = format!("{:#}", again.err().expect("run must refuse"));
    assert!(err.contains("layout version 999"), "{err}");
    drop(first);
}

/// The daemon's sweeper (a thread beside its event loop) expires sessions: a refused TCP
/// connection's session, on a transitory timeout of 4 s, is gone within a few sweeps (the
/// tests sweep every second), and the daemon answers meanwhile.
#[test]
fn the_daemon_sweeps_expired_sessions_away() {
    let lab = Lab::new("swp").unwrap();
    let nat = NatDaemon::start_with_config(
        &lab,
        "[timeouts]\ntcp_transitory = 4\ntcp_established = 4\n",
    )
    .unwrap();
    // Nothing listens there: the server's RST closes the connection.
    let refused = tcp_connect(&lab.lan, SocketAddrV4::new(SERVER, 5999)).unwrap();
    assert!(
        refused.is_err(),
        "something listens on the server's port 5999"
    );
    let tcp = |nat: &NatDaemon| {
        nat.json(&["sessions", "--proto", "tcp"])
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(tcp(&nat), 1, "the refused connection made no session");
    let gone = (0..60).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        tcp(&nat) == 0
    });
    assert!(gone, "the session was never swept away: {}", nat.log());
    assert!(nat.log().contains("sweep:"), "{}", nat.log());
    assert!(nat.ctl(&["status"]).status.success());
}

#[test]
fn reload_applies_a_new_timeout_and_keeps_sessions_and_a_broken_file_changes_nothing() {
    let lab = Lab::new("rld").unwrap();
    let nat = NatDaemon::start_with_config(&lab, "[timeouts]\nudp = 300\n").unwrap();
    let cfg = nat.config_path().to_path_buf();
    udp_flow(&lab, 23000);
    // The timeout, from up to FLOW_TTL_NS after the session's stamp.
    let lag = integration_tests::fixture::CACHE_LAG_NS / 1_000_000_000;
    assert!((290..=300 + lag).contains(&udp_expiry(&nat)));

    std::fs::write(&cfg, "[timeouts]\nudp = 900\n").unwrap();
    let out = nat.ctl(&["reload"]);
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        udp_expiry(&nat) > 800,
        "the new timeout applies to the existing session"
    );
    assert_eq!(
        nat.json(&["sessions"]).as_array().unwrap().len(),
        1,
        "sessions kept"
    );

    std::fs::write(&cfg, "[timeouts]\nudp = 900\nbogus = true\n").unwrap();
    let out = nat.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.starts_with("error:")
            && err.contains(&cfg.display().to_string())
            && err.contains("line 3"),
        "{err}"
    );
    // Straight SIGHUP with the broken file: the daemon keeps running with what it had.
    std::fs::write(&cfg, "[timeouts]\nudp = 30\n").unwrap();
    let pid: i32 = std::fs::read_to_string(format!("/run/xdp-nat/{}.pid", nat.instance))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with the daemon's pid and a signal number.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(nat.ctl(&["status"]).status.success());
    assert!(
        udp_expiry(&nat) > 800,
        "rejected reload changed the timeout"
    );
    assert!(nat.log().contains("reload rejected"), "{}", nat.log());
}

/// GET /metrics from inside the router namespace.
fn scrape(lab: &Lab, port: u16) -> String {
    get(lab, port, "/metrics")
}

/// GET `path` from the metrics server inside the router namespace: the whole response.
fn get(lab: &Lab, port: u16, path: &'static str) -> String {
    lab.router
        .run(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        })
        .unwrap()
}

#[test]
fn metrics_are_served_over_http_and_match_stats() {
    let lab = Lab::new("met").unwrap();
    let nat = NatDaemon::start(&lab, &["--metrics", "127.0.0.1:9779"]).unwrap();
    udp_flow(&lab, 24000);
    // Counters keep counting meanwhile (the namespaces' own IPv6 and ARP chatter), so
    // `stats` is read between two scrapes and must lie between them, counter by counter.
    let page = scrape(&lab, 9779);
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let stats = nat.json(&["stats"]);
    let after = scrape(&lab, 9779);
    let metric = |page: &str, name: &str| -> u64 {
        let line = page
            .lines()
            .find(|l| l.starts_with(&format!("xdp_nat_packets_total{{reason=\"{name}\",")))
            .unwrap_or_else(|| panic!("no metric for {name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    for (name, value) in stats["counters"].as_object().unwrap() {
        let value = value.as_u64().unwrap();
        let (before, later) = (metric(&page, name), metric(&after, name));
        assert!(
            before <= value && value <= later,
            "{name}: metrics {before}..{later}, stats {value}"
        );
    }
    assert_eq!(
        metric(&page, "session_created"),
        1,
        "the one UDP flow, as stats says"
    );
    assert!(page.contains("xdp_nat_sessions{proto=\"udp\"} 1"), "{page}");
    assert!(page.contains("xdp_nat_passthrough_enabled{protocol=\"ipsec\"} 1"));
    assert!(page.contains("xdp_nat_table_capacity{table=\"SESSIONS\"} 262144"));
    assert!(
        page.trim_end().ends_with("# EOF"),
        "OpenMetrics text: {page}"
    );
    // Only /metrics is served.
    let other = get(&lab, 9779, "/");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

#[test]
fn flush_removes_the_sessions_of_one_protocol() {
    let lab = Lab::new("fl").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    udp_flow(&lab, 25000);
    assert!(integration_tests::traffic::ping(&lab.lan, SERVER, 1).unwrap());
    let out = nat.ctl(&["flush", "--proto", "udp"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "flushed 1 entry"
    );
    let left = nat.json(&["sessions"]);
    assert!(
        left.as_array()
            .unwrap()
            .iter()
            .all(|s| s["proto"] == "icmp"),
        "{left}"
    );
    assert!(nat.ctl(&["flush"]).status.success());
    assert!(nat.json(&["sessions"]).as_array().unwrap().is_empty());
}

/// `flush` and `passthrough` read CONFIG, move its route generation on and write it back; a
/// reload writes a new CONFIG. Each waits for the other, so neither undoes the other's write.
#[test]
fn a_flush_waits_for_a_config_change_in_progress_and_keeps_it() {
    let lab = Lab::new("cl").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let instance = nat_ctl::pins::Instance::new(&nat.instance).unwrap();
    // This test plays a reload in progress: it holds the lock, as the daemon does while it
    // writes its new CONFIG.
    let lock = nat_ctl::pins::lock_file(&instance.config_lock_path()).unwrap();
    let mut flush = std::process::Command::new("nsenter")
        .arg(format!("--net={}", lab.router.path()))
        .arg(integration_tests::daemon::nat_ctl_bin())
        .args(["--instance", &nat.instance, "flush"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until flush has the lock file open (it takes the lock before it reads CONFIG), or
    // has finished without waiting for it.
    let lock_path = instance.config_lock_path();
    let has_lock_open = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == lock_path))
        })
    };
    let waiting = integration_tests::wait_for(Duration::from_secs(10), || {
        if flush.try_wait().unwrap().is_some() {
            return Some(false);
        }
        has_lock_open(flush.id()).then_some(true)
    });
    assert_eq!(
        waiting,
        Some(true),
        "flush went on without waiting for the change in progress"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        flush.try_wait().unwrap().is_none(),
        "flush wrote CONFIG while a change was in progress"
    );
    let mut maps = nat_ctl::state::NatMaps::open_pinned(&instance).unwrap();
    let mut cfg = maps.read_config().unwrap();
    cfg.timeouts.udp = 77;
    maps.config.set(0, cfg, 0).unwrap();
    drop(lock);
    assert!(flush.wait().unwrap().success());
    let after = maps.read_config().unwrap();
    assert_eq!(after.timeouts.udp, 77, "the flush undid the change");
    assert_ne!(
        after.route_gen, cfg.route_gen,
        "the flush moved the generation on"
    );
}

/// A service the router starts after the daemon keeps its port: within a second or two the
/// pool no longer has it, so no LAN flow takes it and what the WAN sends to it reaches the
/// service. When the service stops the port stays out of the pool (a LAN host could take it
/// before the service restarts), until a reload.
#[test]
fn a_port_the_router_starts_using_after_the_daemon_stays_the_routers() {
    let lab = Lab::new("lp").unwrap();
    let nat = NatDaemon::start_with_config(&lab, "[ports]\nrange = \"30000-30007\"\n").unwrap();
    let pool_len = || {
        nat.json(&["status"])["port_pool"]["ordinary"]
            .as_u64()
            .unwrap()
    };
    let wait_for_pool = |want: u64| {
        let reached = integration_tests::wait_for(Duration::from_secs(10), || {
            (pool_len() == want).then_some(())
        });
        assert!(
            reached.is_some(),
            "the pool has {} ports, not {want}",
            pool_len()
        );
    };
    assert_eq!(pool_len(), 8);
    let any = std::net::Ipv4Addr::UNSPECIFIED;
    let service = udp_socket(
        &lab.router,
        SocketAddrV4::new(any, 30003),
        Duration::from_millis(1500),
    )
    .unwrap();
    wait_for_pool(7);
    // Every other port of the range to LAN flows, each from a source port the pool does not
    // have (so each takes a random free one), and one more that finds none.
    let server = SocketAddrV4::new(SERVER, 7000);
    // Idle for up to two unanswered requests (a flow's first try that drew no free port, and
    // its retry): with udp_echo's idle timeout, the server was gone before the retry came,
    // and the test failed now and then under a full run's load.
    let idle = integration_tests::traffic::SHORT_TIMEOUT * 3;
    let echo = integration_tests::traffic::udp_echo_idle(&lab.wan, server, 8, idle).unwrap();
    let mut ports = Vec::new();
    for sport in 41000..41008 {
        // A new flow draws random pool ports a bounded number of times (32): with one free
        // port in seven, a draw misses it now and then (0.7%); the application's retry draws
        // again.
        let src = SocketAddrV4::new(LAN_HOST_A, sport);
        let r = (0..2).find_map(|_| udp_request(&lab.lan, src, server, b"x").unwrap());
        ports.push(r.is_some());
    }
    let seen: Vec<u16> = echo.join().unwrap().iter().map(|a| a.port()).collect();
    // What the NAT says, should this fail again.
    if seen.len() != 7 {
        let text = |args: &[&str]| String::from_utf8_lossy(&nat.ctl(args).stdout).into_owned();
        panic!(
            "seven flows for seven ports: {seen:?} {ports:?}\nstatus: {}\nsessions: {}\nstats: {}",
            text(&["status"]),
            text(&["sessions"]),
            text(&["stats"])
        );
    }
    assert!(
        !seen.contains(&30003),
        "a LAN flow took the router's port: {seen:?}"
    );
    udp_send(
        &lab.wan,
        SERVER,
        SocketAddrV4::new(integration_tests::lab::ROUTER_WAN, 30003),
        b"for the router",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = service
        .recv_from(&mut buf)
        .expect("the service got its datagram");
    assert_eq!(&buf[..n], b"for the router");
    drop(service);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        pool_len(),
        7,
        "a stopped service's port came back into the pool"
    );
    assert!(nat.ctl(&["reload"]).status.success());
    wait_for_pool(8);
}

#[test]
fn sessions_filter_by_host_and_top_shows_rates() {
    let lab = Lab::new("top").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    udp_flow(&lab, 26000);
    assert!(integration_tests::traffic::ping(&lab.lan, SERVER, 1).unwrap());
    let mine = nat.json(&["sessions", "--src", "192.168.1.2"]);
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");
    assert!(
        nat.json(&["sessions", "--src", "192.168.1.3"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let to_server = nat.json(&["sessions", "--dst", "203.0.113.2", "--proto", "icmp"]);
    assert_eq!(to_server.as_array().unwrap().len(), 1, "{to_server}");
    // top, while a ping runs.
    let out = std::thread::scope(|s| {
        s.spawn(|| integration_tests::traffic::ping(&lab.lan, SERVER, 10).unwrap());
        nat.ctl(&["top", "--count", "2"])
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("packets/s") && lines[0].contains("new sessions/s"),
        "{text}"
    );
    let rates: Vec<f64> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(
        rates.iter().any(|r| *r > 0.0),
        "a ping at 5/s shows up: {text}"
    );
}

#[test]
fn data_path_log_lines_reach_the_daemon_log_at_debug() {
    let lab = Lab::new("log").unwrap();
    let nat = NatDaemon::start(&lab, &["--log-level", "debug"]).unwrap();
    // Unsolicited: dropped by the WAN program, which logs why.
    let _ = udp_request(
        &lab.wan,
        SocketAddrV4::new(SERVER, 9999),
        SocketAddrV4::new(integration_tests::lab::ROUTER_WAN, 20001),
        b"knock",
    )
    .unwrap();
    let logged = integration_tests::wait_for(Duration::from_secs(5), || {
        nat.log().contains("drop: drop_no_mapping").then_some(())
    });
    assert!(logged.is_some(), "log: {}", nat.log());
}

#[test]
fn a_lan_host_that_changes_its_mac_address_gets_its_replies_there_at_once() {
    let lab = Lab::new("mac").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 2).unwrap();
    let client = SocketAddrV4::new(LAN_HOST_A, 5000);
    assert!(
        udp_request(&lab.lan, client, server, b"1")
            .unwrap()
            .is_some()
    );
    let generation = || nat.json(&["status"])["route_generation"].as_u64().unwrap();
    let before = generation();

    // Host A's NIC is replaced (new MAC address) and the router learns it, as from a
    // gratuitous ARP. The daemon hears it from netlink and has the kept next hops
    // looked up again.
    let mac = "02:00:00:00:aa:01";
    lab.lan
        .ip(&["link", "set", "dev", "eth0", "address", mac])
        .unwrap();
    lab.router
        .ip(&[
            "neigh",
            "replace",
            &LAN_HOST_A.to_string(),
            "lladdr",
            mac,
            "dev",
            integration_tests::lab::LAN_IF,
        ])
        .unwrap();
    let moved = integration_tests::wait_for(Duration::from_secs(5), || {
        (generation() > before).then_some(())
    });
    assert!(
        moved.is_some(),
        "the daemon did not react; log: {}",
        nat.log()
    );
    assert!(
        udp_request(&lab.lan, client, server, b"2")
            .unwrap()
            .is_some(),
        "the reply must reach host A at its new address"
    );
    echo.join().unwrap();
}

#[test]
fn a_new_wan_address_from_dhcp_is_followed_and_the_old_sessions_dropped() {
    let lab = Lab::new("dhc").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let server = SocketAddrV4::new(SERVER, 7000);
    let echo = udp_echo(&lab.wan, server, 2).unwrap();
    assert!(
        udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 5000), server, b"1")
            .unwrap()
            .is_some()
    );
    // The lease changes: the old address goes, a new one comes.
    let wan = integration_tests::lab::WAN_IF;
    let new_addr = std::net::Ipv4Addr::new(203, 0, 113, 9);
    lab.router
        .ip(&["addr", "del", "203.0.113.1/24", "dev", wan])
        .unwrap();
    lab.router
        .ip(&["addr", "add", "203.0.113.9/24", "dev", wan])
        .unwrap();
    let followed = integration_tests::wait_for(Duration::from_secs(5), || {
        let s = nat.json(&["status"]);
        (s["wan"]["address"] == new_addr.to_string()).then_some(())
    });
    assert!(
        followed.is_some(),
        "WAN address not followed; log: {}",
        nat.log()
    );
    let sessions = nat.json(&["sessions"]);
    assert_eq!(
        sessions.as_array().unwrap().len(),
        0,
        "old sessions dropped: {sessions}"
    );

    assert!(
        udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 5001), server, b"2")
            .unwrap()
            .is_some(),
        "traffic flows from the new address"
    );
    let seen = echo.join().unwrap();
    assert_eq!(
        seen[1].ip(),
        std::net::IpAddr::V4(new_addr),
        "the server sees the new address: {seen:?}"
    );
}

#[test]
fn an_interface_that_goes_away_and_comes_back_is_attached_again() {
    let lab = Lab::new("plg").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    udp_flow(&lab, 5000);
    let lan_program = || nat.json(&["status"])["lan"]["program_id"].as_u64();
    assert!(lan_program().is_some());

    // The LAN NIC is unplugged (the veth pair goes), then a new one of the same name comes.
    lab.router
        .ip(&["link", "del", integration_tests::lab::LAN_IF])
        .unwrap();
    let reported = integration_tests::wait_for(Duration::from_secs(5), || {
        nat.log().contains("went away").then_some(())
    });
    assert!(reported.is_some(), "not reported; log: {}", nat.log());
    let status = nat.ctl(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        !status.status.success() && json["lan"]["program_id"].is_null(),
        "status must not say running while the LAN interface is gone: {json}"
    );
    lab.connect_lan().unwrap();
    let back = integration_tests::wait_for(Duration::from_secs(5), || {
        nat.log().contains("attached again").then_some(())
    });
    assert!(back.is_some(), "not attached again; log: {}", nat.log());

    // Traffic is translated by XDP on the new interface again.
    let before = nat.counter("out_redirected");
    udp_flow(&lab, 5001);
    assert!(
        nat.counter("out_redirected") > before,
        "the new LAN interface runs the NAT: {}",
        nat.json(&["stats"])
    );
    assert!(nat.ctl(&["status"]).status.success(), "{}", nat.log());
}

#[test]
fn an_instance_that_is_gone_leaves_nothing_behind() {
    let lab = Lab::new("gone").unwrap();
    let pid_file =
        |instance: &str| std::path::Path::new("/run/xdp-nat").join(format!("{instance}.pid"));
    let pins = |instance: &str| std::path::Path::new("/sys/fs/bpf").join(instance);
    // Stopped: with --detach-on-exit nothing stays, without it only the pins (the NAT runs on).
    let mut nat = NatDaemon::start(&lab, &[]).unwrap();
    assert!(
        pid_file(&nat.instance).exists(),
        "a running daemon has its pid file"
    );
    assert!(nat.stop().is_some_and(|s| s.success()));
    assert!(
        !pid_file(&nat.instance).exists(),
        "the pid file outlived its daemon"
    );
    assert!(!pins(&nat.instance).exists());
    drop(nat);
    let instance = integration_tests::unique("i");
    let mut nat = NatDaemon::start_instance(&lab, &instance, &[]).unwrap();
    assert!(nat.stop().is_some_and(|s| s.success()));
    assert!(
        !pid_file(&instance).exists(),
        "the pid file outlived its daemon"
    );
    assert!(pins(&instance).exists(), "the NAT runs on from its pins");
    // Killed: the pid file stays (nothing ran), until `detach` removes the instance.
    let mut nat = NatDaemon::start_instance(&lab, &instance, &[]).unwrap();
    nat.kill();
    let out = nat.ctl(&["detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pid_file(&instance).exists(), "detach left the pid file");
    assert!(!pins(&instance).exists());
}

#[test]
fn an_instance_whose_interfaces_went_away_is_reported_and_runs_again() {
    let lab = Lab::new("sev").unwrap();
    let instance = integration_tests::unique("i");
    // Without --detach-on-exit: the NAT stays pinned when the daemon stops.
    let mut first = NatDaemon::start_instance(&lab, &instance, &[]).unwrap();
    udp_flow(&lab, 41000);
    assert!(first.stop().is_some_and(|s| s.success()));
    // Both interfaces removed while no daemon runs: the pinned links are severed.
    lab.router.ip(&["link", "del", "lan0"]).unwrap();
    lab.router.ip(&["link", "del", "wan0"]).unwrap();
    let out = first.ctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("interfaces are gone") && text.contains("detach"),
        "{text}"
    );
    let json = first.ctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["state"], "interfaces-gone");
    // They come back under the same names; the daemon attaches afresh and keeps the sessions.
    lab.connect_wan().unwrap();
    lab.connect_lan().unwrap();
    let second = NatDaemon::start_instance(&lab, &instance, &[]).unwrap();
    assert!(
        second.log().contains("1 sessions adopted"),
        "{}",
        second.log()
    );
    udp_flow(&lab, 41001);
    assert_eq!(second.json(&["status"])["state"], "running");
    drop(second);
    drop(first);
}

#[test]
fn reload_applies_filtering_port_range_and_switches_and_keeps_live_sessions() {
    let lab = Lab::new("rl2").unwrap();
    let nat = NatDaemon::start_with_config(&lab, "[ports]\nrange = \"30000-30100\"\n").unwrap();
    let cfg = nat.config_path().to_path_buf();
    let reload = |toml: &str| {
        std::fs::write(&cfg, toml).unwrap();
        let out = nat.ctl(&["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let request_to = |sport: u16, dport: u16| {
        let server = SocketAddrV4::new(SERVER, dport);
        let echo = udp_echo(&lab.wan, server, 1).unwrap();
        let r = udp_request(&lab.lan, SocketAddrV4::new(LAN_HOST_A, sport), server, b"x").unwrap();
        let seen = echo.join().unwrap();
        (r.is_some(), seen.first().map(|a| a.port()))
    };
    let request = |sport: u16| request_to(sport, 7000);
    assert_eq!(
        request(30050),
        (true, Some(30050)),
        "the source port kept, in the range"
    );
    // A second WAN host, to see filtering.
    lab.wan
        .ip(&["addr", "add", "203.0.113.3/24", "dev", "eth0"])
        .unwrap();
    let from_other = || {
        let host = udp_socket(
            &lab.lan,
            SocketAddrV4::new(LAN_HOST_A, 30050),
            Duration::from_millis(700),
        )
        .unwrap();
        udp_send(
            &lab.wan,
            std::net::Ipv4Addr::new(203, 0, 113, 3),
            SocketAddrV4::new(integration_tests::lab::ROUTER_WAN, 30050),
            b"from another host",
        )
        .unwrap();
        let mut buf = [0u8; 64];
        host.recv_from(&mut buf).is_ok()
    };
    assert!(
        !from_other(),
        "address-dependent filtering lets another host in"
    );

    // The range moves: new flows take ports in the new one, and the live session keeps its
    // port, its replies still reaching the LAN host, not the router.
    reload("filtering = \"endpoint-independent\"\n[ports]\nrange = \"20000-20100\"\n");
    assert_eq!(
        request(30050),
        (true, Some(30050)),
        "the live session after the move"
    );
    let (ok, port) = request(31000);
    assert!(
        ok && port.is_some_and(|p| (20000..=20100).contains(&p)),
        "{port:?}"
    );
    // Filtering changed too.
    assert!(
        from_other(),
        "endpoint-independent filtering lets another host in"
    );

    // A passthrough switch from the file.
    reload("[ports]\nrange = \"20000-20100\"\n[passthrough]\nl2tp = false\n");
    assert_eq!(nat.json(&["passthrough"])["l2tp"], "off");
    assert!(!request_to(1701, 1701).0, "L2TP while its switch is off");
    assert!(nat.counter("drop_l2tp_switch_off") >= 1);
    assert!(request(31001).0, "other UDP");
}

#[test]
fn status_from_another_namespace_names_none_of_its_interfaces() {
    let lab = Lab::new("ons").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    // The pins are the host's; the server's namespace has interfaces of its own, with
    // ifindexes that may equal the router's.
    let other = lab.wan.path();
    let out = integration_tests::daemon::nat_ctl(&other, &["--instance", &nat.instance, "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("another network namespace"), "{text}");
    assert!(!text.contains("eth0") && !text.contains("lo "), "{text}");
    let out = integration_tests::daemon::nat_ctl(
        &other,
        &["--instance", &nat.instance, "status", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "other-namespace");
    // From its own namespace, all is as before.
    assert_eq!(nat.json(&["status"])["state"], "running");
}
