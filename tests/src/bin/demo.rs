//! `cargo xtask demo`: a three-namespace lab with real traffic through the XDP NAT.

use anyhow::{Result, bail};
use integration_tests::{
    daemon::NatDaemon,
    lab::{LAN_HOST_A, LAN_HOST_B, Lab, ROUTER_WAN, SERVER},
    traffic::{TcpSink, ping, sha256, tcp_send, udp_echo, udp_request},
};
use std::net::SocketAddrV4;

fn step(title: &str) {
    println!("\n== {title}");
}

fn show(nat: &NatDaemon, args: &[&str]) {
    let out = nat.ctl(args);
    println!("$ nat-ctl {}", args.join(" "));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

fn main() -> Result<()> {
    println!("xdp-nat demo");
    println!("  LAN namespace     192.168.1.2 and 192.168.1.3, default route via 192.168.1.1");
    println!(
        "  router namespace  lan0 192.168.1.1/24, wan0 {ROUTER_WAN}/24, nat-ctl run --lan lan0 --wan wan0"
    );
    println!("  WAN namespace     server {SERVER} (it has no route back to 192.168.1.0/24)");
    let lab = Lab::new("demo")?;
    let nat = NatDaemon::start(&lab, &[])?;
    let mut ok = true;

    step("ping from 192.168.1.2 to the WAN server (ICMP echo, translated both ways)");
    let pinged = ping(&lab.lan, SERVER, 3)?;
    println!("3 of 3 echo replies: {}", if pinged { "yes" } else { "NO" });
    ok &= pinged;

    step("TCP: 192.168.1.2 sends 4 MiB to the server, which hashes it");
    let data: Vec<u8> = (0..4 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let sink = TcpSink::start(&lab.wan, SERVER, 5001)?;
    let echoed = tcp_send(&lab.lan, LAN_HOST_A, sink.addr, &data)?;
    let (peer, n, digest) = sink.finish()?;
    let same = echoed == sha256(&data) && digest == sha256(&data);
    println!("server saw the connection from {peer} (the WAN address, not 192.168.1.2), {n} bytes");
    println!(
        "sha256 equal on both ends: {}",
        if same { "yes" } else { "NO" }
    );
    ok &= same && peer.ip().to_string() == ROUTER_WAN.to_string();

    step("UDP: two LAN hosts both use source port 20000 towards the same server");
    let echo = udp_echo(&lab.wan, SocketAddrV4::new(SERVER, 7000), 2)?;
    let dst = SocketAddrV4::new(SERVER, 7000);
    let a = udp_request(
        &lab.lan,
        SocketAddrV4::new(LAN_HOST_A, 20000),
        dst,
        b"from A",
    )?;
    let b = udp_request(
        &lab.lan,
        SocketAddrV4::new(LAN_HOST_B, 20000),
        dst,
        b"from B",
    )?;
    let seen = echo.join().unwrap_or_default();
    println!("server saw: {seen:?} (two different external ports on {ROUTER_WAN})");
    println!(
        "host A got {:?}, host B got {:?}",
        a.as_deref().map(String::from_utf8_lossy),
        b.as_deref().map(String::from_utf8_lossy)
    );
    ok &= a.as_deref() == Some(b"echo:from A") && b.as_deref() == Some(b"echo:from B");

    step("an unsolicited datagram from the WAN to the router's address is dropped and counted");
    let before = nat.counter("drop_no_mapping");
    let _ = udp_request(
        &lab.wan,
        SocketAddrV4::new(SERVER, 9999),
        SocketAddrV4::new(ROUTER_WAN, 20001),
        b"knock",
    )?;
    let after = nat.counter("drop_no_mapping");
    println!("drop_no_mapping: {before} -> {after}");
    ok &= after > before;

    step("what nat-ctl shows from another shell");
    show(&nat, &["status"]);
    show(&nat, &["sessions"]);
    show(&nat, &["stats"]);

    println!();
    if !ok {
        bail!("the demo did not behave as described above");
    }
    println!(
        "All of the above went through the XDP programs on the router: the out_redirected and"
    );
    println!(
        "in_redirected counters count the packets translated and forwarded without the kernel's"
    );
    println!("forwarding path. The namespaces are removed now.");
    Ok(())
}
