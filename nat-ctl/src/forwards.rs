//! Port forwards (`nat-ctl forward`, `[[forward]]` in the configuration file): the rules,
//! their checks, and how they reach the data path. A forward is an entry per external port
//! in FORWARDS; its ports leave the dynamic pool (PORT_POOL) so that no mapping takes them,
//! and stay the NAT's (PORT_IN_POOL) so that the WAN program looks them up.

use anyhow::{Context as _, Result, bail};
use nat_common::{
    maps::{
        EndpointKey, ExternalKey, FORWARD_FROM_FILE, FORWARD_FROM_NATPMP, FORWARD_FROM_PCP,
        FORWARD_FROM_UPNP, FORWARD_HINT_WORDS, Forward, LAN_SIDE_PREFIX, LAN_SIDE_ROUTER,
        MAX_FORWARD_PORTS, external_hint, lan_hint,
    },
    ports::pool_bit,
    proto::{IPPROTO_ESP, IPPROTO_GRE, IPPROTO_TCP, IPPROTO_UDP},
};
use std::{collections::BTreeMap, net::Ipv4Addr, ops::RangeInclusive};

use crate::{
    netdev::Ipv4Net,
    pool::PortPool,
    state::{NatMaps, entries},
    wire::{addr as from_wire, to_wire},
};

/// The protocols a forward can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProto {
    Tcp,
    Udp,
    /// TCP and UDP: two forwards of the same ports.
    Both,
    /// GRE (a PPTP server's calls), ESP (an IPsec server's SAs without NAT-T): the GRE or
    /// ESP that no LAN client's call or SA explains, to one LAN host. No ports.
    Gre,
    Esp,
}

impl ForwardProto {
    pub fn parse(s: &str) -> Result<ForwardProto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(ForwardProto::Tcp),
            "udp" => Ok(ForwardProto::Udp),
            "both" => Ok(ForwardProto::Both),
            "gre" => Ok(ForwardProto::Gre),
            "esp" => Ok(ForwardProto::Esp),
            _ => bail!("unknown forward protocol '{s}': valid are tcp, udp, both, gre, esp"),
        }
    }

    /// The IP protocol numbers it stands for.
    pub fn numbers(self) -> &'static [u8] {
        match self {
            ForwardProto::Tcp => &[IPPROTO_TCP],
            ForwardProto::Udp => &[IPPROTO_UDP],
            ForwardProto::Both => &[IPPROTO_TCP, IPPROTO_UDP],
            ForwardProto::Gre => &[IPPROTO_GRE],
            ForwardProto::Esp => &[IPPROTO_ESP],
        }
    }

    /// GRE and ESP have no ports.
    pub fn has_ports(self) -> bool {
        !matches!(self, ForwardProto::Gre | ForwardProto::Esp)
    }
}

pub use crate::cli::proto_name;

/// One forward of one protocol: external `ports` of the WAN address to `to`, port `to_port`
/// on (the same number of ports from there), for WAN sources in `from` (any if None).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRule {
    pub proto: u8,
    pub ports: RangeInclusive<u16>,
    pub to: Ipv4Addr,
    pub to_port: u16,
    pub from: Option<Ipv4Net>,
}

impl ForwardRule {
    /// The rules `PROTO PORT[-END] ADDR[:PORT[-END]] [from CIDR]` stand for (two for "both").
    /// GRE and ESP take the LAN address alone: `gre ADDR` (`ports` is then the address, or
    /// empty with the address in `to`).
    pub fn parse(
        proto: &str,
        ports: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<Vec<ForwardRule>> {
        let name = proto;
        let proto = ForwardProto::parse(proto)?;
        let from = match from {
            Some(f) => parse_from(f)?,
            None => None,
        };
        if !proto.has_ports() {
            let addr = match (ports, to) {
                (a, None) => a,
                ("", Some(a)) => a,
                _ => bail!("{name} has no ports: `forward add {name} ADDR`"),
            };
            let to: Ipv4Addr = addr
                .parse()
                .with_context(|| format!("bad LAN address '{addr}'"))?;
            return Ok(vec![ForwardRule {
                proto: proto.numbers()[0],
                ports: 0..=0,
                to,
                to_port: 0,
                from,
            }]);
        }
        let Some(to) = to else {
            bail!("no LAN address: `forward add {name} PORT[-END] ADDR[:PORT[-END]]`");
        };
        let ports = parse_ports(ports)?;
        let (to, to_port) = parse_target(to, &ports)?;
        Ok(proto
            .numbers()
            .iter()
            .map(|&proto| ForwardRule {
                proto,
                ports: ports.clone(),
                to,
                to_port,
                from,
            })
            .collect())
    }

    /// The LAN ports it leads to.
    pub fn lan_ports(&self) -> RangeInclusive<u16> {
        self.to_port..=self.to_port + (self.ports.end() - self.ports.start())
    }

    /// How many external ports it forwards.
    pub fn port_count(&self) -> u32 {
        u32::from(*self.ports.end()) - u32::from(*self.ports.start()) + 1
    }

    /// The FORWARDS entries of this rule, one per external port.
    pub fn entries(&self, origin: u8) -> impl Iterator<Item = (ExternalKey, Forward)> + '_ {
        let (net, mask) = match self.from {
            Some(n) => (to_wire(n.network()), to_wire(Ipv4Addr::from(n.mask()))),
            None => (0, 0),
        };
        self.ports.clone().map(move |port| {
            let key = ExternalKey {
                port: port.to_be(),
                proto: self.proto,
                _pad: 0,
            };
            let value = Forward {
                int_addr: to_wire(self.to),
                from_net: net,
                from_mask: mask,
                int_port: (self.to_port + (port - self.ports.start())).to_be(),
                first_port: *self.ports.start(),
                last_port: *self.ports.end(),
                origin,
                retired: 0,
                expires_s: 0,
                hits: 0,
                nonce: [0; 12],
                _pad2: 0,
            };
            (key, value)
        })
    }

