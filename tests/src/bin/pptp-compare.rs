//! Runs the two-clients-same-call-id PPTP scenario through the kernel's own NAT (nftables
//! masquerade with the nf_conntrack_pptp helper, which brings nf_nat_pptp) and prints what
//! each client got, for comparison with xdp-nat (tests/tests/vpn_e2e.rs runs the same
//! scenario through xdp-nat). `cargo run -p integration-tests --bin pptp-compare`, as root.

use anyhow::Result;
use integration_tests::{
    lab::{LAN_HOST_A, LAN_HOST_B, Lab, SERVER, WAN_IF},
    vpn_peers::{pptp_client, pptp_server},
};

const RULES: &str = r#"
table ip ref {
    ct helper pptp-helper { type "pptp" protocol tcp; }
    chain pre { type filter hook prerouting priority filter; tcp dport 1723 ct helper set "pptp-helper"; }
    chain post { type nat hook postrouting priority srcnat; oifname "WAN" masquerade; }
}
"#;

fn main() -> Result<()> {
    let lab = Lab::new("ref")?;
    lab.router.sysctl("net.ipv4.ip_forward", "1")?;
    let rules = std::env::temp_dir().join(format!("{}.nft", lab.router.name));
    std::fs::write(&rules, RULES.replace("WAN", WAN_IF))?;
    lab.router
        .exec("nft", &["-f", &rules.display().to_string()])?;
    // `pptp-compare 1` runs a single client: the baseline the kernel is built for.
    let clients: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2)
        .clamp(1, 2);
    let server = pptp_server(&lab.wan, SERVER, clients)?;
    for (name, host) in [("A", LAN_HOST_A), ("B", LAN_HOST_B)]
        .into_iter()
        .take(clients)
    {
        match pptp_client(&lab.lan, host, SERVER, 7) {
            Ok(c) => println!(
                "client {name} ({host}) call id 7: reply peer call id {}, GRE received {:?}",
                c.reply_peer_call_id,
                c.gre
                    .iter()
                    .map(|(s, id, p)| format!("{s} call {id} {:?}", String::from_utf8_lossy(p)))
                    .collect::<Vec<_>>()
            ),
            Err(e) => println!("client {name} ({host}): {e:#}"),
        }
        if let Ok(o) = lab.router.cmd("conntrack").args(["-L", "expect"]).output() {
            print!(
                "expectations after client {name}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    match server.join() {
        Ok(Ok(calls)) => {
            for c in calls {
                println!(
                    "server: call from {} with peer call id {}, GRE from the client: {}",
                    c.peer,
                    c.peer_call_id,
                    c.gre_from_client.len()
                );
            }
        }
        Ok(Err(e)) => println!("server: {e:#}"),
        Err(_) => println!("server thread panicked"),
    }
    let out = lab.router.cmd("conntrack").args(["-L"]).output();
    if let Ok(o) = out {
        print!("{}", String::from_utf8_lossy(&o.stdout));
    }
    Ok(())
}
