//! A `nat-ctl run` under test: the real binary, started in the router namespace, stopped and
//! cleaned up on drop.

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::{
    lab::{LAN_IF, Lab, WAN_IF},
    wait_for,
};

/// The nat-ctl binary next to the test executables (`cargo xtask test` builds it first).
pub fn nat_ctl_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> or target/debug/<bin>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("nat-ctl");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

/// Runs nat-ctl in a namespace (via nsenter, so bpffs is the host's).
pub fn nat_ctl(ns_path: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={ns_path}"))
        .arg(nat_ctl_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nat-ctl")
}

pub struct NatDaemon {
    child: Option<Child>,
    pub instance: String,
    ns_path: String,
    /// The config file `start_with_config` wrote; removed on drop.
    config: Option<PathBuf>,
}

impl NatDaemon {
    /// Starts `nat-ctl run --detach-on-exit` on the lab's router and waits until `status`
    /// says it runs.
    pub fn start(lab: &Lab, extra: &[&str]) -> Result<NatDaemon> {
        let mut args = vec!["--detach-on-exit"];
        args.extend_from_slice(extra);
        Self::start_instance(lab, &crate::unique("i"), &args)
    }

    /// Starts `nat-ctl run --detach-on-exit --config FILE`, FILE holding `toml`.
    pub fn start_with_config(lab: &Lab, toml: &str) -> Result<NatDaemon> {
        Self::start_with_config_and(lab, toml, &[])
    }

    /// `start_with_config`, with `extra` arguments too.
    pub fn start_with_config_and(lab: &Lab, toml: &str, extra: &[&str]) -> Result<NatDaemon> {
        let path = std::env::temp_dir().join(format!("{}.toml", crate::unique("cfg")));
        std::fs::write(&path, toml)?;
        let config = path.display().to_string();
        let mut args = vec!["--config", config.as_str()];
        args.extend_from_slice(extra);
        let mut d = Self::start(lab, &args);
        match &mut d {
            Ok(d) => d.config = Some(path),
            Err(_) => {
                let _ = std::fs::remove_file(&path);
            }
        }
        d
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The config file the daemon was started with by `start_with_config`.
    pub fn config_path(&self) -> &std::path::Path {
        self.config
            .as_deref()
            .expect("started with start_with_config")
    }

    /// Starts `nat-ctl --instance INSTANCE run ...` with exactly `extra` added.
    pub fn start_instance(lab: &Lab, instance: &str, extra: &[&str]) -> Result<NatDaemon> {
        let instance = instance.to_string();
        let ns_path = lab.router.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::env::temp_dir().join(format!("{instance}.log")))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={ns_path}"))
            .arg(nat_ctl_bin())
            .args([
                "--instance",
                &instance,
                "run",
                "--lan",
                LAN_IF,
                "--wan",
                WAN_IF,
            ])
            // Tests sweep every second unless they say otherwise.
            .args(
                ["--sweep-interval", "1"]
                    .iter()
                    .filter(|_| !extra.contains(&"--sweep-interval")),
            )
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nat-ctl run")?;
        let mut d = NatDaemon {
            child: Some(child),
            instance,
            ns_path,
            config: None,
        };
        let up = wait_for(Duration::from_secs(30), || {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Some(Err(status));
            }
            d.ctl(&["status"]).status.success().then_some(Ok(()))
        });
        match up {
            Some(Ok(())) => Ok(d),
            Some(Err(status)) => bail!("nat-ctl run exited early ({status}): {}", d.log()),
            None => bail!("nat-ctl run did not come up in 30 s: {}", d.log()),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(std::env::temp_dir().join(format!("{}.log", self.instance)))
            .unwrap_or_default()
    }

    /// `nat-ctl --instance I args...` in the router namespace.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["--instance", &self.instance];
        all.extend_from_slice(args);
        nat_ctl(&self.ns_path, &all)
    }

    /// `ctl`, which must succeed: the output, or a panic showing its stderr.
    pub fn ctl_ok(&self, args: &[&str]) -> Output {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "nat-ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.ctl(&all);
        assert!(
            out.status.success(),
            "nat-ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("valid JSON")
    }

    pub fn counter(&self, name: &str) -> u64 {
        let v = self.json(&["stats"]);
        v["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {v}"))
    }

    /// Kills the daemon with SIGKILL: no cleanup at all, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops with SIGTERM (bounded wait, then SIGKILL) and returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
        }
        status.or_else(|| child.wait().ok())
    }
}

impl Drop for NatDaemon {
    fn drop(&mut self) {
        self.stop();
        if let Some(cfg) = self.config.take() {
            let _ = std::fs::remove_file(cfg);
        }
        // Whatever happened, leave no pinned state behind.
        let dir = PathBuf::from("/sys/fs/bpf").join(&self.instance);
        if dir.exists() {
            let _ = self.ctl(&["detach"]);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