    /// How the command line writes it: `tcp 8080-8090 192.168.1.10:80-90 from 198.51.100.0/24`.
    pub fn describe(&self) -> String {
        let from = self.from.map_or(String::new(), |n| {
            format!(" from {}/{}", n.network(), n.prefix_len)
        });
        if self.ports == (0..=0) {
            // GRE, ESP: no ports.
            return format!("{} {}{from}", proto_name(self.proto), self.to);
        }
        format!(
            "{} {} {}:{}{}",
            proto_name(self.proto),
            range_text(&self.ports),
            self.to,
            range_text(&self.lan_ports()),
            from
        )
    }
}

pub fn range_text(r: &RangeInclusive<u16>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

/// `PORT` or `PORT-END`, 1-65535.
pub fn parse_ports(s: &str) -> Result<RangeInclusive<u16>> {
    let port = |p: &str| -> Result<u16> {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("bad port '{p}' in '{s}': ports are 1-65535"),
        }
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if a > b {
        bail!("bad port range '{s}': the first port is above the last");
    }
    Ok(a..=b)
}

/// `ADDR`, `ADDR:PORT` or `ADDR:PORT-END` for the external `ports`: the LAN address and its
/// first port (the external one when none is given). A LAN range must be as long as the
/// external one.
fn parse_target(s: &str, ports: &RangeInclusive<u16>) -> Result<(Ipv4Addr, u16)> {
    let (addr, port) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("bad LAN address '{addr}' in '{s}'"))?;
    let len = ports.end() - ports.start();
    let first = match port {
        None => *ports.start(),
        Some(p) => {
            let r = parse_ports(p)?;
            if r.start() != r.end() && r.end() - r.start() != len {
                bail!(
                    "the LAN ports {p} are {} ports, the external ports {} are {}: give ranges of the same length, or the first LAN port only",
                    r.end() - r.start() + 1,
                    range_text(ports),
                    len + 1
                );
            }
            *r.start()
        }
    };
    if u32::from(first) + u32::from(len) > u32::from(u16::MAX) {
        bail!(
            "the LAN ports from {first} on run past 65535 for the {} external ports {}",
            len + 1,
            range_text(ports)
        );
    }
    Ok((addr, first))
}

/// `ADDR/LEN` with no host bits set.
pub fn parse_cidr(s: &str) -> Result<Ipv4Net> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a.parse().with_context(|| {
        format!("bad source prefix '{s}': expected ADDR/LEN, e.g. 198.51.100.0/24")
    })?;
    let prefix_len: u8 = match l.parse() {
        Ok(n) if n <= 32 => n,
        _ => bail!("bad prefix length in '{s}': 0-32"),
    };
    let net = Ipv4Net { addr, prefix_len };
    if net.network() != addr {
        bail!(
            "source prefix '{s}' has host bits set: did you mean {}/{prefix_len}?",
            net.network()
        );
    }
    Ok(net)
}

/// `--from`/`from`: a prefix, where /0 is no restriction (it is stored as none).
fn parse_from(s: &str) -> Result<Option<Ipv4Net>> {
    Ok(Some(parse_cidr(s)?).filter(|n| n.prefix_len > 0))
}

/// A forward as FORWARDS holds it: one rule, its hits summed over its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub rule: ForwardRule,
    pub origin: u8,
    pub hits: u64,
    /// A lease's end (CLOCK_MONOTONIC seconds), 0 for a forward that does not end.
    pub expires_s: u32,
    /// A PCP lease's nonce.
    pub nonce: [u8; 12],
    /// Removed, kept until its sessions end (Forward::retired).
    pub retired: bool,
}

impl Listed {
    pub fn origin_name(&self) -> &'static str {
        origin_name(self.origin)
    }

    /// Made by a LAN host's request (NAT-PMP, PCP), not by the operator.
    pub fn is_lease(&self) -> bool {
        is_lease(self.origin)
    }
}

/// Is a forward of `origin` a LAN host's lease (NAT-PMP, PCP, UPnP)?
pub fn is_lease(origin: u8) -> bool {
    matches!(
        origin,
        FORWARD_FROM_NATPMP | FORWARD_FROM_PCP | FORWARD_FROM_UPNP
    )
}

/// Who made a forward, as `nat-ctl forward` shows it.
pub fn origin_name(origin: u8) -> &'static str {
    match origin {
        FORWARD_FROM_FILE => "file",
        FORWARD_FROM_NATPMP => "nat-pmp",
        FORWARD_FROM_PCP => "pcp",
        FORWARD_FROM_UPNP => "upnp",
        _ => "command",
    }
}

