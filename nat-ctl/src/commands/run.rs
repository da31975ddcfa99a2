//! `nat-ctl run`: load, configure, attach, then sweep until told to stop.

use anyhow::{Context as _, Result, bail};
use nat_common::{config::LAYOUT_VERSION, maps::programs};
use std::collections::BTreeSet;

use crate::{
    cli::RunArgs,
    config::FileConfig,
    daemon::{Daemon, configure, plan},
    loader::{self, Attached, Tables},
    netdev::{if_exists, ifname},
    pins::Link,
    pins::{DaemonLock, Instance, RunState, ensure_bpffs},
    state::NatMaps,
    sysctl,
};

pub fn run(instance: &Instance, args: &RunArgs) -> Result<()> {
    let plan = plan(args)?;
    ensure_bpffs()?;
    let mut lock = DaemonLock::acquire(instance)?;

    let adopting = instance.exists();
    if adopting {
        let old = NatMaps::open_pinned(instance)?.read_config()?;
        // Interfaces that are gone (removed while no daemon ran: their links are severed)
        // are replaced by the ones given; the sessions are adopted, the links made afresh.
        let gone = !if_exists(old.lan_ifindex) || !if_exists(old.wan_ifindex);
        if gone {
            log::warn!(
                "instance '{}': its interfaces (ifindex {} and {}) are gone; attaching to {} and {}",
                instance.name,
                old.lan_ifindex,
                old.wan_ifindex,
                plan.settings.lan,
                plan.settings.wan
            );
        }
        if old.layout_version == LAYOUT_VERSION
            && !gone
            && (old.lan_ifindex != plan.lan_index || old.wan_ifindex != plan.wan_index)
        {
            bail!(
                "instance '{}' is attached to {} and {}, not {} and {}: run `nat-ctl --instance {} detach` first, or pick another --instance",
                instance.name,
                ifname(old.lan_ifindex),
                ifname(old.wan_ifindex),
                plan.settings.lan,
                plan.settings.wan,
                instance.name
            );
        }
    }

    let tables = Tables {
        max_sessions: plan.settings.max_sessions,
        max_mappings: plan.settings.max_mappings,
    };
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(plan.settings.log_level.filter());
    }
    let mut ebpf = loader::load_with_log(Some(instance), tables, plan.settings.log_level)?;
    // The data path's log lines, forwarded to this process's log.
    let kernel_log = aya_log::EbpfLogger::init_with_logger(&mut ebpf, crate::kernel_log::KernelLog)
        .context("aya-log")?;
    let mut maps = NatMaps::from_ebpf(&mut ebpf)?;
    maps.config_lock = Some(instance.config_lock_path());
    // Switches before the config: the config is what makes the programs act.
    if adopting {
        let now: Vec<String> = crate::passthrough::list(&maps)?
            .iter()
            .map(|(n, on)| format!("{n} {}", if *on { "on" } else { "off" }))
            .collect();
        println!(
            "passthrough switches kept from the pinned state: {}",
            now.join(", ")
        );
    } else {
        maps.set_switches(&plan.settings.passthrough)?;
    }
    let (cfg, pool) = configure(&mut maps, &plan)?;
    // The file's forwards once the LAN side is written (a forward must lead into it).
    crate::forwards::sync_file(&mut maps, &plan.settings.forwards, false)?;

    for change in sysctl::prepare_forwarding(&plan.settings.lan, &plan.settings.wan)? {
        log::info!("sysctl {change}");
    }
    let lan_mode = loader::attach(
        &mut ebpf,
        programs::LAN_INGRESS,
        &plan.settings.lan,
        Some(&instance.link_path(Link::Lan)),
    )?;
    let wan_mode = loader::attach(
        &mut ebpf,
        programs::WAN_INGRESS,
        &plan.settings.wan,
        Some(&instance.link_path(Link::Wan)),
    )?;
    loader::attach_egress(
        &mut ebpf,
        &plan.settings.wan,
        &instance.link_path(Link::WanEgress),
    )?;
    let describe = |a: Attached| match a {
        Attached::Replaced => "program replaced in the existing link",
        Attached::Native => "native XDP",
        Attached::Generic => "generic XDP (slower)",
    };
    println!(
        "xdp-nat '{}' running: LAN {} ({}, {}), WAN {} ({}, {}, egress guard), {} sessions adopted",
        instance.name,
        plan.settings.lan,
        plan.lan_side.describe(),
        describe(lan_mode),
        plan.settings.wan,
        plan.wan_addr,
        describe(wan_mode),
        if adopting { maps.sessions()?.len() } else { 0 },
    );
    println!(
        "port pool: {} ordinary + {} privileged ports; filtering {}; Ctrl-C stops the daemon and leaves the NAT running{}",
        pool.ordinary.len(),
        pool.privileged.len(),
        plan.settings.filtering.name(),
        if args.detach_on_exit {
            " (no: --detach-on-exit)"
        } else {
            ""
        }
    );

    let state = RunState {
        pid: std::process::id(),
        config: FileConfig::path(args.config.as_deref()),
        lan: args.lan.clone(),
        wan: args.wan.clone(),
        wan_addr: args.wan_addr,
        log_level: args.log_level,
        reloads: 0,
        ..Default::default()
    };
    state.write(instance)?;
    lock.ready()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut daemon = Daemon {
        kernel_log: Some(kernel_log),
        ebpf: &mut ebpf,
        instance,
        args,
        maps,
        cfg,
        pool,
        plan,
        state,
        missing: BTreeSet::new(),
    };
    let result = rt.block_on(daemon.serve());
    let _ = std::fs::remove_file(instance.run_state_path());
    if args.detach_on_exit {
        drop(daemon);
        drop(ebpf);
        instance.remove_pins()?;
        println!("detached and removed the pinned state");
    }
    result
}
