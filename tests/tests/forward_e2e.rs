//! Port forwards end to end: the real nat-ctl, a real web server (python3 -m http.server)
//! on a LAN host and a real client (curl) on the WAN, plus raw sockets where a test needs to
//! see addresses and ports.

use integration_tests::{
    daemon::NatDaemon,
    lab::{FAR_HOST, LAN_HOST_A, LAN_HOST_B, Lab, ROUTER_WAN, SERVER},
    traffic::{TcpSink, sha256, tcp_connect, tcp_send, udp_echo, udp_request},
    wait_for,
};
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    process::{Child, Stdio},
    time::Duration,
};

/// A web server on a LAN host: python3's http.server serving a directory, stopped on drop.
struct WebServer {
    child: Child,
    dir: std::path::PathBuf,
}

impl WebServer {
    fn start(lab: &Lab, bind: std::net::Ipv4Addr, port: u16, file: &[u8]) -> WebServer {
        let dir = std::env::temp_dir().join(integration_tests::unique("www"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("file.bin"), file).unwrap();
        let child = lab
            .lan
            .cmd("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind"])
            .arg(bind.to_string())
            .arg("--directory")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 -m http.server");
        // Up once it accepts on the LAN side.
        let up = wait_for(Duration::from_secs(10), || {
            lab.lan
                .run(move || TcpStream::connect((bind, port)).is_ok())
                .unwrap()
                .then_some(())
        });
        assert!(up.is_some(), "the web server did not start");
        WebServer { child, dir }
    }

