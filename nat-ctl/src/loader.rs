//! Loading the object, configuring its maps, attaching (or adopting) the XDP links.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        RawTracePoint, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use nat_common::{expiry, maps::names};
use std::{fs, path::Path};

use crate::{EBPF_OBJECT, config::LogLevel, pins::Instance};

/// Table capacities, fixed when the maps are created.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    pub max_sessions: u32,
    pub max_mappings: u32,
}

/// Loads the object and verifies its programs, with kernel-side logging off. With
/// `instance`, the maps are pinned under its directory, and maps already pinned there are
/// adopted with their contents.
pub fn load(instance: Option<&Instance>, tables: Tables) -> Result<Ebpf> {
    load_with_log(instance, tables, LogLevel::Off)
}

/// `load`, with the data path's aya-log lines at `kernel_log` and below.
pub fn load_with_log(
    instance: Option<&Instance>,
    tables: Tables,
    kernel_log: LogLevel,
) -> Result<Ebpf> {
    let pin_paths: Vec<(&str, std::path::PathBuf)> = match instance {
        Some(i) => {
            fs::create_dir_all(i.dir())
                .with_context(|| format!("creating {}", i.dir().display()))?;
            names::ALL.iter().map(|n| (*n, i.map_path(n))).collect()
        }
        None => Vec::new(),
    };
    let flows = nat_common::flow_cache::entries_for(tables.max_sessions);
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::SESSIONS, tables.max_sessions)
        .map_max_entries(names::FLOWS_OUT, flows)
        .map_max_entries(names::FLOWS_IN, flows)
        .map_max_entries(names::FILTERS, tables.max_sessions)
        .map_max_entries(
            names::FILTERS_LIVE,
            expiry::filter_words(expiry::filter_bits_for(tables.max_sessions)),
        )
        .map_max_entries(
            names::EXPIRING,
            expiry::expiring_slots_for(tables.max_sessions),
        )
        .map_max_entries(names::MAPPINGS_OUT, tables.max_mappings)
        .map_max_entries(names::MAPPINGS_IN, tables.max_mappings);
    // Read by the programs before they format anything (aya-log's AYA_LOG_LEVEL).
    let level = kernel_log.aya_level();
    loader.override_global(aya_log::LEVEL, &level, false);
    for (name, path) in &pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .context("loading the xdp-nat eBPF object")?;
    for name in nat_common::maps::programs::NAT_XDP {
        load_xdp(&mut ebpf, name)?;
    }
    let name = nat_common::maps::programs::SWEEP;
    let walk: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()?;
    walk.load()
        .map_err(|e| Rejected::new("raw tracepoint", name, &e))?;
    let name = nat_common::maps::programs::WAN_EGRESS;
    tc(&mut ebpf, name)?
        .load()
        .map_err(|e| Rejected::new("TC", name, &e))?;
    Ok(ebpf)
}

/// Loads the benchmarks' object (BENCH_OBJECT) and verifies its programs. Its flow table
/// (the one the state-reading forwarder reads) has the NAT's size for `tables`.
pub fn load_bench(tables: Tables) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    // bpf-linker keeps every map the data-path library declares, used or not: the ones the
    // benchmark programs do not use are made as small as they go.
    for name in names::ALL {
        if ![names::DEVMAP, names::FLOWS_OUT].contains(name) {
            loader.map_max_entries(name, 1);
        }
    }
    let flows = nat_common::flow_cache::entries_for(tables.max_sessions);
    let mut ebpf = loader
        .map_max_entries(names::BENCH_FLOOR_OUT, tables.max_sessions)
        .map_max_entries(names::BENCH_FLOOR_IN, tables.max_mappings)
        .map_max_entries(names::BENCH_FLOOR_EP, tables.max_mappings)
        .map_max_entries(names::FLOWS_OUT, flows)
        .load(crate::BENCH_OBJECT)
        .context("loading the benchmarks' eBPF object")?;
    for name in nat_common::maps::programs::BENCH_XDP {
        load_xdp(&mut ebpf, name)?;
    }
    Ok(ebpf)
}

fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<()> {
    xdp(ebpf, name)?
        .load()
        .map_err(|e| Rejected::new("XDP", name, &e).into())
}

/// The kernel refused a program: what the verifier said is the only clue, so it is kept.
#[derive(Debug, thiserror::Error)]
#[error("the kernel rejected {kind} program {name}: {verifier}")]
pub struct Rejected {
    pub kind: &'static str,
    pub name: String,
    /// aya's error in its Debug form, which holds the verifier log.
    pub verifier: String,
}

