//! The command-line contract (README's command table, docs/architecture.md "Command line");
//! black-box tests drive it.

use clap::{Args, Parser, Subcommand, ValueEnum};
use nat_common::passthrough::Switch;
use std::{net::Ipv4Addr, path::PathBuf};

use crate::pins::DEFAULT_INSTANCE;

/// How often `run` sweeps expired state unless told otherwise.
pub const DEFAULT_SWEEP_INTERVAL_SECS: u64 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "nat-ctl",
    version,
    about = "XDP NAT gateway: load, run and inspect xdp-nat"
)]
pub struct Cli {
    /// Instance name: its state is pinned under /sys/fs/bpf/NAME/.
    #[arg(long, global = true, default_value = DEFAULT_INSTANCE, value_name = "NAME")]
    pub instance: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the NAT to a LAN and a WAN interface and run until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Show whether the NAT runs, where, and how many sessions it holds.
    /// Exit 0: running; 3: pinned state but no daemon; 1: no instance.
    Status(JsonArg),
    /// List sessions, like `conntrack -L`.
    Sessions(SessionsArgs),
    /// Show every counter (per-CPU values summed), each drop reason by name.
    Stats(JsonArg),
    /// List the VPN passthrough switches, or turn one on or off (takes effect on the next
    /// packet; off also removes that protocol's sessions).
    Passthrough(PassthroughArgs),
    /// List the port forwards with their hits (new flows let in), or add or remove one
    /// (takes effect on the next packet; other sessions are left alone).
    Forward(ForwardArgs),
    /// Live rates, refreshed every second: packets/s forwarded, new sessions/s, drops/s.
    Top(TopArgs),
    /// Remove sessions (all, or of one protocol), like `conntrack -F`.
    Flush(FlushArgs),
    /// Have the running daemon re-read its configuration file (same as SIGHUP): timeouts,
    /// filtering, port range, passthrough switches. An invalid file changes nothing.
    Reload,
    /// Detach the programs and remove the instance's pinned state (drops all sessions).
    Detach,
    /// Print shell completions for nat-ctl (e.g. `nat-ctl completions bash >
    /// /etc/bash_completion.d/nat-ctl`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the nat-ctl(1) man page (roff), e.g. `nat-ctl man > /usr/local/share/man/man1/nat-ctl.1`.
    Man,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Stop after this many refreshes (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=60))]
    pub interval: u64,
}

#[derive(Debug, Args)]
pub struct FlushArgs {
    /// Only this protocol.
    #[arg(long, value_enum, ignore_case = true)]
    pub proto: Option<ProtoFilter>,
}

#[derive(Debug, Args)]
pub struct PassthroughArgs {
    #[command(subcommand)]
    pub action: Option<PassthroughAction>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PassthroughAction {
    /// Let this protocol's VPN traffic through (pptp, l2tp or ipsec).
    Enable {
        #[arg(value_parser = parse_switch, value_name = "pptp|l2tp|ipsec")]
        name: Switch,
    },
    /// Block this protocol's VPN traffic both ways and remove its sessions.
    Disable {
        #[arg(value_parser = parse_switch, value_name = "pptp|l2tp|ipsec")]
        name: Switch,
    },
}

/// A switch name, case-insensitive.
fn parse_switch(s: &str) -> Result<Switch, String> {
    Switch::by_name(s).ok_or_else(|| {
        format!(
            "unknown passthrough protocol '{s}': valid are {}",
            nat_common::passthrough::SWITCH_NAMES.join(", ")
        )
    })
}

#[derive(Debug, Args)]
pub struct ForwardArgs {
    #[command(subcommand)]
    pub action: Option<ForwardAction>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ForwardAction {
    /// Forward external PORT[-END] of the WAN address to a LAN host, e.g.
    /// `forward add tcp 8080 192.168.1.10:80 --from 198.51.100.0/24`. The ports leave the
    /// dynamic pool; a port a mapping holds is refused, naming the holder.
    Add {
        /// tcp, udp or both; gre or esp (a VPN server behind the router: `forward add gre
        /// ADDR`, no ports).
        #[arg(value_name = "tcp|udp|both|gre|esp")]
        proto: String,
        /// External port or range of the WAN address (for gre and esp: the LAN host).
        #[arg(value_name = "PORT[-END]")]
        ports: String,
        /// The LAN host, and its first port (default: the external one) or a range as long.
        #[arg(value_name = "ADDR[:PORT[-END]]")]
        to: Option<String>,
        /// Only WAN sources in this prefix.
        #[arg(long, value_name = "CIDR")]
        from: Option<String>,
    },
    /// Remove the forward of PORT[-END]: its new flows stop at once, its sessions run on
    /// until they end.
    Del {
        /// tcp, udp or both; gre or esp.
        #[arg(value_name = "tcp|udp|both|gre|esp")]
        proto: String,
        /// The forward's first external port, or its range (none for gre and esp).
        #[arg(value_name = "PORT[-END]")]
        ports: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// LAN interface (inside).
    #[arg(long, value_name = "IF")]
    pub lan: Option<String>,
    /// WAN interface (outside).
    #[arg(long, value_name = "IF")]
    pub wan: Option<String>,
    /// External address; default: the WAN interface's IPv4 address.
    #[arg(long, value_name = "A")]
    pub wan_addr: Option<Ipv4Addr>,
    /// Configuration file; default: /etc/xdp-nat/xdp-nat.toml if it exists.
    #[arg(long, value_name = "F")]
    pub config: Option<PathBuf>,
    /// On exit, detach the programs and remove the pinned state instead of leaving the NAT
    /// running without its daemon.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Log level of the daemon and of the data path's log lines (drops at debug, exhausted
    /// tables at info, a line per second per CPU); default: the config's, else info.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<crate::config::LogLevel>,
    /// Serve Prometheus metrics over HTTP on this address (e.g. 127.0.0.1:9779).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Seconds between sweeps of expired sessions (longer when a sweep would otherwise take
    /// more than 5% of a CPU).
    #[arg(long, default_value_t = DEFAULT_SWEEP_INTERVAL_SECS, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sweep_interval: u64,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Only this protocol.
    #[arg(long, value_enum, ignore_case = true)]
    pub proto: Option<ProtoFilter>,
    /// Only sessions of this LAN host (an address).
    #[arg(long, value_name = "ADDR")]
    pub src: Option<std::net::Ipv4Addr>,
    /// Only sessions with this remote host (an address).
    #[arg(long, value_name = "ADDR")]
    pub dst: Option<std::net::Ipv4Addr>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtoFilter {
    Tcp,
    Udp,
    Icmp,
    Gre,
    Esp,
}

impl ProtoFilter {
    pub const fn number(self) -> u8 {
        use nat_common::proto::*;
        match self {
            ProtoFilter::Tcp => IPPROTO_TCP,
            ProtoFilter::Udp => IPPROTO_UDP,
            ProtoFilter::Icmp => IPPROTO_ICMP,
            ProtoFilter::Gre => IPPROTO_GRE,
            ProtoFilter::Esp => IPPROTO_ESP,
        }
    }
}

/// Display name of an IP protocol number.
pub fn proto_name(p: u8) -> &'static str {
    use nat_common::proto::*;
    match p {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        IPPROTO_GRE => "gre",
        IPPROTO_ESP => "esp",
        _ => "other",
    }
}
