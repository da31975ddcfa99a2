//! The benchmarks' eBPF object (`cargo xtask bench`), which the daemon never loads: a bare
//! forwarder (the same parse, fib lookup and redirect as the NAT, no translation), the
//! same with one read of per-flow state, the least a new flow needs beyond that, a
//! live-frame traffic generator, and a counting sink.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use nat_common::{
    checksum::fold,
    flow_cache::{self, FlowKey},
    maps::{
        BENCH_PORTS_PER_HOST, BenchGen, DEFAULT_MAX_MAPPINGS, DEFAULT_MAX_SESSIONS, EndpointKey,
        ExternalKey, MAPPING_ACTIVE, Mapping, Session, SessionKey, bench_floor_port,
    },
    ports::{MAX_PORT_TRIES, PORTS_TAKEN_WORDS, taken_bit},
    proto::{ETH_HDR_LEN, ETH_P_IP, ICMP_ECHO_REQUEST, IPPROTO_UDP},
    rewrite::{IP_CHECK, decrement_ttl, get_u16, set_u16, set_u32},
};

use nat_ebpf::{
    forward::{Route, redirect, route},
    maps::FLOWS_OUT,
    packet::{parse_ipv4, parse_transport, ptr_at},
    state::EEXIST,
};

#[map]
static BENCH_GEN_CONFIG: Array<BenchGen> = Array::with_max_entries(1, 0);

/// Slot 0: frames generated (per CPU).
#[map]
static BENCH_GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: frames received by the sink (per CPU).
#[map]
static BENCH_SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// While slot 0 of BENCH_SINK_TIMED is not 0: when the sink received its first frame (slot 0)
/// and its last (slot 1), bpf_ktime ns, and how many it received (slot 2), per CPU; the bench
/// zeroes them before a timed burst.
#[map]
static BENCH_SINK_CLOCK: PerCpuArray<u64> = PerCpuArray::with_max_entries(3, 0);

/// Slot 0: 1 while the sink clocks its frames (BENCH_SINK_CLOCK), which costs a clock read
/// per frame that the forwarding rates do not pay.
#[map]
static BENCH_SINK_TIMED: Array<u32> = Array::with_max_entries(1, 0);

/// The new-flow floor's tables, as the NAT's: a session per flow (SESSIONS), the external
/// port its replies find it by (MAPPINGS_IN) and its endpoint's mapping (MAPPINGS_OUT).
/// Sized by the loader as the NAT's tables, and filled by the bench to as many sessions and
/// mappings as the NAT holds.
#[map]
static BENCH_FLOOR_OUT: HashMap<SessionKey, Session> =
    HashMap::with_max_entries(DEFAULT_MAX_SESSIONS, 0);

#[map]
static BENCH_FLOOR_IN: HashMap<ExternalKey, Mapping> =
    HashMap::with_max_entries(DEFAULT_MAX_MAPPINGS, 0);

#[map]
static BENCH_FLOOR_EP: HashMap<EndpointKey, Mapping> =
    HashMap::with_max_entries(DEFAULT_MAX_MAPPINGS, 0);

/// The floor's ports taken, a bit each, laid out as PORTS_TAKEN is the NAT's
/// (ports::taken_bit): a draw skips a taken port without a failed insert, as the NAT's do.
/// The bench clears it with the claims.
#[map]
static BENCH_FLOOR_TAKEN: Array<u64> = Array::with_max_entries(PORTS_TAKEN_WORDS, 0);

/// Slot 0: the floor's map operations (bits of BENCH_FLOOR_OPS) it leaves out (0, as
/// loaded: none); the program-cost bench times it with one operation more at a time, to
/// tell what each adds.
#[map]
static BENCH_FLOOR_SKIP: Array<u32> = Array::with_max_entries(1, 0);

#[xdp]
pub fn bench_forward(ctx: XdpContext) -> u32 {
    forward(&ctx, false)
}

