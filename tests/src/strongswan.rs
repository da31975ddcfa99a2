//! Real strongSwan IKEv2 peers for the passthrough tests: one `charon` per namespace, with
//! its userspace ESP (kernel-libipsec over TUN: this kernel has no ESP of its own), driven
//! over its own vici socket with `swanctl`. Each daemon gets a private /run (a mount
//! namespace of its own) so that several run at once, and is killed on drop.

use anyhow::{Context as _, Result, bail};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Netns;

const CHARON: &str = "/usr/lib/ipsec/charon";
/// The plugins these tests need (strongswan-charon, libcharon-extra-plugins for
/// kernel-libipsec, libstrongswan-standard-plugins for AES-GCM).
const PLUGINS: &str = "random nonce kdf aes gcm sha1 sha2 hmac gmp x509 pubkey pem pkcs1 \
                       kernel-libipsec kernel-netlink socket-default vici updown";
pub const PSK: &str = "xdp-nat-passthrough-test";

pub struct Charon {
    child: Child,
    dir: PathBuf,
    pub name: String,
}

impl Charon {
    /// Starts charon in `ns` and loads `swanctl_conf` (connections, pools, secrets). NAT
    /// keepalives every 2 s, so that a NAT mapping a test removed comes back quickly.
    pub fn start(ns: &Netns, name: &str, swanctl_conf: &str) -> Result<Charon> {
        let dir = std::env::temp_dir().join(format!("{}-{name}", crate::unique("sw")));
        std::fs::create_dir_all(&dir)?;
        let vici = dir.join("charon.vici");
        let conf = format!(
            "charon {{\n  load = {PLUGINS}\n  keep_alive = 2s\n  install_routes = yes\n  \
             filelog {{\n    log {{\n      path = {log}\n      default = 1\n      ike = 2\n    }}\n  }}\n  \
             plugins {{\n    vici {{ socket = unix://{vici} }}\n    \
             kernel-libipsec {{ allow_peer_ts = yes }}\n  }}\n}}\n",
            log = dir.join("charon.log").display(),
            vici = vici.display(),
        );
        std::fs::write(dir.join("strongswan.conf"), conf)?;
        std::fs::write(dir.join("swanctl.conf"), swanctl_conf)?;
        // A private /run: charon keeps its pid file there, one per daemon.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .args(["unshare", "--mount", "--propagation", "slave", "sh", "-c"])
            .arg(format!("mount -t tmpfs tmpfs /run && exec {CHARON}"))
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting charon (cargo xtask setup installs strongSwan)")?;
        let charon = Charon {
            child,
            dir,
            name: name.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vici.exists() {
            if Instant::now() > deadline {
                bail!("charon {name} did not start: {}", charon.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let conf = charon.dir.join("swanctl.conf");
        charon.swanctl_ok(&["--load-all", "--file", &conf.display().to_string()])?;
        Ok(charon)
    }

    /// `swanctl args...` against this daemon.
    pub fn swanctl(&self, args: &[&str]) -> Output {
        let uri = format!("unix://{}", self.dir.join("charon.vici").display());
        Command::new("swanctl")
            .args(args)
            .args(["--uri", &uri])
            .stdin(Stdio::null())
            .output()
            .expect("run swanctl")
    }

    pub fn swanctl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.swanctl(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "swanctl {args:?} on {} failed: {text}{}\n{}",
                self.name,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(text)
    }

    /// Initiates `child` (and its IKE SA), waiting up to 30 s.
    pub fn initiate(&self, child: &str) -> Result<String> {
        self.swanctl_ok(&["--initiate", "--child", child, "--timeout", "30"])
    }

    /// `swanctl --list-sas`.
    pub fn sas(&self) -> String {
        String::from_utf8_lossy(&self.swanctl(&["--list-sas"]).stdout).into_owned()
    }

    /// The last lines of the daemon's log, for failure messages.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A responder on `addr` handing out virtual IPs from `pool`, whose tunnels reach `inner`
/// (an address of its own), PSK authentication.
pub fn responder_conf(addr: std::net::Ipv4Addr, pool: &str, inner: &str) -> String {
    format!(
        "connections {{\n  rw {{\n    version = 2\n    local_addrs = {addr}\n    pools = vips\n    \
         local {{ auth = psk\n id = responder }}\n    remote {{ auth = psk }}\n    \
         children {{ net {{ local_ts = {inner}/32 }} }}\n  }}\n}}\n\
         pools {{ vips {{ addrs = {pool} }} }}\n\
         secrets {{ ike {{ secret = \"{PSK}\" }} }}\n"
    )
}

/// A road-warrior client `id` of the responder at `server`, asking for a virtual IP, its
/// child `net` reaching `inner`; dead peer detection every 2 s, restarting when the peer is
/// gone.
pub fn client_conf(id: &str, server: std::net::Ipv4Addr, inner: &str) -> String {
    format!(
        "connections {{\n  home {{\n    version = 2\n    remote_addrs = {server}\n    vips = 0.0.0.0\n    \
         dpd_delay = 2s\n    local {{ auth = psk\n id = {id} }}\n    \
         remote {{ auth = psk\n id = responder }}\n    \
         children {{ net {{ remote_ts = {inner}/32\n dpd_action = restart }} }}\n  }}\n}}\n\
         secrets {{ ike {{ secret = \"{PSK}\" }} }}\n"
    )
}
