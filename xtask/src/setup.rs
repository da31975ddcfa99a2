//! Idempotent installation of what the build and the tests need, as docs/toolchain.md describes.

use anyhow::{Context as _, Result, bail};
use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Debian packages: command (or a file it installs, by absolute path) -> package.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("nsenter", "util-linux"),
    ("conntrack", "conntrack"),
    ("tracepath", "iputils-tracepath"),
    // The port-forward tests: a real web server on a LAN host, a real client on the WAN.
    ("curl", "curl"),
    ("python3", "python3"),
    // The port-mapping tests' real clients: NAT-PMP (libnatpmp) and UPnP IGD (miniupnpc).
    ("natpmpc", "natpmpc"),
    ("upnpc", "miniupnpc"),
    // strongSwan, the real IKEv2 client and responder of the passthrough tests; its
    // userspace ESP (kernel-libipsec, over TUN), as this kernel has no ESP of its own.
    ("/usr/lib/ipsec/charon", "strongswan-charon"),
    ("swanctl", "strongswan-swanctl"),
    (
        "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so",
        "libcharon-extra-plugins",
    ),
    (
        "/usr/lib/ipsec/plugins/libstrongswan-gcm.so",
        "libstrongswan-standard-plugins",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure_all() -> Result<()> {
    ensure_packages(PACKAGES)?;
    ensure_rust_src()?;
    ensure_lint_tools()?;
    ensure_bpf_linker()
}

fn have(cmd: &str) -> bool {
    if cmd.starts_with('/') {
        return Path::new(cmd).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `perf`, with which the full benchmark profiles a new flow (BENCHMARKS.md). Asked for its
/// version, not just found: Debian's wrapper without the tool is a `perf` too.
pub fn ensure_profiler() -> Result<()> {
    let works = Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        Ok(())
    } else {
        install(&["linux-perf"])
    }
}

/// Installs the packages (command it provides, package) whose command is missing.
fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(c, _)| !have(c))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    install(&missing)
}

/// Installs Debian packages `missing`.
fn install(missing: &[&str]) -> Result<()> {
    if !have("apt-get") {
        bail!("missing packages {missing:?} and no apt-get to install them: install them by hand");
    }
    eprintln!("setup: installing Debian packages {missing:?}");
    run(Command::new("apt-get")
        .arg("update")
        .arg("-q")
        .stdout(Stdio::null()))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null()))
}

/// rustfmt and clippy for the toolchain that builds the workspace (`cargo xtask test`
/// checks formatting and lints first); rustup's default profile has them, a minimal one not.
fn ensure_lint_tools() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    for component in ["rustfmt", "clippy"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            eprintln!("setup: adding {component}");
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

fn ensure_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("setup: installing the nightly toolchain (the eBPF crate needs -Z build-std)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to nightly");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"])).context(
            "`rustup component add rust-src --toolchain nightly` failed: the eBPF build cannot work without it; check that the Rust toolchain server is reachable",
        )?;
    }
    Ok(())
}

/// The directory bpf-linker is built against: it holds `lib/libLLVM.so` (and the soname
/// link) pointing at the Rust toolchain's own LLVM. Outside the repository, so that every
/// clone finds it.
fn llvm_prefix() -> Result<PathBuf> {
    let home = std::env::var("HOME").context("HOME is not set")?;
    Ok(Path::new(&home).join(".local/share/xdp-nat-llvm"))
}

/// The stable toolchain's libLLVM and its major version.
fn toolchain_llvm() -> Result<(PathBuf, u32)> {
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let so = fs::read_dir(&lib)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))?;
    let vv = output(Command::new("rustc").arg("-vV"))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .context("rustc -vV does not report an LLVM version")?;
    Ok((so, major))
}

fn relink(link: &Path, target: &Path) -> Result<()> {
    if fs::read_link(link).ok().as_deref() == Some(target) {
        return Ok(());
    }
    let _ = fs::remove_file(link);
    symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_bpf_linker() -> Result<()> {
    let prefix = llvm_prefix()?;
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)?;
    let (so, major) = toolchain_llvm()?;
    // `libLLVM.so` for the build, the soname itself for the dynamic loader (bpf-linker's
    // RUNPATH is this directory).
    relink(&lib.join("libLLVM.so"), &so)?;
    relink(&lib.join(so.file_name().expect("file name")), &so)?;
    if bpf_linker_works() {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the toolchain's LLVM {major} (about a minute)"
    );
    run(Command::new("cargo")
        .args([
            "install",
            "--force",
            "--locked",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run; see `bpf-linker --version`");
    }
    Ok(())
}
