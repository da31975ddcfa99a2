//! `bench --cost-only --scenario S --profile`: where one program-cost scenario's time goes,
//! by call site. `perf record` samples every CPU's stacks while the scenario's rounds run;
//! each sample taken in the NAT's XDP program is put down to the line of the program's own
//! source (nat-ebpf, nat-common) nearest before the instruction it was at, or before the
//! call it was in (a map helper, the FIB lookup). The kernel's line info for the program's
//! JIT-compiled code (BPF_OBJ_GET_INFO_BY_FD) maps an address to its line; perf gives the
//! address as `bpf_prog_<tag>_<function>+<offset>`.
//!
//! A site is named by up to three lines of the program's own source, the nearest before the
//! sampled address in the compiled code: a map helper called "at state.rs `let ext =
//! ExternalKey {`" is the insert with that key. The compiler moves code, so a name can be a
//! neighbour's (a lookup right after code that this packet skipped is named by that code);
//! read it with the source at hand. The established rows' warm-up passes (each flow's next
//! hop looked up again) are sampled with their timed ones.

use anyhow::{Context as _, Result, bail, ensure};
use std::{
    collections::HashMap,
    fmt::Write as _,
    os::fd::{FromRawFd as _, OwnedFd},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// One line-info record of a JIT-compiled program: where its code starts, and its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub addr: u64,
    pub file: String,
    pub line: u32,
    pub text: String,
}

/// A loaded program's JIT-compiled code: where each of its functions starts (by the tag
/// perf names it with) and its line info, by address.
#[derive(Debug, Default)]
pub struct JitLines {
    pub functions: HashMap<String, u64>,
    /// Sorted by address.
    pub lines: Vec<Line>,
}

/// Source files of the program's own code, as the line info spells their paths.
const OWN_SOURCES: [&str; 2] = ["nat-ebpf/src/", "nat-common/src/"];

/// Lines of the program's own source a site is named by, the nearest first: the code the
/// compiler inlined at one place comes from several.
const SITE_LINES: usize = 3;

/// How far back from an address a line of the program's own source is looked for: past the
/// library code (map wrappers, integer helpers) inlined into it.
const MAX_LINES_BACK: usize = 64;

impl JitLines {
    /// The source lines a perf frame (`bpf_prog_<tag>_<function>+0x<offset>`) was at, as
    /// "file:line  text", the files the program's own; None for a frame outside these
    /// functions. For a frame that called out (`returned`), its offset is a return address,
    /// the instruction after the call, whose line may be the next one: the call's own byte
    /// before it is looked up instead.
    pub fn site(&self, frame: &str, returned: bool) -> Option<String> {
        let rest = frame.strip_prefix("bpf_prog_")?;
        let (tag, rest) = rest.split_at_checked(16)?;
        let base = *self.functions.get(tag)?;
        let offset = match rest.split_once('+') {
            Some((_, off)) => u64::from_str_radix(off.trim_start_matches("0x"), 16).ok()?,
            None => 0,
        };
        let addr = base + offset - u64::from(returned && offset > 0);
        let at = self.lines.partition_point(|l| l.addr <= addr);
        let mut seen: Vec<String> = Vec::new();
        // Within the function: the one before it is another place.
        let back = self.lines[..at].iter().rev().take_while(|l| l.addr >= base);
        for l in back.take(MAX_LINES_BACK) {
            // A line of braces alone says nothing of where the code is.
            let text = l.text.trim();
            if !OWN_SOURCES.iter().any(|s| l.file.contains(s))
                || text.chars().all(|c| "{}()[];, ".contains(c))
            {
                continue;
            }
            let file = l.file.rsplit('/').next().unwrap_or(&l.file);
            let here = format!("{file}:{}  {text}", l.line);
            if !seen.contains(&here) {
                seen.push(here);
            }
            if seen.len() == SITE_LINES {
                break;
            }
        }
        (!seen.is_empty()).then(|| seen.join(" · "))
    }
}