    /// What it logged: a line per request, with the client's address first.
    fn log(mut self) -> String {
        let _ = self.child.kill();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        let _ = self.child.wait();
        s
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl` from the WAN server: the body, or None if it could not fetch it.
fn curl(lab: &Lab, url: &str) -> Option<Vec<u8>> {
    let out = lab
        .wan
        .cmd("curl")
        .args(["--silent", "--fail", "--max-time", "5", url])
        .output()
        .expect("curl");
    out.status.success().then_some(out.stdout)
}

fn data(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect()
}

#[test]
fn a_wan_client_fetches_from_a_lan_web_server_through_a_forward() {
    let lab = Lab::new("fwweb").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let file = data(3 << 20);
    let web = WebServer::start(&lab, LAN_HOST_A, 80, &file);
    let url = format!("http://{ROUTER_WAN}:8080/file.bin");
    assert!(curl(&lab, &url).is_none(), "reachable before any forward");

    nat.ctl_ok(&["forward", "add", "tcp", "8080", &format!("{LAN_HOST_A}:80")]);
    let body = curl(&lab, &url).unwrap_or_else(|| panic!("no answer; log: {}", nat.log()));
    assert_eq!(
        sha256(&body),
        sha256(&file),
        "the body differs from the file"
    );

    // The server saw the client's own address (a forward translates the destination only).
    let log = web.log();
    assert!(log.contains(&SERVER.to_string()), "server log: {log}");
    // The session carries the forwarded port; the forward counts the new flow.
    let sessions = nat.json(&["sessions", "--proto", "tcp"]);
    let forwarded = sessions.as_array().unwrap().iter().any(|s| {
        s["internal"] == format!("{LAN_HOST_A}:80") && s["external"] == format!("{ROUTER_WAN}:8080")
    });
    assert!(forwarded, "no session on the forwarded port: {sessions}");
    let list = nat.json(&["forward"]);
    assert_eq!(list[0]["port"], 8080, "{list}");
    assert_eq!(list[0]["to"], LAN_HOST_A.to_string(), "{list}");
    assert!(list[0]["hits"].as_u64().unwrap() >= 1, "{list}");
    assert!(nat.counter("forward_session_created") >= 1);
}

#[test]
fn replies_leave_from_the_forwarded_port_and_a_udp_forward_answers() {
    let lab = Lab::new("fwudp").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    nat.ctl_ok(&[
        "forward",
        "add",
        "udp",
        "5353-5354",
        &format!("{LAN_HOST_B}:7000"),
    ]);
    // 5354 leads to 7001 (the LAN range starts at 7000).
    let echo = udp_echo(&lab.lan, SocketAddrV4::new(LAN_HOST_B, 7001), 1).unwrap();
    // The WAN client's socket is connected to the forwarded endpoint: the kernel hands it a
    // reply only if the reply comes from exactly that address and port.
    let reply = lab
        .wan
        .run(|| -> std::io::Result<Option<Vec<u8>>> {
            let s = std::net::UdpSocket::bind((SERVER, 40001))?;
            s.connect((ROUTER_WAN, 5354))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send(b"ping")?;
            let mut buf = [0u8; 64];
            Ok(s.recv(&mut buf).ok().map(|n| buf[..n].to_vec()))
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        reply.as_deref(),
        Some(&b"echo:ping"[..]),
        "log: {}",
        nat.log()
    );
    let seen = echo.join().unwrap();
    assert_eq!(
        seen,
        [SocketAddr::from((SERVER, 40001))],
        "the LAN host saw the client itself"
    );
}

#[test]
fn a_source_restricted_forward_admits_its_prefix_only() {
    let lab = Lab::new("fwsrc").unwrap();
    let far = lab.far().unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    let to = format!("{LAN_HOST_A}:9000");
    nat.ctl_ok(&[
        "forward",
        "add",
        "tcp",
        "9000",
        &to,
        "--from",
        "198.51.100.0/24",
    ]);

    // From the server, outside the prefix: nothing arrives.
    let listener = lab
        .lan
        .run(|| TcpListener::bind((LAN_HOST_A, 9000)))
        .unwrap()
        .unwrap();
    let refused = tcp_connect(&lab.wan, SocketAddrV4::new(ROUTER_WAN, 9000)).unwrap();
    assert!(refused.is_err(), "a source outside the prefix got through");
    assert!(
        nat.counter("drop_forward_source") >= 1,
        "stats: {}",
        nat.json(&["stats"])
    );
    drop(listener);

    // From inside it (the far host, routed through the server), a transfer arrives intact.
    let sink = TcpSink::start(&lab.lan, LAN_HOST_A, 9000).unwrap();
    let payload = data(1 << 20);
    let hash = tcp_send(
        &far,
        FAR_HOST,
        SocketAddrV4::new(ROUTER_WAN, 9000),
        &payload,
    )
    .unwrap_or_else(|e| panic!("{e:#}; log: {}", nat.log()));
    let (peer, n, digest) = sink.finish().unwrap();
    assert_eq!(
        (n, digest, hash),
        (payload.len(), sha256(&payload), sha256(&payload))
    );
    assert_eq!(peer.ip(), std::net::IpAddr::V4(FAR_HOST));
}

#[test]
fn removing_a_forward_stops_its_new_flows_and_nothing_else() {
    let lab = Lab::new("fwdel").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    for (port, to) in [("7100", LAN_HOST_A), ("7200", LAN_HOST_B)] {
        nat.ctl_ok(&["forward", "add", "tcp", port, &format!("{to}:{port}")]);
    }
    let l1 = lab
        .lan
        .run(|| TcpListener::bind((LAN_HOST_A, 7100)))
        .unwrap()
        .unwrap();
    let l2 = lab
        .lan
        .run(|| TcpListener::bind((LAN_HOST_B, 7200)))
        .unwrap()
        .unwrap();
    // A connection through the first forward, and an outbound one of the LAN's own.
    let mut c1 = lab
        .wan
        .run(|| TcpStream::connect((ROUTER_WAN, 7100)))
        .unwrap()
        .expect("connect through the forward");
    let (mut s1, _) = l1.accept().unwrap();
    let out_sink = TcpSink::start(&lab.wan, SERVER, 7300).unwrap();

    let out = nat.ctl(&["forward", "del", "tcp", "7100"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed tcp 7100"));

    // The established connection still carries data both ways.
    c1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c1.write_all(b"still there?").unwrap();
    let mut buf = [0u8; 12];
    s1.read_exact(&mut buf).unwrap();
    s1.write_all(b"yes").unwrap();
    let mut yes = [0u8; 3];
    c1.read_exact(&mut yes)
        .expect("the reply over the removed forward's session");
    // A new connection to the removed forward does not get through.
    let new = tcp_connect(&lab.wan, SocketAddrV4::new(ROUTER_WAN, 7100)).unwrap();
    assert!(new.is_err(), "a new flow went through a removed forward");
    // The other forward, and the LAN's outbound traffic, are untouched.
    let c2 = lab
        .wan
        .run(|| TcpStream::connect((ROUTER_WAN, 7200)))
        .unwrap();
    assert!(c2.is_ok(), "the other forward stopped working");
    drop(l2);
    let payload = data(1 << 16);
    let hash = tcp_send(&lab.lan, LAN_HOST_A, out_sink.addr, &payload).unwrap();
    assert_eq!(hash, sha256(&payload));
    out_sink.finish().unwrap();
    let list = nat.json(&["forward"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["port"], 7200, "{list}");
}

#[test]
fn forwards_from_the_file_are_applied_at_start_and_follow_a_reload() {
    let lab = Lab::new("fwcfg").unwrap();
    let toml = format!("[[forward]]\nproto = \"udp\"\nport = 6000\nto = \"{LAN_HOST_A}:6100\"\n");
    let nat = NatDaemon::start_with_config(&lab, &toml).unwrap();
    let echo = udp_echo(&lab.lan, SocketAddrV4::new(LAN_HOST_A, 6100), 1).unwrap();
    let reply = udp_request(
        &lab.wan,
        SocketAddrV4::new(SERVER, 41000),
        SocketAddrV4::new(ROUTER_WAN, 6000),
        b"cfg",
    )
    .unwrap();
    assert_eq!(
        reply.as_deref(),
        Some(&b"echo:cfg"[..]),
        "log: {}",
        nat.log()
    );
    echo.join().unwrap();
    let list = nat.json(&["forward"]);
    assert_eq!(list[0]["origin"], "file", "{list}");

    // A forward added by command survives the reload; the file's moves to another port.
    nat.ctl_ok(&["forward", "add", "tcp", "6500", &LAN_HOST_B.to_string()]);
    let moved =
        format!("[[forward]]\nproto = \"udp\"\nport = \"6001\"\nto = \"{LAN_HOST_A}:6100\"\n");
    std::fs::write(nat.config_path(), moved).unwrap();
    nat.ctl_ok(&["reload"]);
    let list = nat.json(&["forward"]);
    let mut ports: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["port"].as_u64().unwrap())
        .collect();
    ports.sort();
    assert_eq!(ports, [6001, 6500], "{list}");
    // A file whose forward cannot be (outside the LAN) changes nothing.
    let bad = "[[forward]]\nproto = \"tcp\"\nport = 6002\nto = \"10.9.9.9\"\n";
    std::fs::write(nat.config_path(), bad).unwrap();
    let out = nat.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1)
            && err.starts_with("error:")
            && err.contains("not on the LAN side"),
        "a bad forward was accepted: {err}"
    );
    let after = nat.json(&["forward"]);
    assert_eq!(after, list, "a failed reload changed the forwards");
}

#[test]
fn a_lan_host_reaches_a_forward_at_the_wan_address_and_is_seen_from_it() {
    let lab = Lab::new("fwhp").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    nat.ctl_ok(&[
        "forward",
        "add",
        "tcp",
        "8443",
        &format!("{LAN_HOST_A}:443"),
    ]);
    let sink = TcpSink::start(&lab.lan, LAN_HOST_A, 443).unwrap();
    let payload = data(1 << 20);
    // Host B uses the public address, as a WAN client would (NAT reflection).
    let hash = tcp_send(
        &lab.lan,
        LAN_HOST_B,
        SocketAddrV4::new(ROUTER_WAN, 8443),
        &payload,
    )
    .unwrap_or_else(|e| panic!("{e:#}; log: {}", nat.log()));
    let (peer, n, digest) = sink.finish().unwrap();
    assert_eq!(
        (n, digest, hash),
        (payload.len(), sha256(&payload), sha256(&payload))
    );
    // The forwarded host sees B's external endpoint, not B's LAN address.
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(ROUTER_WAN),
        "seen from {peer}"
    );
    let sessions = nat.json(&["sessions", "--proto", "tcp"]);
    let b_external = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["internal"]
                .as_str()
                .is_some_and(|i| i.starts_with(&LAN_HOST_B.to_string()))
        })
        .map(|s| s["external"].clone());
    assert_eq!(
        b_external,
        Some(serde_json::Value::String(format!(
            "{ROUTER_WAN}:{}",
            peer.port()
        ))),
        "{sessions}"
    );
    assert!(nat.counter("hairpin_translated") > 0);
}

#[test]
fn forward_errors_against_a_running_nat_name_what_is_wrong() {
    let lab = Lab::new("fwerr").unwrap();
    let nat = NatDaemon::start(&lab, &[]).unwrap();
    nat.ctl_ok(&["forward", "add", "tcp", "8080", &format!("{LAN_HOST_A}:80")]);
    // Host A's mapping holds UDP 20000 (a free source port is kept); a service of the router
    // listens on TCP 2222.
    let _ = udp_request(
        &lab.lan,
        SocketAddrV4::new(LAN_HOST_A, 20000),
        SocketAddrV4::new(SERVER, 9),
        b"x",
    );
    let _service = lab
        .router
        .run(|| TcpListener::bind(("0.0.0.0", 2222)))
        .unwrap()
        .unwrap();
    let b = LAN_HOST_B.to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["add", "tcp", "8079-8081", &b],
            "tcp 8079-8081 is already forwarded",
        ),
        (
            vec!["add", "tcp", "9000", "10.1.2.3"],
            "not on the LAN side",
        ),
        (
            vec!["add", "tcp", "9000", "192.168.1.1"],
            "router's own LAN address",
        ),
        (vec!["add", "tcp", "9000", "192.168.1.255"], "broadcast"),
        (
            vec!["add", "udp", "20000", &b],
            "held by the mapping of 192.168.1.2:20000",
        ),
        (
            vec!["add", "both", "2222", &b],
            "router itself listens on port 2222",
        ),
        (vec!["add", "tcp", "40000", &b], "ephemeral range"),
        (vec!["del", "tcp", "9999"], "no forward of tcp 9999"),
        (vec!["del", "udp", "8080"], "no forward of udp 8080"),
    ];
    for (args, want) in cases {
        let mut full = vec!["forward"];
        full.extend(&args);
        let out = nat.ctl(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "forward {args:?}: {stderr}");
        assert!(
            stderr.starts_with("error:") && stderr.lines().count() == 1 && stderr.contains(want),
            "forward {args:?}: {stderr:?} lacks {want:?}"
        );
    }
    // None of them changed anything.
    let list = nat.json(&["forward"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // A forward of GRE: no ports, one of them.
    nat.ctl_ok(&["forward", "add", "gre", &b]);
    let out = nat.ctl(&["forward", "add", "gre", &LAN_HOST_A.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gre is forwarded already (gre 192.168.1.3)"),
        "{err}"
    );
    let list = nat.json(&["forward"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|f| f["proto"] == "gre" && f["to"] == b.as_str()),
        "{list}"
    );
    assert!(nat.ctl(&["forward", "del", "gre"]).status.success());
}

#[test]
fn a_dmz_host_gets_the_new_flows_nothing_else_explains() {
    let lab = Lab::new("fwdmz").unwrap();
    let nat = NatDaemon::start_with_config(&lab, "[dmz]\nhost = \"192.168.1.3\"\n").unwrap();
    let out = nat.ctl(&[
        "forward",
        "add",
        "tcp",
        "7400",
        &format!("{LAN_HOST_A}:7400"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A service of the router's own, which stays the router's.
    let service = lab
        .router
        .run(|| TcpListener::bind(("0.0.0.0", 2222)))
        .unwrap()
        .unwrap();
    let followed = wait_for(Duration::from_secs(5), || {
        let log = nat.log();
        (log.contains("taken out: [") && log.contains("2222")).then_some(())
    });
    assert!(followed.is_some(), "log: {}", nat.log());

    // Unsolicited TCP and UDP to ports nothing explains reach the DMZ host, B.
    let sink = TcpSink::start(&lab.lan, LAN_HOST_B, 5555).unwrap();
    let payload = data(1 << 18);
    let hash = tcp_send(
        &lab.wan,
        SERVER,
        SocketAddrV4::new(ROUTER_WAN, 5555),
        &payload,
    )
    .unwrap_or_else(|e| panic!("{e:#}; log: {}", nat.log()));
    let (peer, _, _) = sink.finish().unwrap();
    assert_eq!(hash, sha256(&payload));
    assert_eq!(peer.ip(), std::net::IpAddr::V4(SERVER));
    let echo = udp_echo(&lab.lan, SocketAddrV4::new(LAN_HOST_B, 5556), 1).unwrap();
    let reply = udp_request(
        &lab.wan,
        SocketAddrV4::new(SERVER, 43000),
        SocketAddrV4::new(ROUTER_WAN, 5556),
        b"dmz",
    )
    .unwrap();
    assert_eq!(reply.as_deref(), Some(&b"echo:dmz"[..]));
    echo.join().unwrap();
    // A forward still goes where it says, and the router keeps its own port.
    let sink = TcpSink::start(&lab.lan, LAN_HOST_A, 7400).unwrap();
    let hash = tcp_send(
        &lab.wan,
        SERVER,
        SocketAddrV4::new(ROUTER_WAN, 7400),
        &payload,
    )
    .unwrap();
    assert_eq!(hash, sha256(&payload));
    sink.finish().unwrap();
    let c = lab
        .wan
        .run(|| TcpStream::connect((ROUTER_WAN, 2222)))
        .unwrap();
    assert!(c.is_ok(), "the router's own service was not reached");
    service.set_nonblocking(false).unwrap();
    assert!(service.accept().is_ok());
}
