//! Network namespaces owned by a test: created with `ip netns add`, entered per thread with
//! setns(2), deleted on drop (also when the test fails).

use anyhow::{Context as _, Result, bail};
use std::{fs::File, process::Command};

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Netns> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        sh(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs a command inside the namespace (network only: sysfs and bpffs stay the host's).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg(program);
        c
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Result<()> {
        sh(self.cmd(program).args(args))
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.exec("sh", &["-c", &format!("echo {value} > {path}")])
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it opens live there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(self.path()).with_context(|| format!("opening {}", self.path()))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // Only this thread changes namespace.
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns {}", self.name))?;
                Ok(f())
            })
            .join()
            .map_err(|p| anyhow::anyhow!("thread in {} panicked: {p:?}", self.name))?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