/// Samples whose stack holds a frame of a program named in `programs` (perf's symbol for a
/// BPF program ends in `_<name>`), by where they were: in the program's own code ("in the
/// program"), or in a kernel function it called (with whatever that called), at a site.
/// Returns the samples counted and the sites, most first. `script` is `perf script -F
/// comm,ip,sym,symoff` output: a header line per sample, then a frame per line, leaf first.
pub fn attribute(script: &str, programs: &[&str], jit: &JitLines) -> (usize, Vec<(usize, String)>) {
    let mut sites: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for sample in script.split("\n\n") {
        let frames: Vec<&str> = sample
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        let ours = |f: &&str| {
            let name = f.split('+').next().unwrap_or(f);
            name.starts_with("bpf_prog_")
                && programs.iter().any(|p| name.ends_with(&format!("_{p}")))
        };
        if !frames.iter().any(ours) {
            continue;
        }
        total += 1;
        // The innermost frame of BPF code, and the kernel function it called, if the sample
        // is in one (a map helper, the FIB lookup: whatever that one called in turn).
        let inner = frames.iter().position(|f| f.starts_with("bpf_prog_"));
        let called = inner
            .filter(|&i| i > 0)
            .map(|i| frames[i - 1].split('+').next().unwrap_or(frames[i - 1]));
        let site = inner
            .and_then(|i| jit.site(frames[i], called.is_some()))
            .unwrap_or_else(|| "(no line of the program's source)".into());
        let key = match called {
            None => format!("in the program, at {site}"),
            Some(f) => format!("{f}, called at {site}"),
        };
        *sites.entry(key).or_default() += 1;
    }
    let mut sites: Vec<(usize, String)> = sites.into_iter().map(|(k, n)| (n, k)).collect();
    sites.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    (total, sites)
}

/// The report: a table of the sites that took at least `min_share` of the samples.
pub fn report(
    scenario: &str,
    sessions: u32,
    total: usize,
    sites: &[(usize, String)],
    min_share: f64,
) -> String {
    let mut out = format!(
        "\n## Where \"{scenario}\" spends its time, {sessions} sessions (perf: {total} samples in the NAT's program)\n\n\
         perf sampled every CPU's stacks while the scenario ran: these are the samples taken in the NAT's program or in what it called (map helpers, the FIB lookup), a share of the time each (perf's sampling slows the program down: the times are in the tables above). A place is named by the nearest lines of the program's own source before it in the compiled code (the compiler moves code: read them with the source).\n\n\
         | share | where |\n|---:|---|\n"
    );
    let mut rest = 0;
    for (n, site) in sites {
        let share = *n as f64 / total.max(1) as f64;
        if share >= min_share {
            let site = site.replace('|', "\\|");
            let _ = writeln!(out, "| {:.1}% | {site} |", 100.0 * share);
        } else {
            rest += n;
        }
    }
    let _ = writeln!(
        out,
        "| {:.1}% | elsewhere (sites under {:.1}% each) |",
        100.0 * rest as f64 / total.max(1) as f64,
        100.0 * min_share
    );
    out
}

/// `perf record` of every CPU's stacks, until stopped.
pub struct Perf {
    /// None once stopped.
    child: Option<Child>,
    path: PathBuf,
}

/// A profile given up (a panic in the rounds) still ends its recording, and its file goes.
impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Samples per second and CPU: enough for a scenario of a few seconds, no more than perf
/// keeps up with.
const PERF_HZ: &str = "20000";

impl Perf {
    pub fn start() -> Result<Perf> {
        let path =
            std::env::temp_dir().join(format!("xdp-nat-profile-{}.data", std::process::id()));
        let child = Command::new("perf")
            .args(["record", "-q", "-a", "-g", "-F", PERF_HZ, "-o"])
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .context("starting `perf record` (Debian: apt install linux-perf)")?;
        // perf opens its events before it samples anything: give it a moment.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(Perf {
            child: Some(child),
            path,
        })
    }

    /// Stops the recording and returns `perf script`'s stacks.
    pub fn stop(mut self) -> Result<String> {
        let mut child = self.child.take().context("perf already stopped")?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        let status = child.wait()?;
        // perf ends its recording on SIGINT, and may end by it too.
        let interrupted =
            std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
        ensure!(status.success() || interrupted, "perf record: {status}");
        let out = Command::new("perf")
            .args(["script", "-F", "comm,ip,sym,symoff", "-i"])
            .arg(&self.path)
            .stderr(Stdio::null())
            .output()
            .context("perf script")?;
        ensure!(out.status.success(), "perf script: {}", out.status);
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

// The kernel's ABI (include/uapi/linux/bpf.h): the leading fields of struct bpf_prog_info
// that the line info needs, struct bpf_line_info, struct bpf_btf_info and BTF's header.

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;

#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    type_: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    nr_prog_tags: u32,
    prog_tags: u64,
}
const _: () = assert!(size_of::<ProgInfo>() == 192);

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct LineInfo {
    insn_off: u32,
    file_name_off: u32,
    line_off: u32,
    line_col: u32,
}

