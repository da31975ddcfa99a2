//! The TOML configuration file (see docs/xdp-nat.toml for a commented sample), its
//! defaults, and the validated settings the daemon runs with. Command-line flags override
//! the file.

use anyhow::{Context as _, Result};
use nat_common::config::{
    FILTER_ADDRESS_DEPENDENT, FILTER_ADDRESS_PORT_DEPENDENT, FILTER_ENDPOINT_INDEPENDENT,
    LAYOUT_VERSION, NatConfig, Timeouts,
};
use nat_common::maps::{DEFAULT_MAX_MAPPINGS, DEFAULT_MAX_SESSIONS, DEFAULT_VPN_STATE_PER_HOST};
use serde::Deserialize;

use crate::{netdev::Ipv4Net, pool::PortPool, wire::to_wire};
use std::{net::Ipv4Addr, ops::RangeInclusive, path::Path, str::FromStr};

/// Used when no --config is given and this file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/xdp-nat/xdp-nat.toml";

/// Largest table we accept: beyond this the kernel's memory accounting is the better judge.
pub const MAX_TABLE_SIZE: u32 = 16 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub lan: Option<String>,
    pub wan: Option<String>,
    pub wan_addr: Option<Ipv4Addr>,
    pub filtering: Option<Filtering>,
    #[serde(default)]
    pub ports: PortsSection,
    #[serde(default)]
    pub timeouts: TimeoutsSection,
    #[serde(default)]
    pub tables: TablesSection,
    #[serde(default)]
    pub passthrough: PassthroughSection,
    /// Log level of the daemon and of the data path's log lines.
    pub log_level: Option<LogLevel>,
    #[serde(default)]
    pub tcp: TcpSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[[forward]]` tables: static port forwards (crate::forwards).
    #[serde(default)]
    pub forward: Vec<ForwardSection>,
    #[serde(default)]
    pub dmz: DmzSection,
    #[serde(default)]
    pub port_mapping: PortMappingSection,
}

/// `[dmz]`: one LAN host that gets the unsolicited flows nothing else explains.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmzSection {
    /// The DMZ host; unset: none (unsolicited flows are dropped).
    pub host: Option<Ipv4Addr>,
}

/// `[port_mapping]`: what LAN hosts may ask for themselves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMappingSection {
    /// NAT-PMP and PCP on UDP 5351 of the LAN address (crate::portmap); unset: off.
    pub pcp: Option<bool>,
    /// UPnP IGD on the LAN address (crate::portmap::upnp); unset: off.
    pub upnp: Option<bool>,
}

/// One `[[forward]]` table, as `nat-ctl forward add` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSection {
    /// "tcp", "udp" or "both".
    pub proto: String,
    /// 8080, or "8080-8090" (none for gre and esp).
    pub port: Option<PortSpec>,
    /// "ADDR", "ADDR:PORT" or "ADDR:PORT-END".
    pub to: String,
    /// Only WAN sources in this prefix ("198.51.100.0/24").
    pub from: Option<String>,
}

/// A port as TOML writes it: a number, or a string that may be a range.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    Number(u32),
    Text(String),
}

impl PortSpec {
    fn text(&self) -> String {
        match self {
            PortSpec::Number(n) => n.to_string(),
            PortSpec::Text(s) => s.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    /// Lower the MSS of SYNs to this (for PPPoE or tunnels on the WAN); unset: no clamping.
    pub mss_clamp: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Most mappings (external ports) one LAN host may hold; unset: a quarter of the pool
    /// (`default_mappings_per_host`).
    pub mappings_per_host: Option<u32>,
    /// Most sessions one LAN host may hold; unset: a quarter of the session table.
    pub sessions_per_host: Option<u32>,
    /// Most VPN state entries (IKE SAs, ESP SAs and learning windows, PPTP calls) one LAN
    /// host may hold together; unset: DEFAULT_VPN_STATE_PER_HOST.
    pub vpn_state_per_host: Option<u32>,
    /// Answer a new flow refused for want of room (a share or a table used up) with ICMP
    /// destination unreachable, administratively prohibited (RFC 5508 REQ-8); unset: off,
    /// the packet is dropped and counted.
    pub icmp_prohibited: Option<bool>,
}

/// Passthrough switches a fresh start takes (all on if unset). A daemon that adopts pinned
/// state keeps the switches it finds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughSection {
    pub pptp: Option<bool>,
    pub l2tp: Option<bool>,
    pub ipsec: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsSection {
    /// "LOW-HIGH", the ordinary external port range.
    pub range: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSection {
    pub udp: Option<u32>,
    pub tcp_established: Option<u32>,
    pub tcp_transitory: Option<u32>,
    pub icmp: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesSection {
    pub sessions: Option<u32>,
    pub mappings: Option<u32>,
}

/// How much the daemon (and the data path, through aya-log) logs.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }

    /// aya-log's level numbers (0 = nothing).
    pub const fn aya_level(self) -> u8 {
        self as u8
    }
}

/// RFC 4787 REQ-8 filtering behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
}

impl Filtering {
    pub const fn to_map(self) -> u32 {
        match self {
            Filtering::EndpointIndependent => FILTER_ENDPOINT_INDEPENDENT,
            Filtering::AddressDependent => FILTER_ADDRESS_DEPENDENT,
            Filtering::AddressAndPortDependent => FILTER_ADDRESS_PORT_DEPENDENT,
        }
    }

    pub const fn from_map(v: u32) -> Option<Filtering> {
        match v {
            FILTER_ENDPOINT_INDEPENDENT => Some(Filtering::EndpointIndependent),
            FILTER_ADDRESS_DEPENDENT => Some(Filtering::AddressDependent),
            FILTER_ADDRESS_PORT_DEPENDENT => Some(Filtering::AddressAndPortDependent),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// Validated settings, file and flags merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub lan: String,
    pub wan: String,
    pub wan_addr: Option<Ipv4Addr>,
    pub filtering: Filtering,
    pub port_range: RangeInclusive<u16>,
    pub timeouts: Timeouts,
    pub max_sessions: u32,
    pub max_mappings: u32,
    /// pptp, l2tp, ipsec (nat_common::passthrough::SWITCH_NAMES order).
    pub passthrough: [bool; 3],
    /// 0: no clamping.
    pub mss_clamp: u16,
    /// 0: unset, a quarter of the pool (`default_mappings_per_host`).
    pub mappings_per_host: u32,
    /// A quarter of the session table unless configured.
    pub sessions_per_host: u32,
    pub vpn_state_per_host: u32,
    pub icmp_prohibited: bool,
    pub log_level: LogLevel,
    /// The file's `[[forward]]` tables, one rule per protocol.
    pub forwards: Vec<crate::forwards::ForwardRule>,
    /// `[port_mapping] pcp`: serve NAT-PMP and PCP to the LAN.
    pub pcp: bool,
    /// `[port_mapping] upnp`: serve UPnP IGD to the LAN.
    pub upnp: bool,
    /// `[dmz] host`.
    pub dmz: Option<Ipv4Addr>,
}

/// What the interfaces contribute to the data path's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Interfaces {
    pub lan_index: u32,
    pub wan_index: u32,
    pub lan_net: Ipv4Net,
    pub wan_addr: Ipv4Addr,
    /// LAN-side prefixes and router addresses beyond `lan_net` (LanSide::extra).
    pub lan_extra: u32,
}

/// Fewest sessions the default per-host limit allows, however small the table.
const MIN_DEFAULT_SESSIONS_PER_HOST: u32 = 256;

/// Fewest mappings the default per-host limit allows, however small the pool.
const MIN_DEFAULT_MAPPINGS_PER_HOST: u32 = 64;

/// The per-host limit when the configuration sets none: a quarter of the ordinary pool, so
/// that one LAN host (a torrent client, a compromised host) can never take every external
/// port and starve the others (RFC 6888 REQ-4); about 9 000 ports for the default range
/// minus a typical ip_local_port_range.
pub fn default_mappings_per_host(pool: &PortPool) -> u32 {
    (pool.ordinary.len() as u32 / 4).max(MIN_DEFAULT_MAPPINGS_PER_HOST)
}

impl Settings {
    /// The CONFIG map value for these settings, interfaces and pool.
    pub fn nat_config(&self, i: &Interfaces, pool: &PortPool) -> NatConfig {
        let (pool_gap_first, pool_gap_len) = pool.widest_gap();
        NatConfig {
            layout_version: LAYOUT_VERSION,
            wan_addr: to_wire(i.wan_addr),
            lan_addr: to_wire(i.lan_net.addr),
            lan_net: to_wire(i.lan_net.network()),
            lan_mask: i.lan_net.mask().to_be(),
            wan_ifindex: i.wan_index,
            lan_ifindex: i.lan_index,
            priv_pool_len: pool.privileged.len() as u32,
            pool_len: pool.ordinary.len() as u32,
            pool_first: pool.ordinary.first().copied().unwrap_or(0),
            pool_last: pool.ordinary.last().copied().unwrap_or(0),
            pool_gap_first,
            pool_gap_len,
            filtering: self.filtering.to_map(),
            timeouts: self.timeouts,
            mss_clamp: self.mss_clamp,
            // Set by NatMaps::write_config, which moves it on from the pinned value.
            route_gen: 0,
            mappings_per_host: match self.mappings_per_host {
                0 => default_mappings_per_host(pool),
                n => n,
            },
            sessions_per_host: self.sessions_per_host,
            vpn_state_per_host: self.vpn_state_per_host,
            icmp_prohibited: u32::from(self.icmp_prohibited),
            dmz_addr: self.dmz.map_or(0, crate::wire::to_wire),
            sessions_removed_gen: 0,
            // Kept from the pinned value by NatMaps::write_config; moved by a flush.
            flushed_ns: 0,
            // A fresh seed per configuration, so flows cannot be picked to collide in the
            // flow cache; set with the set count by NatMaps::write_config.
            flow_seed: 0,
            flow_set_bits: 0,
            lan_extra: i.lan_extra,
            netns_ino: crate::netdev::netns_ino(),
        }
    }
}

/// Flags given on the command line; they win over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub lan: Option<String>,
    pub wan: Option<String>,
    pub wan_addr: Option<Ipv4Addr>,
    pub log_level: Option<LogLevel>,
}

/// What is wrong with a configuration (file and command line together), named the way the
/// operator wrote it and with what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("no {side} interface: pass --{flag} IF or set `{flag} = \"IF\"` in the config file")]
    NoInterface {
        side: &'static str,
        flag: &'static str,
    },
    #[error("--lan and --wan are both '{0}': the NAT needs two different interfaces")]
    SameInterfaces(String),
    #[error("timeouts.{name} = {value} is below the minimum of {min} s ({rfc})")]
    TimeoutTooShort {
        name: &'static str,
        value: u32,
        min: u32,
        rfc: &'static str,
    },
    #[error(
        "timeouts: tcp_transitory must be > 0 and tcp_established >= tcp_transitory (got {transitory} and {established})"
    )]
    TcpTimeouts { transitory: u32, established: u32 },
    #[error("{0} = 0: a table needs at least one entry")]
    EmptyTable(&'static str),
    #[error("{what} = {value} exceeds the maximum of {MAX_TABLE_SIZE}")]
    TableTooLarge { what: &'static str, value: u32 },
    #[error("tcp.mss_clamp = {0} is outside 536-9000 (e.g. 1452 for PPPoE)")]
    MssClamp(u16),
    #[error("limits.{name} = 0 would block every LAN host{what}; leave it unset for {default}")]
    ZeroLimit {
        name: &'static str,
        what: &'static str,
        default: String,
    },
    #[error("port range {0:?} is not of the form LOW-HIGH, e.g. \"1024-65535\"")]
    RangeForm(String),
    #[error("port range {range:?}: bad {end} port")]
    RangePort {
        range: String,
        end: &'static str,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("port range {range:?} is reversed (low {lo} > high {hi})")]
    RangeReversed { range: String, lo: u16, hi: u16 },
    #[error("port range {0:?} starts below 1024: ports 1-1023 are kept for privileged sources")]
    RangePrivileged(String),
    #[error("[[forward]] number {number} ({proto} {port}): {reason}")]
    Forward {
        number: usize,
        proto: String,
        port: String,
        reason: String,
    },
}

impl FileConfig {
    /// The `[[forward]]` tables as rules, each checked on its own (against the LAN and the
    /// other forwards when they are applied: forwards::sync_file).
    fn forwards(&self) -> Result<Vec<crate::forwards::ForwardRule>, SettingsError> {
        let mut rules = Vec::new();
        for (i, f) in self.forward.iter().enumerate() {
            let port = f.port.as_ref().map_or(String::new(), PortSpec::text);
            let parsed = crate::forwards::ForwardRule::parse(
                &f.proto,
                &port,
                Some(&f.to),
                f.from.as_deref(),
            )
            .map_err(|e| SettingsError::Forward {
                number: i + 1,
                proto: f.proto.clone(),
                port: port.clone(),
                reason: format!("{e:#}"),
            })?;
            rules.extend(parsed);
        }
        Ok(rules)
    }

    /// Reads `path`; errors name the file, the line and the reason.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<FileConfig> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    /// The file at `explicit`, else the default path if it exists, else empty.
    pub fn discover(explicit: Option<&Path>) -> Result<FileConfig> {
        match Self::path(explicit) {
            Some(p) => Self::load(&p),
            None => Ok(FileConfig::default()),
        }
    }

    /// The file `discover` reads: `explicit`, else the default path if it exists.
    pub fn path(explicit: Option<&Path>) -> Option<std::path::PathBuf> {
        match explicit {
            Some(p) => Some(p.to_path_buf()),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => Some(DEFAULT_CONFIG_PATH.into()),
            None => None,
        }
    }

    pub fn settings(&self, o: &Overrides) -> Result<Settings, SettingsError> {
        let lan = o
            .lan
            .clone()
            .or_else(|| self.lan.clone())
            .ok_or(SettingsError::NoInterface {
                side: "LAN",
                flag: "lan",
            })?;
        let wan = o
            .wan
            .clone()
            .or_else(|| self.wan.clone())
            .ok_or(SettingsError::NoInterface {
                side: "WAN",
                flag: "wan",
            })?;
        if lan == wan {
            return Err(SettingsError::SameInterfaces(lan));
        }
        let port_range = match &self.ports.range {
            Some(r) => parse_port_range(r)?,
            None => 1024..=65535,
        };
        let d = Timeouts::DEFAULT;
        let t = &self.timeouts;
        let timeouts = Timeouts {
            udp: t.udp.unwrap_or(d.udp),
            tcp_established: t.tcp_established.unwrap_or(d.tcp_established),
            tcp_transitory: t.tcp_transitory.unwrap_or(d.tcp_transitory),
            icmp: t.icmp.unwrap_or(d.icmp),
        };
        if timeouts.udp < Timeouts::MIN_UDP {
            return Err(SettingsError::TimeoutTooShort {
                name: "udp",
                value: timeouts.udp,
                min: Timeouts::MIN_UDP,
                rfc: "RFC 4787 REQ-5",
            });
        }
        if timeouts.icmp < Timeouts::MIN_ICMP {
            return Err(SettingsError::TimeoutTooShort {
                name: "icmp",
                value: timeouts.icmp,
                min: Timeouts::MIN_ICMP,
                rfc: "RFC 5508 REQ-1",
            });
        }
        if timeouts.tcp_transitory == 0 || timeouts.tcp_established < timeouts.tcp_transitory {
            return Err(SettingsError::TcpTimeouts {
                transitory: timeouts.tcp_transitory,
                established: timeouts.tcp_established,
            });
        }
        let max_sessions = table_size(
            "tables.sessions",
            self.tables.sessions,
            DEFAULT_MAX_SESSIONS,
        )?;
        let max_mappings = table_size(
            "tables.mappings",
            self.tables.mappings,
            DEFAULT_MAX_MAPPINGS,
        )?;
        Ok(Settings {
            lan,
            wan,
            wan_addr: o.wan_addr.or(self.wan_addr),
            filtering: self.filtering.unwrap_or(Filtering::AddressDependent),
            port_range,
            timeouts,
            max_sessions,
            max_mappings,
            passthrough: [
                self.passthrough.pptp.unwrap_or(true),
                self.passthrough.l2tp.unwrap_or(true),
                self.passthrough.ipsec.unwrap_or(true),
            ],
            mss_clamp: match self.tcp.mss_clamp {
                Some(m) if !(536..=9000).contains(&m) => return Err(SettingsError::MssClamp(m)),
                m => m.unwrap_or(0),
            },
            log_level: o.log_level.or(self.log_level).unwrap_or_default(),
            mappings_per_host: share(
                self.limits.mappings_per_host,
                "mappings_per_host",
                "",
                "a quarter of the port pool",
            )?
            .unwrap_or(0),
            sessions_per_host: share(
                self.limits.sessions_per_host,
                "sessions_per_host",
                "",
                "a quarter of the session table",
            )?
            .unwrap_or((max_sessions / 4).max(MIN_DEFAULT_SESSIONS_PER_HOST)),
            vpn_state_per_host: share(
                self.limits.vpn_state_per_host,
                "vpn_state_per_host",
                "'s VPN",
                &DEFAULT_VPN_STATE_PER_HOST.to_string(),
            )?
            .unwrap_or(DEFAULT_VPN_STATE_PER_HOST),
            icmp_prohibited: self.limits.icmp_prohibited.unwrap_or(false),
            forwards: self.forwards()?,
            pcp: self.port_mapping.pcp.unwrap_or(false),
            upnp: self.port_mapping.upnp.unwrap_or(false),
            dmz: self.dmz.host,
        })
    }
}

/// A `[limits]` share as configured (None: unset); 0, which would block every LAN host
/// (`what`: of what), is refused, naming the `default` that leaving it unset gives.
fn share(
    value: Option<u32>,
    name: &'static str,
    what: &'static str,
    default: &str,
) -> Result<Option<u32>, SettingsError> {
    match value {
        Some(0) => Err(SettingsError::ZeroLimit {
            name,
            what,
            default: default.into(),
        }),
        v => Ok(v),
    }
}

fn table_size(what: &'static str, v: Option<u32>, default: u32) -> Result<u32, SettingsError> {
    match v {
        None => Ok(default),
        Some(0) => Err(SettingsError::EmptyTable(what)),
        Some(n) if n > MAX_TABLE_SIZE => Err(SettingsError::TableTooLarge { what, value: n }),
        Some(n) => Ok(n),
    }
}

/// Parses "LOW-HIGH" (1024 <= LOW <= HIGH <= 65535).
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, SettingsError> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| SettingsError::RangeForm(s.into()))?;
    let port = |p: &str, end| {
        u16::from_str(p.trim()).map_err(|source| SettingsError::RangePort {
            range: s.into(),
            end,
            source,
        })
    };
    let (lo, hi) = (port(a, "low")?, port(b, "high")?);
    if lo > hi {
        return Err(SettingsError::RangeReversed {
            range: s.into(),
            lo,
            hi,
        });
    }
    if lo < 1024 {
        return Err(SettingsError::RangePrivileged(s.into()));
    }
    Ok(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaces() -> Overrides {
        Overrides {
            lan: Some("lan0".into()),
            wan: Some("wan0".into()),
            wan_addr: None,
            log_level: None,
        }
    }

    #[test]
    fn defaults_match_design() {
        let s = FileConfig::default().settings(&ifaces()).unwrap();
        assert_eq!(s.timeouts, Timeouts::DEFAULT);
        assert_eq!(s.filtering, Filtering::AddressDependent);
        assert_eq!(s.port_range, 1024..=65535);
        assert_eq!((s.max_sessions, s.max_mappings), (262_144, 131_072));
    }

    #[test]
    fn file_values_and_overrides() {
        let f = FileConfig::parse(
            "lan = \"a\"\nwan = \"b\"\nwan_addr = \"203.0.113.1\"\nfiltering = \"endpoint-independent\"\n[ports]\nrange = \"20000-30000\"\n[timeouts]\nudp = 120\n[tables]\nsessions = 1000\n",
        )
        .unwrap();
        let s = f
            .settings(&Overrides {
                lan: Some("x".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(s.lan, "x");
        assert_eq!(s.wan, "b");
        assert_eq!(s.wan_addr, Some(Ipv4Addr::new(203, 0, 113, 1)));
        assert_eq!(s.filtering, Filtering::EndpointIndependent);
        assert_eq!(s.port_range, 20000..=30000);
        assert_eq!(s.timeouts.udp, 120);
        assert_eq!(s.max_sessions, 1000);
    }

    #[test]
    fn forward_tables_become_rules_and_say_which_one_is_wrong() {
        let text = "[[forward]]\nproto = \"both\"\nport = 8080\nto = \"192.168.1.10:80\"\n\
                    [[forward]]\nproto = \"udp\"\nport = \"6000-6001\"\nto = \"192.168.1.11\"\n\
                    from = \"198.51.100.0/24\"\n";
        let s = FileConfig::parse(text)
            .unwrap()
            .settings(&ifaces())
            .unwrap();
        let described: Vec<String> = s.forwards.iter().map(|r| r.describe()).collect();
        assert_eq!(
            described,
            [
                "tcp 8080 192.168.1.10:80",
                "udp 8080 192.168.1.10:80",
                "udp 6000-6001 192.168.1.11:6000-6001 from 198.51.100.0/24"
            ]
        );
        let bad = "[[forward]]\nproto = \"tcp\"\nport = 80\nto = \"x\"\n\
                   [[forward]]\nproto = \"tcp\"\nport = \"90-80\"\nto = \"192.168.1.2\"\n";
        let e = FileConfig::parse(bad)
            .unwrap()
            .settings(&ifaces())
            .unwrap_err();
        assert!(
            e.to_string().contains("[[forward]] number 1 (tcp 80)"),
            "{e}"
        );
        let e = FileConfig::parse("[port_mapping]\nupnpp = true\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `upnpp`"), "{e}");
        assert!(
            FileConfig::parse("[port_mapping]\npcp = true\n")
                .unwrap()
                .settings(&ifaces())
                .unwrap()
                .pcp
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = FileConfig::parse("lan = \"a\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("bogus"), "{e}");
        let e = FileConfig::parse("[timeouts]\nudp = 30\n")
            .unwrap()
            .settings(&ifaces())
            .unwrap_err();
        assert!(e.to_string().contains("timeouts.udp = 30"), "{e}");
        let e = FileConfig::parse("[tables]\nsessions = 0\n")
            .unwrap()
            .settings(&ifaces())
            .unwrap_err();
        assert!(e.to_string().contains("tables.sessions = 0"), "{e}");
        let e = FileConfig::default()
            .settings(&Overrides::default())
            .unwrap_err();
        assert!(e.to_string().contains("--lan"), "{e}");
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("1024-2048").unwrap(), 1024..=2048);
        assert!(
            parse_port_range("3000-2000")
                .unwrap_err()
                .to_string()
                .contains("reversed")
        );
        assert!(parse_port_range("80-2000").is_err());
        assert!(parse_port_range("1024").is_err());
        assert!(parse_port_range("1024-70000").is_err());
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    /// The documented sample parses and states the defaults.
    #[test]
    fn docs_sample_is_valid_and_matches_defaults() {
        let text = include_str!("../../docs/xdp-nat.toml");
        let o = Overrides {
            lan: Some("a".into()),
            wan: Some("b".into()),
            wan_addr: None,
            log_level: None,
        };
        let sample = FileConfig::parse(text).unwrap().settings(&o).unwrap();
        let defaults = FileConfig::default().settings(&o).unwrap();
        assert_eq!(sample, defaults);
    }
}