/// The least a stateful NAT does for a new flow's first packet, as one program on this
/// machine: the forwarder with its read of per-flow state, and before it the map operations
/// of BENCH_FLOOR_OPS (those BENCH_FLOOR_SKIP leaves in), in the NAT's order, on tables as
/// full as the NAT's: the flow's session and its endpoint's mapping looked up (misses), an
/// external port claimed as the NAT claims one (a bitmap of the ports taken, then
/// BPF_NOEXIST; drawn again when taken), the endpoint's mapping and the session inserted.
/// No share or pool is checked, no counter kept: a floor, not a NAT.
#[xdp]
pub fn bench_new_flow_floor(ctx: XdpContext) -> u32 {
    let Ok(Some(pkt)) = parse_ipv4(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Ok(Some(t)) = parse_transport(&ctx, &pkt, ICMP_ECHO_REQUEST) else {
        return xdp_action::XDP_DROP;
    };
    let skip = BENCH_FLOOR_SKIP.get(0).copied().unwrap_or(0);
    let does = |op: u32| skip & (1 << op) == 0;
    let key = SessionKey::new(pkt.proto, pkt.src, t.sport, pkt.dst, t.dport);
    let ep = EndpointKey {
        addr: pkt.src,
        port: t.sport,
        proto: pkt.proto,
        _pad: 0,
    };
    // A flow or endpoint the tables know is not a new one: the bench removes its own after
    // each round.
    if does(0) && BENCH_FLOOR_OUT.get_ptr(&key).is_some() {
        return xdp_action::XDP_ABORTED;
    }
    if does(1) && BENCH_FLOOR_EP.get_ptr(&ep).is_some() {
        return xdp_action::XDP_ABORTED;
    }
    let mut m = Mapping {
        int_addr: pkt.src,
        int_port: t.sport,
        ext_port: bench_floor_port(pkt.src, t.sport, 0),
        proto: pkt.proto,
        state: MAPPING_ACTIVE,
        ..Mapping::default()
    };
    if does(2) && !claim(&mut m) {
        // Every port drawn was taken: the NAT gives such a flow up too.
        return xdp_action::XDP_DROP;
    }
    if does(3) && BENCH_FLOOR_EP.insert(&ep, &m, BPF_NOEXIST as u64).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    let s = Session {
        ext_port: m.ext_port,
        ..Session::default()
    };
    if does(4)
        && BENCH_FLOOR_OUT
            .insert(&key, &s, BPF_NOEXIST as u64)
            .is_err()
    {
        return xdp_action::XDP_ABORTED;
    }
    forward(&ctx, true)
}

/// Claims an external port for `m` in BENCH_FLOOR_IN, drawing again while the port drawn is
/// taken (by BENCH_FLOOR_TAKEN, or by a failed insert), at most as often as the NAT does
/// (MAX_PORT_TRIES). False when none was free.
#[inline(always)]
fn claim(m: &mut Mapping) -> bool {
    for attempt in 0..MAX_PORT_TRIES {
        m.ext_port = bench_floor_port(m.int_addr, m.int_port, attempt);
        let Some((word, bit)) = taken_bit(m.proto, u16::from_be(m.ext_port)) else {
            return false;
        };
        let Some(word) = BENCH_FLOOR_TAKEN.get_ptr_mut(word) else {
            return false;
        };
        // SAFETY: map value pointer. A plain read-modify-write: a bit another CPU's write
        // loses only costs a failed insert later, and the insert decides.
        let word = unsafe { &mut *word };
        if *word & bit != 0 {
            continue;
        }
        let ext = ExternalKey {
            port: m.ext_port,
            proto: m.proto,
            _pad: 0,
        };
        match BENCH_FLOOR_IN.insert(&ext, &*m, BPF_NOEXIST as u64) {
            Ok(()) => {
                *word |= bit;
                return true;
            }
            Err(e) if e == -EEXIST => *word |= bit,
            Err(_) => return false,
        }
    }
    false
}

/// The bare forwarder that also reads one 32-byte entry of state per packet, from the slot
/// its flow hashes to: the least a NAT must do more than a forwarder, which tells what that
/// one read of per-flow state costs on this machine. The table is FLOWS_OUT at the default
/// sizes (its slots and alignment), only read; the object must be loaded with tables at
/// least that size. A lower bound: nothing the forwarding does waits for the word read, so
/// the CPU may run the FIB lookup while it comes from memory, where a NAT's translation and
/// next hop wait for its entry (a variant whose redirect waited for it measured the same end
/// to end: docs/fast-path.md).
#[xdp]
pub fn bench_forward_state(ctx: XdpContext) -> u32 {
    forward(&ctx, true)
}

#[inline(always)]
fn forward(ctx: &XdpContext, read_state: bool) -> u32 {
    let Ok(Some(pkt)) = parse_ipv4(ctx) else {
        return xdp_action::XDP_PASS;
    };
    // The same parse as the NAT (the parse-only baseline): the transport header too, and a
    // malformed one is not forwarded.
    let Ok(t) = parse_transport(ctx, &pkt, ICMP_ECHO_REQUEST) else {
        return xdp_action::XDP_DROP;
    };
    if read_state {
        let (sport, dport) = t.map_or((0, 0), |t| (t.sport, t.dport));
        let key = FlowKey::out(&SessionKey::new(pkt.proto, pkt.src, sport, pkt.dst, dport));
        let bits = flow_cache::set_bits(flow_cache::entries_for(DEFAULT_MAX_SESSIONS));
        let Some(e) = FLOWS_OUT.get_ptr(flow_cache::first_entry(0, bits, &key)) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: a map value; read as the flow cache reads an entry's first word.
        if unsafe { e.cast::<u64>().read_volatile() } == u64::MAX {
            // Never true (word 0 is zero, or a flow's two addresses, never both
            // 255.255.255.255): the read cannot be left out.
            return xdp_action::XDP_ABORTED;
        }
    }
    if pkt.ttl <= 1 {
        return xdp_action::XDP_PASS;
    }
    match route(ctx, pkt.src, pkt.dst, pkt.tos, pkt.tot_len) {
        Route::Resolved {
            ifindex,
            smac,
            dmac,
        } => {
            decrement_ttl(pkt.ip);
            redirect(pkt.eth, ifindex, &smac, &dmac).unwrap_or(xdp_action::XDP_ABORTED)
        }
        _ => xdp_action::XDP_PASS,
    }
}

/// Headers of a 60-byte UDP frame: Ethernet, IPv4, UDP.
const GEN_HDRS: usize = ETH_HDR_LEN + 20 + 8;

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let (Some(cfg), Some(seq), Ok(h)) = (
        BENCH_GEN_CONFIG.get(0),
        BENCH_GEN_SEQ.get_ptr_mut(0),
        ptr_at::<[u8; GEN_HDRS]>(&ctx, 0),
    ) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU slot; bounds-checked frame.
    let (seq, h) = unsafe { (&mut *seq, &mut *h) };
    let flow = if cfg.flows == 0 {
        0
    } else {
        (*seq % cfg.flows as u64) as u32
    };
    *seq += 1;
    let frame_len = (ctx.data_end() - ctx.data()) as u16;
    // Live-frame pages come back with whatever the path wrote: rewrite every header field.
    h[..6].copy_from_slice(&cfg.dst_mac);
    h[6..12].copy_from_slice(&cfg.src_mac);
    set_u16(h, 12, ETH_P_IP.to_be());
    let ip = ETH_HDR_LEN;
    h[ip] = 0x45;
    h[ip + 1] = 0;
    set_u16(h, ip + 2, (frame_len - ETH_HDR_LEN as u16).to_be());
    set_u32(h, ip + 4, 0); // id, flags, offset
    h[ip + 8] = 64;
    h[ip + 9] = IPPROTO_UDP;
    set_u16(h, ip + IP_CHECK, 0);
    let dst_ports = cfg.dst_ports.max(1);
    let (endpoint, dport) = (flow / dst_ports, 9 + flow % dst_ports);
    let src = u32::from_be(cfg.src_addr) + endpoint / BENCH_PORTS_PER_HOST;
    set_u32(h, ip + 12, src.to_be());
    set_u32(h, ip + 16, cfg.dst_addr);
    let mut sum = 0u32;
    // verifier: fixed ten words of the IPv4 header.
    for i in 0..10 {
        sum += get_u16(h, ip + 2 * i) as u32;
    }
    set_u16(h, ip + IP_CHECK, !fold(sum));
    let udp = ip + 20;
    set_u16(
        h,
        udp,
        ((10_000 + endpoint % BENCH_PORTS_PER_HOST) as u16).to_be(),
    );
    set_u16(h, udp + 2, (dport as u16).to_be());
    set_u16(h, udp + 4, (frame_len - (ETH_HDR_LEN + 20) as u16).to_be());
    set_u16(h, udp + 6, 0); // no checksum
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    if let Some(n) = BENCH_SINK_COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *n += 1 };
    }
    // Only the routed IPv4 frames are clocked: a stray ARP probe would stretch the span.
    if BENCH_SINK_TIMED.get(0).is_some_and(|t| *t != 0) && matches!(parse_ipv4(&ctx), Ok(Some(_))) {
        // SAFETY: no arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        if let (Some(first), Some(last), Some(n)) = (
            BENCH_SINK_CLOCK.get_ptr_mut(0),
            BENCH_SINK_CLOCK.get_ptr_mut(1),
            BENCH_SINK_CLOCK.get_ptr_mut(2),
        ) {
            // SAFETY: per-CPU slots.
            unsafe {
                if *first == 0 {
                    *first = now;
                }
                *last = now;
                *n += 1;
            }
        }
    }
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