/// The forwards in FORWARDS, by protocol and first port.
pub fn list(maps: &NatMaps) -> Result<Vec<Listed>> {
    let mut rules: BTreeMap<(u8, u16), Listed> = BTreeMap::new();
    for (k, f) in entries(&maps.forwards)? {
        let port = u16::from_be(k.port);
        let listed = rules.entry((k.proto, f.first_port)).or_insert_with(|| {
            let from = (f.from_mask != 0).then(|| Ipv4Net {
                addr: from_wire(f.from_net),
                prefix_len: from_wire(f.from_mask).to_bits().count_ones() as u8,
            });
            Listed {
                rule: ForwardRule {
                    proto: k.proto,
                    ports: f.first_port..=f.last_port,
                    to: from_wire(f.int_addr),
                    to_port: 0,
                    from,
                },
                origin: f.origin,
                hits: 0,
                expires_s: f.expires_s,
                nonce: f.nonce,
                retired: f.retired != 0,
            }
        });
        listed.hits += f.hits;
        if port == f.first_port {
            listed.rule.to_port = u16::from_be(f.int_port);
        }
    }
    Ok(rules.into_values().collect())
}

/// Why `rule` cannot be added as it stands, given the LAN side, the forwards there are,
/// and the ports the router uses itself. None: it can.
pub fn conflict(
    rule: &ForwardRule,
    lan_side: &[(Ipv4Addr, u8, u32)],
    existing: &[Listed],
    router_ports: &RouterPorts,
) -> Option<String> {
    if let Some(why) = lan_host_refusal(rule, lan_side) {
        return Some(why);
    }
    for other in existing.iter().filter(|o| o.rule.proto == rule.proto) {
        if other.retired && other.rule == *rule {
            // The same forward again: it comes back.
            continue;
        }
        let removed = if other.retired {
            " (removed, but its sessions still run: free once they end)"
        } else {
            ""
        };
        // One external port per LAN endpoint: its answers to the WAN address leave from it.
        let (a, b) = (other.rule.lan_ports(), rule.lan_ports());
        if other.rule.to == rule.to && a.start() <= b.end() && b.start() <= a.end() {
            return Some(format!(
                "{}:{} is already reached through {}{removed}; remove that first",
                rule.to,
                range_text(&b),
                other.rule.describe()
            ));
        }
        let (a, b) = (&other.rule.ports, &rule.ports);
        if *b == (0..=0) && *a == (0..=0) {
            let name = proto_name(rule.proto);
            return Some(format!(
                "{name} is forwarded already ({}){removed}; one {name} forward there can be",
                other.rule.describe()
            ));
        }
        if other.retired && a.start() <= b.end() && b.start() <= a.end() {
            return Some(format!(
                "{} {} was forwarded ({}){removed}",
                proto_name(rule.proto),
                range_text(b),
                other.rule.describe()
            ));
        }
        if a.start() <= b.end() && b.start() <= a.end() {
            return Some(format!(
                "{} {} is already forwarded ({}); remove it first with `nat-ctl forward del {} {}`",
                proto_name(rule.proto),
                range_text(b),
                other.rule.describe(),
                proto_name(rule.proto),
                range_text(a)
            ));
        }
    }
    if let Some(p) = rule
        .ports
        .clone()
        .find(|p| router_ports.listening.contains(p))
    {
        return Some(format!(
            "the router itself listens on port {p}: a forward would take its traffic; move the service or forward another port"
        ));
    }
    if let Some(p) = rule
        .ports
        .clone()
        .find(|p| router_ports.ephemeral.contains(p))
    {
        return Some(format!(
            "port {p} is in the router's own ephemeral range {}-{} (net.ipv4.ip_local_port_range): its connections' replies would be taken; forward another port or narrow that range",
            router_ports.ephemeral.start(),
            router_ports.ephemeral.end()
        ));
    }
    let ports: usize = existing.iter().map(|o| o.rule.port_count() as usize).sum();
    if ports + rule.port_count() as usize > MAX_FORWARD_PORTS as usize {
        return Some(format!(
            "forwards may cover at most {MAX_FORWARD_PORTS} ports in all; {ports} are forwarded already"
        ));
    }
    None
}

/// Why `rule.to` is not a LAN host a forward may lead to, if it is not.
fn lan_host_refusal(rule: &ForwardRule, lan_side: &[(Ipv4Addr, u8, u32)]) -> Option<String> {
    not_a_lan_host(rule.to, lan_side)
}