#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}
const _: () = assert!(size_of::<BtfInfo>() == 32);

/// The first two bytes of BTF (little-endian 0xeb9f).
const BTF_MAGIC: u16 = 0xeb9f;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> Result<i64> {
    // SAFETY: bpf(2) with a zero-padded attribute buffer of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 {
        bail!("bpf command {cmd}: {}", std::io::Error::last_os_error());
    }
    Ok(r)
}

/// An fd for the object of `id` (a program or BTF), by `cmd`.
fn fd_by_id(cmd: libc::c_long, id: u32) -> Result<OwnedFd> {
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(cmd, &mut attr)?;
    // SAFETY: a new fd the kernel just returned, owned from here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_OBJ_GET_INFO_BY_FD into `info` (a kernel info struct, whose pointers it fills).
fn info_by_fd<T>(fd: &OwnedFd, info: &mut T) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let mut attr = [0u8; 128];
    attr[..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(size_of::<T>() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info as *mut T as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(())
}

/// The JIT-compiled code of loaded program `id`: its functions and line info.
pub fn jit_lines(id: u32) -> Result<JitLines> {
    let fd = fd_by_id(BPF_PROG_GET_FD_BY_ID, id)?;
    let mut counts = ProgInfo::default();
    info_by_fd(&fd, &mut counts)?;
    ensure!(
        counts.nr_jited_line_info == counts.nr_line_info && counts.nr_line_info > 0,
        "program {id} has no line info for its JIT-compiled code"
    );
    let n_lines = counts.nr_line_info as usize;
    let mut ksyms = vec![0u64; counts.nr_jited_ksyms as usize];
    let mut tags = vec![[0u8; 8]; counts.nr_prog_tags as usize];
    let mut lines = vec![LineInfo::default(); n_lines];
    let mut jited = vec![0u64; n_lines];
    let mut want = ProgInfo {
        nr_jited_ksyms: counts.nr_jited_ksyms,
        jited_ksyms: ksyms.as_mut_ptr() as u64,
        nr_line_info: counts.nr_line_info,
        line_info_rec_size: size_of::<LineInfo>() as u32,
        line_info: lines.as_mut_ptr() as u64,
        nr_jited_line_info: counts.nr_jited_line_info,
        jited_line_info_rec_size: size_of::<u64>() as u32,
        jited_line_info: jited.as_mut_ptr() as u64,
        nr_prog_tags: counts.nr_prog_tags,
        prog_tags: tags.as_mut_ptr() as u64,
        ..Default::default()
    };
    info_by_fd(&fd, &mut want)?;
    // The kernel gives zeros for addresses it may not show (kernel.kptr_restrict, or no
    // CAP_SYSLOG/CAP_PERFMON), and says nothing else.
    ensure!(
        ksyms.iter().all(|&a| a != 0) && jited.iter().all(|&a| a != 0),
        "program {id}: the kernel hid its code's addresses (kernel.kptr_restrict?)"
    );
    let strings = btf_strings(counts.btf_id)?;
    let string = |off: u32| -> String {
        let s = strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    };
    let functions = tags
        .iter()
        .zip(&ksyms)
        .map(|(t, &a)| (t.iter().map(|b| format!("{b:02x}")).collect(), a))
        .collect();
    let mut out: Vec<Line> = lines
        .iter()
        .zip(&jited)
        .map(|(l, &addr)| Line {
            addr,
            file: string(l.file_name_off),
            line: l.line_col >> 10,
            text: string(l.line_off),
        })
        .collect();
    out.sort_by_key(|l| l.addr);
    Ok(JitLines {
        functions,
        lines: out,
    })
}

/// The string section of BTF object `id`.
fn btf_strings(id: u32) -> Result<Vec<u8>> {
    let fd = fd_by_id(BPF_BTF_GET_FD_BY_ID, id)?;
    let mut info = BtfInfo::default();
    info_by_fd(&fd, &mut info)?;
    let mut data = vec![0u8; info.btf_size as usize];
    let mut info = BtfInfo {
        btf: data.as_mut_ptr() as u64,
        btf_size: data.len() as u32,
        ..Default::default()
    };
    info_by_fd(&fd, &mut info)?;
    // struct btf_header: magic u16, version u8, flags u8, hdr_len, type_off, type_len,
    // str_off, str_len (u32 each).
    ensure!(
        data.len() >= 24 && u16::from_ne_bytes([data[0], data[1]]) == BTF_MAGIC,
        "BTF {id}: not BTF ({} bytes)",
        data.len()
    );
    let word =
        |at: usize| u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
    let (hdr_len, str_off, str_len) = (word(4), word(16), word(20));
    let start = hdr_len + str_off;
    data.get(start..start + str_len)
        .map(<[u8]>::to_vec)
        .context("BTF string section out of bounds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use integration_tests::fixture::{FixtureConfig, default_tables, with_fixture};
    use nat_common::maps::programs;

    /// The kernel's answer for the NAT's loaded LAN program, through the bpf(2) calls above.
    #[test]
    fn the_loaded_lan_programs_lines_name_its_source() {
        with_fixture(default_tables(), FixtureConfig::default(), |fx| {
            let prog = fx.ebpf.program(programs::LAN_INGRESS).expect("LAN program");
            let j = jit_lines(prog.info().expect("info").id()).expect("line info");
            // The entry point and its subprograms (try_nat_lan, the port draw's callback...),
            // each where the kernel's symbols say a function of a BPF program is. (The entry
            // point's symbol carries the whole program's tag; perf, like these functions, names
            // it by its own.)
            assert!(j.functions.len() > 1, "{} functions", j.functions.len());
            let kallsyms = std::fs::read_to_string("/proc/kallsyms").expect("/proc/kallsyms");
            let symbol = |base: u64| {
                kallsyms.lines().find_map(|l| {
                    let mut f = l.split_whitespace();
                    let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                    let name = f.nth(1)?;
                    (addr == base && name.starts_with("bpf_prog_")).then(|| name.to_string())
                })
            };
            for &base in j.functions.values() {
                assert!(symbol(base).is_some(), "no BPF function at {base:#x}");
            }
            // The line it names is the source file's own.
            let source = include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../nat-ebpf/src/lan.rs"
            ));
            let want = source
                .lines()
                .position(|l| l.contains("pub fn try_nat_lan("))
                .expect("try_nat_lan in lan.rs") as u32
                + 1;
            let found = j
                .lines
                .iter()
                .find(|l| {
                    l.file.ends_with("nat-ebpf/src/lan.rs") && l.text.contains("fn try_nat_lan")
                })
                .expect("a line of try_nat_lan");
            assert_eq!(found.line, want);
            // The function that holds try_nat_lan's first line names it at its entry.
            let entry = j
                .lines
                .iter()
                .find(|l| l.text.contains("fn try_nat_lan"))
                .expect("try_nat_lan")
                .addr;
            let (tag, base) = j
                .functions
                .iter()
                .filter(|(_, b)| **b <= entry)
                .max_by_key(|(_, b)| **b)
                .expect("its function");
            let name = symbol(*base).expect("its symbol");
            assert_eq!(name, format!("bpf_prog_{tag}_try_nat_lan"));
            let frame = format!("{name}+{:#x}", entry - base);
            let site = j.site(&frame, false).expect("a site");
            assert!(site.starts_with("lan.rs:"), "{site}");
        });
    }

    fn jit() -> JitLines {
        let line = |addr, file: &str, line, text: &str| Line {
            addr,
            file: file.into(),
            line,
            text: text.into(),
        };
        JitLines {
            functions: [
                ("0123456789abcdef".to_string(), 0x1000),
                ("00000000000000aa".to_string(), 0x1300),
            ]
            .into(),
            lines: vec![
                line(0x1000, "/w/nat-ebpf/src/lan.rs", 35, "pub fn try_nat_lan("),
                line(
                    0x1100,
                    "/w/nat-ebpf/src/state.rs",
                    366,
                    "match MAPPINGS_IN.insert(&ext",
                ),
                line(0x1108, "/w/nat-ebpf/src/state.rs", 390, "    }"),
                line(
                    0x1110,
                    "/r/aya-ebpf/src/helpers.rs",
                    24,
                    "fun(map, key, value, flags)",
                ),
                line(
                    0x1200,
                    "/w/nat-common/src/flow_cache.rs",
                    101,
                    "if let Some(p) = map.get_ptr(",
                ),
                line(0x1300, "/r/core/src/intrinsics.rs", 9, "memset"),
            ],
        }
    }

    #[test]
    fn a_site_is_the_own_source_line_before_the_address() {
        let j = jit();
        // Inside the inlined helper: the program's own lines before it, the nearest first,
        // a closing brace skipped, the library's lines left out.
        assert_eq!(
            j.site("bpf_prog_0123456789abcdef_try_nat_lan+0x118", false)
                .as_deref(),
            Some("state.rs:366  match MAPPINGS_IN.insert(&ext · lan.rs:35  pub fn try_nat_lan(")
        );
        assert_eq!(
            j.site("bpf_prog_0123456789abcdef_try_nat_lan+0x200", false)
                .as_deref(),
            Some(
                "flow_cache.rs:101  if let Some(p) = map.get_ptr( · state.rs:366  match MAPPINGS_IN.insert(&ext · lan.rs:35  pub fn try_nat_lan("
            )
        );
        // At the function's entry (no offset): its first line.
        assert_eq!(
            j.site("bpf_prog_0123456789abcdef_try_nat_lan", false),
            Some("lan.rs:35  pub fn try_nat_lan(".into())
        );
        // A function whose own lines are all the library's: none of the one before it.
        assert_eq!(j.site("bpf_prog_00000000000000aa_memset+0x8", false), None);
        // Another program's function, or a kernel symbol: no site.
        assert_eq!(j.site("bpf_prog_fedcba9876543210_other+0x10", false), None);
        assert_eq!(j.site("htab_map_update_elem+0x5", false), None);
        // A return address that starts the next line: the call was on the line before.
        assert_eq!(
            j.site("bpf_prog_0123456789abcdef_try_nat_lan+0x200", true)
                .as_deref(),
            Some("state.rs:366  match MAPPINGS_IN.insert(&ext · lan.rs:35  pub fn try_nat_lan(")
        );
    }

    #[test]
    fn samples_are_counted_by_leaf_and_call_site_only_in_the_named_programs() {
        // perf script -F comm,ip,sym,symoff: the command, then the stack, leaf first.
        let script = "\
bench 
\tffffffff81000000 htab_map_update_elem+0x10
\tffffffffc0001118 bpf_prog_0123456789abcdef_try_nat_lan+0x118
\tffffffffc0002000 bpf_prog_aaaaaaaaaaaaaaaa_xdp_nat_lan+0x5

bench 
\tffffffffc0001205 bpf_prog_0123456789abcdef_try_nat_lan+0x205
\tffffffffc0002000 bpf_prog_aaaaaaaaaaaaaaaa_xdp_nat_lan+0x5

bench 
\tffffffff81000100 _raw_spin_lock+0x4
\tffffffff81000000 htab_map_update_elem+0x22
\tffffffffc0001119 bpf_prog_0123456789abcdef_try_nat_lan+0x119
\tffffffffc0002000 bpf_prog_aaaaaaaaaaaaaaaa_xdp_nat_lan+0x5

bench 
\tffffffff81000000 htab_map_update_elem+0x30
\tffffffffc0001200 bpf_prog_0123456789abcdef_try_nat_lan+0x200
\tffffffffc0002000 bpf_prog_aaaaaaaaaaaaaaaa_xdp_nat_lan+0x5

bench 
\tffffffff81000000 htab_map_update_elem+0x10
\tffffffffc0003000 bpf_prog_bbbbbbbbbbbbbbbb_bench_new_flow_floor+0x40
";
        let (total, sites) = attribute(script, &["xdp_nat_lan"], &jit());
        // The floor's sample is not the NAT's.
        assert_eq!(total, 4);
        // A lock taken inside the insert is the insert's; so is the one whose return address
        // starts the program's next line.
        assert_eq!(
            sites,
            vec![
                (
                    3,
                    "htab_map_update_elem, called at state.rs:366  match MAPPINGS_IN.insert(&ext · lan.rs:35  pub fn try_nat_lan("
                        .to_string()
                ),
                (
                    1,
                    "in the program, at flow_cache.rs:101  if let Some(p) = map.get_ptr( · state.rs:366  match MAPPINGS_IN.insert(&ext · lan.rs:35  pub fn try_nat_lan("
                        .to_string()
                ),
            ]
        );
        let table = report("new flow", 65_536, total, &sites, 0.5);
        assert!(table.contains("| 75.0% | htab_map_update_elem, called at state.rs:366"));
        assert!(table.contains("| 25.0% | elsewhere"));
    }
}
