//! Orchestration only: `cargo xtask setup | test | demo | run`.

mod setup;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[derive(Parser)]
#[command(about = "xdp-nat developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent): Debian packages, nightly
    /// rust-src, bpf-linker.
    Setup,
    /// Run every test: host unit tests, BPF_PROG_TEST_RUN fixtures, namespace end-to-end
    /// tests. Needs root.
    Test {
        /// Extra arguments for the test binaries (a name filter, --nocapture, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Three-namespace lab with real traffic through the XDP NAT. Needs root.
    Demo,
    /// Benchmarks (BENCHMARKS.md); `--short` is the quick run CI does. Needs root.
    Bench {
        /// A few thousand packets instead of a million; writes nothing.
        #[arg(long)]
        short: bool,
    },
    /// Build in release mode and run `nat-ctl run` with these arguments, e.g.
    /// `cargo xtask run -- --lan eth1 --wan eth0`. Needs root.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Setup => setup::ensure_all(),
        Task::Test { args } => test(&args),
        Task::Demo => {
            require_root("cargo xtask demo")?;
            setup::ensure_all()?;
            cargo(&["build", "--package", "nat-ctl"])?;
            cargo(&[
                "run",
                "--quiet",
                "--package",
                "integration-tests",
                "--bin",
                "demo",
            ])
        }
        Task::Bench { short } => {
            require_root("cargo xtask bench")?;
            setup::ensure_all()?;
            if !short {
                setup::ensure_profiler()?;
            }
            bench(short)
        }
        Task::Run { args } => {
            require_root("cargo xtask run")?;
            setup::ensure_all()?;
            cargo(&["build", "--release", "--package", "nat-ctl"])?;
            let bin = root.join("target/release/nat-ctl");
            let status = Command::new(&bin)
                .arg("run")
                .args(&args)
                .status()
                .with_context(|| format!("starting {}", bin.display()))?;
            if !status.success() {
                bail!("nat-ctl run exited with {status}");
            }
            Ok(())
        }
    }
}

fn test(args: &[String]) -> Result<()> {
    require_root("cargo xtask test")?;
    setup::ensure_all()?;
    // The house rules first: formatted, and clippy clean with the workspace's lints (the eBPF
    // crate builds only for the BPF target, through nat-ctl's build script, which rustc checks).
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "nat-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The end-to-end tests drive the real binary.
    cargo(&["build", "--package", "nat-ctl"])?;
    let mut cmd = vec![
        "test",
        "--workspace",
        "--exclude",
        "nat-ebpf",
        "--no-fail-fast",
    ];
    if !args.is_empty() {
        cmd.push("--");
        cmd.extend(args.iter().map(String::as_str));
    }
    cargo(&cmd)?;
    // The benchmark runs here too, briefly, so that it cannot rot; slow numbers never fail.
    bench(true)
}

fn bench(short: bool) -> Result<()> {
    // The forwarding benchmark runs the real nat-ctl next to the bench binary. The kernel
    // times the programs, so the short run can reuse the debug build the tests made.
    let profile: &[&str] = if short { &[] } else { &["--release"] };
    let mut build = vec!["build"];
    build.extend_from_slice(profile);
    build.extend_from_slice(&["--package", "nat-ctl"]);
    cargo(&build)?;
    let mut run = vec!["run", "--quiet"];
    run.extend_from_slice(profile);
    run.extend_from_slice(&["--package", "integration-tests", "--bin", "bench", "--"]);
    if short {
        run.push("--short");
    }
    cargo(&run)
}

fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} loads XDP programs and creates network namespaces: run it as root (e.g. `sudo -E {what}`)"
        );
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