/// Why `addr` is not a LAN host (of `lan_side`: address, prefix length, kind), if it is not.
pub(crate) fn not_a_lan_host(addr: Ipv4Addr, lan_side: &[(Ipv4Addr, u8, u32)]) -> Option<String> {
    let to = u32::from(addr);
    if lan_side
        .iter()
        .any(|(a, l, k)| *k == LAN_SIDE_ROUTER && *l == 32 && *a == addr)
    {
        return Some(format!("{} is the router's own LAN address", addr));
    }
    let subnet = lan_side.iter().find(|(a, l, k)| {
        *k == LAN_SIDE_PREFIX && {
            let mask = if *l == 0 { 0 } else { u32::MAX << (32 - l) };
            to & mask == u32::from(*a)
        }
    });
    match subnet {
        None => {
            return Some(format!(
                "{} is not on the LAN side (its prefixes: {})",
                addr,
                lan_side
                    .iter()
                    .filter(|(_, _, k)| *k == LAN_SIDE_PREFIX)
                    .map(|(a, l, _)| format!("{a}/{l}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Some((a, l, _)) if *l < 31 => {
            let host_bits = u32::MAX >> l;
            if to == u32::from(*a) || to == u32::from(*a) | host_bits {
                return Some(format!(
                    "{} is the network or broadcast address of {a}/{l}, not a LAN host",
                    addr
                ));
            }
        }
        Some(_) => {}
    }
    None
}

/// The ports the router uses itself, which no forward may take.
pub struct RouterPorts {
    pub listening: std::collections::BTreeSet<u16>,
    pub ephemeral: RangeInclusive<u16>,
}

impl RouterPorts {
    pub fn read() -> Result<RouterPorts> {
        Ok(RouterPorts {
            listening: crate::pool::listening_ports()?,
            ephemeral: crate::pool::local_port_range()?,
        })
    }
}

/// The first of `rule`'s external ports that a mapping holds, and the LAN endpoint whose
/// mapping it is.
fn held_port(maps: &NatMaps, rule: &ForwardRule) -> Result<Option<(u16, String)>> {
    for port in rule.ports.clone() {
        let key = ExternalKey {
            port: port.to_be(),
            proto: rule.proto,
            _pad: 0,
        };
        if let Ok(m) = maps.mappings_in.get(&key, 0) {
            let h = format!("{}:{}", from_wire(m.int_addr), u16::from_be(m.int_port));
            return Ok(Some((port, h)));
        }
    }
    Ok(None)
}

/// Adds `rules` (one forward, one or two protocols) from `origin`, with the CONFIG lock
/// held: checked, its ports taken out of the pool, then written. A port a live mapping
/// holds is refused, naming the holder.
pub fn add(maps: &mut NatMaps, rules: &[ForwardRule], origin: u8) -> Result<()> {
    let _lock = maps.lock_config()?;
    let existing = list(maps)?;
    check(maps, rules, &existing, &RouterPorts::read()?)?;
    write(maps, rules, &Made::by(origin))
}

/// Why `rules` cannot be added next to `existing` (which they must not overlap, nor each
/// other), if they cannot.
fn check(
    maps: &NatMaps,
    rules: &[ForwardRule],
    existing: &[Listed],
    router_ports: &RouterPorts,
) -> Result<()> {
    let lan_side = maps.lan_side_entries()?;
    let mut taken = existing.to_vec();
    for rule in rules {
        if let Some(why) = conflict(rule, &lan_side, &taken, router_ports) {
            bail!("cannot forward {}: {why}", rule.describe());
        }
        if let Some((port, h)) = held_port(maps, rule)? {
            bail!(
                "cannot forward {}: {} port {port} is held by the mapping of {h}; it is free once that host's sessions on it end (or after `nat-ctl flush`): try again then, or forward another port",
                rule.describe(),
                proto_name(rule.proto)
            );
        }
        taken.push(Listed {
            rule: rule.clone(),
            origin: 0,
            hits: 0,
            expires_s: 0,
            nonce: [0; 12],
            retired: false,
        });
    }
    Ok(())
}

/// Writes checked `rules`: their ports out of the pool, then their FORWARDS entries.
/// Who made forwards being written, and for how long.
struct Made {
    origin: u8,
    expires_s: u32,
    nonce: [u8; 12],
}

impl Made {
    fn by(origin: u8) -> Made {
        Made {
            origin,
            expires_s: 0,
            nonce: [0; 12],
        }
    }
}

/// Writes checked `rules`: their ports out of the pool, then their FORWARDS entries. All or
/// nothing: a failure removes what this call wrote.
fn write(maps: &mut NatMaps, rules: &[ForwardRule], made: &Made) -> Result<()> {
    let ports: Vec<u16> = rules.iter().flat_map(|r| r.ports.clone()).collect();
    if is_lease(made.origin) {
        // A lease stays in the pool (the data path skips forwarded ports when it draws one):
        // leases come and go at a LAN host's will, and taking each out would drain the pool.
        own_ports(maps, &ports)?;
    } else {
        take_from_pool(maps, &ports)?;
    }
    // The hints first: the data path may skip a forward's entries only where its bit is clear.
    let adding: Vec<_> = rules.iter().flat_map(|r| r.entries(made.origin)).collect();
    write_hints(maps, &adding)?;
    let written = (|| -> Result<()> {
        for rule in rules {
            for (k, mut v) in rule.entries(made.origin) {
                v.expires_s = made.expires_s;
                v.nonce = made.nonce;
                // A removed forward's entry this one replaces no longer speaks for its LAN
                // endpoint.
                if let Ok(old) = maps.forwards.get(&k, 0) {
                    forget_lan_endpoint(maps, &k, &old)?;
                }
                maps.forwards.insert(k, v, 0).context("writing FORWARDS")?;
                maps.forwards_by_lan
                    .insert(lan_endpoint(&k, &v), k.port, 0)
                    .context("writing FORWARDS_BY_LAN")?;
            }
        }
        Ok(())
    })();
    if let Err(e) = written {
        for rule in rules {
            let _ = remove_entries(maps, rule);
        }
        return Err(e);
    }
    // A mapping made from the pool before its ports left it would keep the port's traffic:
    // the forward is not made.
    for rule in rules {
        if let Some((port, h)) = held_port(maps, rule)? {
            for rule in rules {
                remove_entries(maps, rule)?;
            }
            bail!(
                "cannot forward {}: {} port {port} was taken by a new mapping of {h} at this moment; try again once it is free",
                rule.describe(),
                proto_name(rule.proto)
            );
        }
    }
    Ok(())
}

/// Deletes `rule`'s entries at once (a failed add; a removed forward waits for its sessions:
/// `retire`).
fn remove_entries(maps: &mut NatMaps, rule: &ForwardRule) -> Result<()> {
    for (k, v) in rule.entries(0) {
        crate::state::removed(maps.forwards.remove(&k))?;
        forget_lan_endpoint(maps, &k, &v)?;
    }
    write_hints(maps, &[])
}

/// Writes FORWARD_HINTS for the forwards in FORWARDS and those in `adding` (about to be
/// written): a bit per external port and per LAN port that any of them has. Called with the
/// CONFIG lock held (every public function here takes it), so that no other writer's bits
/// are cleared between the read of FORWARDS and the write of the hints.
fn write_hints(maps: &mut NatMaps, adding: &[(ExternalKey, Forward)]) -> Result<()> {
    let mut hints = vec![0u64; FORWARD_HINT_WORDS as usize];
    for (k, v) in entries(&maps.forwards)?.iter().chain(adding) {
        for (word, bit) in [
            external_hint(u16::from_be(k.port)),
            lan_hint(u16::from_be(lan_endpoint(k, v).port)),
        ] {
            hints[word as usize] |= bit;
        }
    }
    crate::state::write_bitmap(
        &mut maps.forward_hints,
        &hints,
        nat_common::maps::names::FORWARD_HINTS,
    )
}

/// Removes FORWARDS_BY_LAN's entry for `v`'s LAN endpoint if it still names port `k`.
fn forget_lan_endpoint(maps: &mut NatMaps, k: &ExternalKey, v: &Forward) -> Result<()> {
    let lan = lan_endpoint(k, v);
    if maps.forwards_by_lan.get(&lan, 0).ok() == Some(k.port) {
        crate::state::removed(maps.forwards_by_lan.remove(&lan))?;
    }
    Ok(())
}

/// Marks `rule`'s entries removed (or, `retired` false, back in force). A removed forward lets
/// no new flow in; its entries stay until its sessions end (`purge_retired`).
fn set_retired(maps: &mut NatMaps, rule: &ForwardRule, retired: bool) -> Result<()> {
    for (k, _) in rule.entries(0) {
        if let Ok(mut f) = maps.forwards.get(&k, 0) {
            f.retired = u8::from(retired);
            maps.forwards.insert(k, f, 0).context("writing FORWARDS")?;
        }
    }
    Ok(())
}

/// Deletes the removed forwards' ports that no session uses any more (`live(protocol,
/// external port in host order)`: does a live session use it); the sweeper calls it.
/// Returns how many.
pub fn purge_retired(maps: &mut NatMaps, live: impl Fn(u8, u16) -> bool) -> Result<usize> {
    let _lock = maps.lock_config()?;
    let mut n = 0;
    for (k, f) in entries(&maps.forwards)? {
        if f.retired != 0 && !live(k.proto, u16::from_be(k.port)) {
            crate::state::removed(maps.forwards.remove(&k))?;
            forget_lan_endpoint(maps, &k, &f)?;
            n += 1;
        }
    }
    if n > 0 {
        write_hints(maps, &[])?;
    }
    Ok(n)
}

/// The LAN endpoint of FORWARDS entry `k`, `v`: its FORWARDS_BY_LAN key.
fn lan_endpoint(k: &ExternalKey, v: &Forward) -> EndpointKey {
    EndpointKey {
        addr: v.int_addr,
        port: v.int_port,
        proto: k.proto,
        _pad: 0,
    }
}

/// Removes the forward of `proto` whose external ports start at (or are exactly) `ports`;
/// its sessions run on until they end. Returns what was removed.
pub fn remove(maps: &mut NatMaps, proto: u8, ports: &RangeInclusive<u16>) -> Result<Listed> {
    let _lock = maps.lock_config()?;
    let found = list(maps)?.into_iter().find(|l| {
        !l.retired
            && l.rule.proto == proto
            && l.rule.ports.start() == ports.start()
            && (ports.start() == ports.end() || l.rule.ports.end() == ports.end())
    });
    let Some(found) = found else {
        bail!(
            "no forward of {} {} (see `nat-ctl forward`)",
            proto_name(proto),
            range_text(ports)
        );
    };
    set_retired(maps, &found.rule, true)?;
    Ok(found)
}

/// Makes the file's forwards what FORWARDS holds from the file: those no longer in the file
/// are removed, new ones come, with the usual checks; forwards made with `nat-ctl forward
/// add` stay. `strict` (a reload): all checked before anything changes, and nothing changes
/// if one cannot be had. Not strict (at start): each that can be had is, the others are
/// reported, so that the NAT starts.
pub fn sync_file(maps: &mut NatMaps, wanted: &[ForwardRule], strict: bool) -> Result<()> {
    let _lock = maps.lock_config()?;
    let all = list(maps)?;
    let (from_file, kept): (Vec<Listed>, Vec<Listed>) = all
        .into_iter()
        .partition(|l| l.origin == FORWARD_FROM_FILE && !l.retired);
    let new: Vec<ForwardRule> = wanted
        .iter()
        .filter(|r| !from_file.iter().any(|h| h.rule == **r))
        .cloned()
        .collect();
    let staying: Vec<Listed> = from_file
        .iter()
        .filter(|l| wanted.contains(&l.rule))
        .cloned()
        .chain(kept)
        .collect();
    let going: Vec<&Listed> = from_file
        .iter()
        .filter(|l| !wanted.contains(&l.rule))
        .collect();
    let router_ports = RouterPorts::read()?;
    if strict {
        check(maps, &new, &staying, &router_ports)
            .context("in the configuration file's [[forward]] tables")?;
    }
    for old in &going {
        set_retired(maps, &old.rule, true)?;
    }
    if strict {
        if let Err(e) = write(maps, &new, &Made::by(FORWARD_FROM_FILE)) {
            for old in &going {
                set_retired(maps, &old.rule, false)?;
            }
            return Err(e.context("in the configuration file's [[forward]] tables"));
        }
        return Ok(());
    }
    let mut taken = staying;
    for rule in &new {
        let one = std::slice::from_ref(rule);
        let made = check(maps, one, &taken, &router_ports)
            .and_then(|()| write(maps, one, &Made::by(FORWARD_FROM_FILE)));
        match made {
            Ok(()) => taken.extend(list(maps)?.into_iter().filter(|l| l.rule == *rule)),
            Err(e) => log::error!("the configuration file's forward is not made: {e:#}"),
        }
    }
    Ok(())
}

/// A LAN host's request for a mapping of its own (NAT-PMP, PCP): `internal_port` of
/// `client`, for `lifetime` seconds from `now_s` (CLOCK_MONOTONIC seconds).
pub struct LeaseRequest {
    pub client: Ipv4Addr,
    pub proto: u8,
    pub internal_port: u16,
    /// 0: any.
    pub suggested_port: u16,
    pub lifetime: u32,
    pub now_s: u32,
    /// PCP's nonce; None for NAT-PMP and UPnP.
    pub nonce: Option<[u8; 12]>,
    pub origin: u8,
    /// The suggested port or none (UPnP's AddPortMapping names the external port).
    pub exact: bool,
}

/// Why a lease was refused, in the terms both protocols answer with.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseRefused {
    /// Not a LAN host, or another client's mapping (a wrong nonce).
    NotAuthorized(String),
    /// The host has as many as it may.
    Quota(String),
    /// No port could be had.
    NoResources(String),
}

/// Ports a lease tries before giving up: the suggested one, the internal one, then random
/// ones.
const LEASE_PORT_TRIES: usize = 64;

/// Most leases one LAN host may hold (removed ones included, until their sessions end).
pub const MAX_LEASES_PER_HOST: u32 = 128;
/// Most leases there may be, all hosts together: half the forwards, so that hosts with
/// many addresses cannot keep the operator from forwarding.
pub const MAX_LEASES: u32 = MAX_FORWARD_PORTS / 2;

/// May a request with `nonce` (None: NAT-PMP) change lease `l`? One made by PCP only with
/// its own nonce (RFC 6887 section 11.3); a NAT-PMP one by either protocol.
fn nonce_matches(l: &Listed, nonce: Option<[u8; 12]>) -> bool {
    l.origin != FORWARD_FROM_PCP || nonce == Some(l.nonce)
}

/// Grants `req` (under the CONFIG lock): renews the client's lease of that port if it has
/// one, else leases a free external port (the suggested one when it can). Returns the
/// external port. A host's leases count in its share of mappings.
pub fn lease(maps: &mut NatMaps, req: &LeaseRequest) -> Result<Result<u16, LeaseRefused>> {
    let _lock = maps.lock_config()?;
    let existing = list(maps)?;
    let mine = |l: &&Listed| {
        l.rule.proto == req.proto
            && l.rule.to == req.client
            && l.rule.lan_ports().contains(&req.internal_port)
    };
    if let Some(have) = existing.iter().find(mine) {
        let port = have.rule.ports.start() + (req.internal_port - have.rule.to_port);
        if req.exact && port != req.suggested_port {
            // Mapped on another port already: this request's port cannot be had, and the
            // mapping that is there stays as it is.
            return Ok(Err(LeaseRefused::NoResources(format!(
                "{}:{} is reached through port {port}",
                req.client, req.internal_port
            ))));
        }
        if !have.is_lease() {
            if have.retired {
                // The operator removed it: a host cannot bring it back.
                return Ok(Err(LeaseRefused::NotAuthorized(format!(
                    "{} was removed by the operator; its sessions still run",
                    have.rule.describe()
                ))));
            }
            // The operator forwards it already: that is the mapping.
            return Ok(Ok(
                have.rule.ports.start() + (req.internal_port - have.rule.to_port)
            ));
        }
        if !nonce_matches(have, req.nonce) {
            return Ok(Err(LeaseRefused::NotAuthorized(
                "the mapping was made by PCP with another nonce".into(),
            )));
        }
        let key = ExternalKey {
            port: port.to_be(),
            proto: req.proto,
            _pad: 0,
        };
        let mut f = maps.forwards.get(&key, 0).context("reading FORWARDS")?;
        f.expires_s = req.now_s.saturating_add(req.lifetime);
        // A lease that ended while its sessions ran comes back with its port.
        f.retired = 0;
        maps.forwards
            .insert(key, f, 0)
            .context("writing FORWARDS")?;
        return Ok(Ok(port));
    }
    let cfg = maps.read_config()?;
    let leases = existing.iter().filter(|l| l.is_lease());
    if leases.clone().count() as u32 >= MAX_LEASES {
        return Ok(Err(LeaseRefused::NoResources(format!(
            "the LAN holds {MAX_LEASES} leases, all there may be"
        ))));
    }
    let held = leases.filter(|l| l.rule.to == req.client).count() as u32;
    let host_mappings = maps.host_mappings.get(&to_wire(req.client), 0).unwrap_or(0);
    if held >= MAX_LEASES_PER_HOST
        || (cfg.mappings_per_host != 0 && held + host_mappings >= cfg.mappings_per_host)
    {
        return Ok(Err(LeaseRefused::Quota(format!(
            "{} holds {held} leases and {host_mappings} mappings, its share",
            req.client
        ))));
    }
    let lan_side = maps.lan_side_entries()?;
    let router_ports = RouterPorts::read()?;
    let random = (0..LEASE_PORT_TRIES).map(|_| rand::random::<u16>().max(1024));
    let others = (!req.exact)
        .then_some(req.internal_port)
        .into_iter()
        .chain(random.take(if req.exact { 0 } else { LEASE_PORT_TRIES }));
    let candidates = [req.suggested_port]
        .into_iter()
        .chain(others)
        .filter(|p| *p != 0);
    let mut why = String::from("no port tried");
    for port in candidates {
        let rule = ForwardRule {
            proto: req.proto,
            ports: port..=port,
            to: req.client,
            to_port: req.internal_port,
            from: None,
        };
        if let Some(w) = lan_host_refusal(&rule, &lan_side) {
            // Not a LAN host, or the router's own address: no port will do.
            return Ok(Err(LeaseRefused::NotAuthorized(w)));
        }
        if let Some(w) = conflict(&rule, &lan_side, &existing, &router_ports) {
            why = w;
            continue;
        }
        if let Some((port, h)) = held_port(maps, &rule)? {
            why = format!("port {port} is held by the mapping of {h}");
            continue;
        }
        let made = Made {
            origin: req.origin,
            expires_s: req.now_s.saturating_add(req.lifetime),
            nonce: req.nonce.unwrap_or_default(),
        };
        match write(maps, std::slice::from_ref(&rule), &made) {
            Ok(()) => return Ok(Ok(port)),
            Err(e) => why = format!("{e:#}"),
        }
    }
    Ok(Err(LeaseRefused::NoResources(why)))
}

/// Ends `client`'s lease of `internal_port` (or, with 0, all its leases) of `proto`; with a
/// nonce (PCP), only the lease made with it. Returns the external ports freed.
pub fn end_lease(
    maps: &mut NatMaps,
    client: Ipv4Addr,
    proto: u8,
    internal_port: u16,
    nonce: Option<[u8; 12]>,
) -> Result<Result<Vec<u16>, LeaseRefused>> {
    let _lock = maps.lock_config()?;
    let mut freed = Vec::new();
    for l in list(maps)? {
        let r = &l.rule;
        if l.retired || r.proto != proto || r.to != client {
            continue;
        }
        if internal_port != 0 && !r.lan_ports().contains(&internal_port) {
            continue;
        }
        if !l.is_lease() || !nonce_matches(&l, nonce) {
            if internal_port == 0 {
                // "All of mine": those this request may end.
                continue;
            }
            return Ok(Err(LeaseRefused::NotAuthorized(format!(
                "{} was made by {}",
                r.describe(),
                l.origin_name()
            ))));
        }
        set_retired(maps, r, true)?;
        freed.push(*r.ports.start());
    }
    Ok(Ok(freed))
}

/// Removes the leases that ended by `now_s`; returns how many.
pub fn expire_leases(maps: &mut NatMaps, now_s: u32) -> Result<usize> {
    let _lock = maps.lock_config()?;
    let mut n = 0;
    for l in list(maps)? {
        if l.is_lease() && !l.retired && l.expires_s != 0 && l.expires_s <= now_s {
            set_retired(maps, &l.rule, true)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The ports forwarded now (any protocol): the daemon keeps them out of the pool it builds.
pub fn forwarded_ports(maps: &NatMaps) -> Result<std::collections::BTreeSet<u16>> {
    Ok(entries(&maps.forwards)?
        .into_iter()
        .map(|(k, _)| u16::from_be(k.port))
        .collect())
}

/// Takes `ports` out of the pool the data path draws from (PORT_POOL and its lengths in
/// CONFIG), and marks them the NAT's in PORT_IN_POOL so that the WAN program looks their
/// forwards up. The caller holds the CONFIG lock.
fn take_from_pool(maps: &mut NatMaps, ports: &[u16]) -> Result<()> {
    let mut cfg = maps.read_config()?;
    let before = maps.read_drawable()?;
    let pool = PortPool {
        privileged: before
            .privileged
            .into_iter()
            .filter(|p| !ports.contains(p))
            .collect(),
        ordinary: before
            .ordinary
            .into_iter()
            .filter(|p| !ports.contains(p))
            .collect(),
    };
    if pool.privileged.len() as u32 != cfg.priv_pool_len
        || pool.ordinary.len() as u32 != cfg.pool_len
    {
        // The bits first, so that no draw takes the ports from then on; then the counts
        // (the span stays: a draw keeps only what PORT_POOL holds).
        maps.write_drawable(&pool)?;
        cfg.priv_pool_len = pool.privileged.len() as u32;
        cfg.pool_len = pool.ordinary.len() as u32;
        maps.config.set(0, cfg, 0).context("writing CONFIG")?;
    }
    own_ports(maps, ports)
}

/// Marks `ports` the NAT's in PORT_IN_POOL, so that the WAN program looks their forwards up.
fn own_ports(maps: &mut NatMaps, ports: &[u16]) -> Result<()> {
    // Port 0: a forward of GRE or ESP, which has none.
    for &port in ports.iter().filter(|p| **p != 0) {
        let (word, bit) = pool_bit(port);
        let v = maps.port_in_pool.get(&word, 0)?;
        if v & bit == 0 {
            maps.port_in_pool
                .set(word, v | bit, 0)
                .context("writing PORT_IN_POOL")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nat_common::maps::FORWARD_FROM_COMMAND;

    fn rule(spec: &str) -> Result<Vec<ForwardRule>> {
        let parts: Vec<&str> = spec.split_whitespace().collect();
        ForwardRule::parse(
            parts[0],
            parts[1],
            parts.get(2).copied(),
            parts.get(3).copied(),
        )
    }

    #[test]
    fn rules_parse_as_the_command_line_writes_them() {
        let r = rule("tcp 8080 192.168.1.10:80").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].ports, 8080..=8080);
        assert_eq!(
            (r[0].to, r[0].to_port),
            (Ipv4Addr::new(192, 168, 1, 10), 80)
        );
        assert_eq!(r[0].describe(), "tcp 8080 192.168.1.10:80");
        let r = rule("both 6000-6010 192.168.1.20 198.51.100.0/24").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].proto, IPPROTO_UDP);
        assert_eq!(r[1].to_port, 6000);
        assert_eq!(
            r[1].describe(),
            "udp 6000-6010 192.168.1.20:6000-6010 from 198.51.100.0/24"
        );
        let r = rule("udp 7000-7002 192.168.1.20:9000-9002").unwrap();
        let ports: Vec<u16> = r[0]
            .entries(1)
            .map(|(_, f)| u16::from_be(f.int_port))
            .collect();
        assert_eq!(ports, [9000, 9001, 9002]);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (spec, says) in [
            ("sctp 80 192.168.1.10", "unknown forward protocol"),
            ("tcp 0 192.168.1.10", "ports are 1-65535"),
            ("tcp 90-80 192.168.1.10", "first port is above the last"),
            (
                "tcp 80-90 192.168.1.10:1-5",
                "give ranges of the same length",
            ),
            ("tcp 80-90 192.168.1.10:65530", "run past 65535"),
            ("tcp 80 192.168.1.300", "bad LAN address"),
            ("tcp 80 192.168.1.10 198.51.100.1/24", "host bits set"),
            ("tcp 80 192.168.1.10 198.51.100.0/33", "bad prefix length"),
        ] {
            let e = format!("{:#}", rule(spec).unwrap_err());
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn conflicts_name_the_reason() {
        let lan = [
            (Ipv4Addr::new(192, 168, 1, 0), 24, LAN_SIDE_PREFIX),
            (Ipv4Addr::new(192, 168, 1, 1), 32, LAN_SIDE_ROUTER),
        ];
        let router = RouterPorts {
            listening: [22].into(),
            ephemeral: 32768..=60999,
        };
        let existing = vec![Listed {
            rule: rule("tcp 8080-8090 192.168.1.10:80").unwrap().remove(0),
            origin: FORWARD_FROM_COMMAND,
            hits: 0,
            expires_s: 0,
            nonce: [0; 12],
            retired: false,
        }];
        let check = |spec: &str| conflict(&rule(spec).unwrap()[0], &lan, &existing, &router);
        assert_eq!(check("tcp 9000 192.168.1.10:8000"), None);
        assert_eq!(check("udp 8085 192.168.1.10"), None, "another protocol");
        for (spec, says) in [
            ("tcp 8090-8095 192.168.1.11", "already forwarded"),
            (
                "tcp 9000 192.168.1.10:85",
                "192.168.1.10:85 is already reached through tcp 8080-8090",
            ),
            ("tcp 9000 10.0.0.5", "not on the LAN side"),
            ("tcp 9000 192.168.1.1", "router's own LAN address"),
            ("tcp 9000 192.168.1.255", "broadcast"),
            ("tcp 22 192.168.1.10", "router itself listens on port 22"),
            ("tcp 40000 192.168.1.10", "ephemeral range"),
        ] {
            let why = check(spec).unwrap_or_default();
            assert!(why.contains(says), "{spec}: {why:?}");
        }
    }
}