impl Rejected {
    fn new(kind: &'static str, name: &str, e: &aya::programs::ProgramError) -> Rejected {
        Rejected {
            kind,
            name: name.to_string(),
            verifier: format!("{e:?}"),
        }
    }
}

pub fn tc<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
    Ok(prog.try_into()?)
}

/// Attaches the WAN egress guard to `ifname` (a TCX link, kernel 6.6 or later), or swaps
/// the program inside the link an earlier run pinned at `link_pin`.
pub fn attach_egress(ebpf: &mut Ebpf, ifname: &str, link_pin: &Path) -> Result<()> {
    let p = tc(ebpf, nat_common::maps::programs::WAN_EGRESS)?;
    if link_pin.exists() {
        let pinned = PinnedLink::from_pin(link_pin)
            .with_context(|| format!("opening pinned link {}", link_pin.display()))?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
        match p.attach_to_link(link) {
            Ok(_) => return Ok(()),
            Err(e) if severed(&e) => remove_pin(link_pin)?,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("replacing the program in {}", link_pin.display()));
            }
        }
    }
    let id = p.attach(ifname, TcAttachType::Egress).with_context(|| {
        format!("attaching the egress guard to {ifname} (TCX needs Linux 6.6 or later)")
    })?;
    let fd: FdLink = p
        .take_link(id)?
        .try_into()
        .context("the TC link is not an fd link (kernel older than 6.6?)")?;
    // The pinned link keeps the guard attached after this process exits.
    fd.pin(link_pin)
        .with_context(|| format!("pinning link at {}", link_pin.display()))?;
    Ok(())
}

/// `attach_egress` afresh, after the interface of the link at `link_pin` went away.
pub fn reattach_egress(ebpf: &mut Ebpf, ifname: &str, link_pin: &Path) -> Result<()> {
    remove_pin(link_pin)?;
    attach_egress(ebpf, ifname, link_pin)
}

pub fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
    Ok(prog.try_into()?)
}

/// How a program ended up on its interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A pinned link already existed: its program was replaced atomically (bpf_link_update).
    Replaced,
    Native,
    /// Native XDP was refused; generic (skb) mode works everywhere but is slower.
    Generic,
}

/// Attaches `prog` to `ifname`, or, when `link_pin` holds a link from an earlier run,
/// swaps the program inside that link so traffic never sees a gap.
pub fn attach(
    ebpf: &mut Ebpf,
    prog: &str,
    ifname: &str,
    link_pin: Option<&Path>,
) -> Result<Attached> {
    let p = xdp(ebpf, prog)?;
    if let Some(pin) = link_pin.filter(|p| p.exists()) {
        let pinned = PinnedLink::from_pin(pin)
            .with_context(|| format!("opening pinned link {}", pin.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))?;
        match p.attach_to_link(link) {
            Ok(_) => return Ok(Attached::Replaced),
            // Its interface went away while no daemon ran: a fresh link on the one given.
            Err(e) if severed(&e) => remove_pin(pin)?,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("replacing the program in {}", pin.display()));
            }
        }
    }
    let (id, mode) = match p.attach(ifname, XdpMode::Driver) {
        Ok(id) => (id, Attached::Native),
        Err(native) => {
            let id = p.attach(ifname, XdpMode::Skb).with_context(|| {
                format!("attaching {prog} to {ifname} (native mode failed too: {native})")
            })?;
            log::warn!(
                "{ifname}: native XDP refused ({native}); using generic mode, which is slower"
            );
            (id, Attached::Generic)
        }
    };
    if let Some(pin) = link_pin {
        let link = p.take_link(id)?;
        let fd: FdLink = link
            .try_into()
            .context("XDP link is not an fd link (kernel too old?)")?;
        // The pinned link keeps the program attached after this process exits.
        fd.pin(pin)
            .with_context(|| format!("pinning link at {}", pin.display()))?;
    }
    Ok(mode)
}

/// Was a link update refused because the link's interface is gone ("Link has been severed")?
fn severed(e: &aya::programs::ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::ENOLINK) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

fn remove_pin(pin: &Path) -> Result<()> {
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the old link {}", pin.display())),
    }
}

/// Attaches `prog` to `ifname` afresh, after the interface the link at `link_pin` was on
/// went away (its link is defunct: nothing to replace a program in).
pub fn reattach(ebpf: &mut Ebpf, prog: &str, ifname: &str, link_pin: &Path) -> Result<Attached> {
    remove_pin(link_pin)?;
    attach(ebpf, prog, ifname, Some(link_pin))
}
