//! Where an instance lives: its pinned maps and links on bpffs, and the daemon's lock file.

use anyhow::{Context as _, Result};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use std::{
    fs,
    path::{Path, PathBuf},
};

/// Why an instance cannot be used as asked: each says what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("invalid instance name {0:?}: use 1-64 letters, digits, '-' or '_'")]
    InvalidName(String),
    #[error(
        "no xdp-nat instance '{name}' on this host (nothing pinned under {dir}); start one with `nat-ctl run --lan IF --wan IF`"
    )]
    NotFound { name: String, dir: String },
    #[error(
        "the pinned maps use layout version {pinned} but this nat-ctl uses {ours}; run `nat-ctl detach` with the old version (this drops its sessions) and start again"
    )]
    LayoutMismatch { pinned: u32, ours: u32 },
    #[error(
        "instance '{name}' is already run by pid {pid} (stop it first, or use --instance NAME)"
    )]
    AlreadyRunning { name: String, pid: String },
    #[error("{path} is held by another process for more than {waited:?}; nothing changed")]
    ConfigLocked {
        path: String,
        waited: std::time::Duration,
    },
}

pub const BPFFS: &str = "/sys/fs/bpf";
pub const RUN_DIR: &str = "/run/xdp-nat";
pub const DEFAULT_INSTANCE: &str = "xdp-nat";
/// An instance's pinned bpf_links: the XDP program on each side, and the WAN egress guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    Lan,
    Wan,
    WanEgress,
}

impl Link {
    /// As the pin's file name and the log say it.
    pub const fn name(self) -> &'static str {
        match self {
            Link::Lan => "lan",
            Link::Wan => "wan",
            Link::WanEgress => "wan_egress",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Instance {
    pub name: String,
}

impl Instance {
    pub fn new(name: &str) -> Result<Instance> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(InstanceError::InvalidName(name.to_string()).into());
        }
        Ok(Instance {
            name: name.to_string(),
        })
    }

    pub fn dir(&self) -> PathBuf {
        Path::new(BPFFS).join(&self.name)
    }

    pub fn map_path(&self, map: &str) -> PathBuf {
        self.dir().join(map)
    }

    /// Where `link` is pinned.
    pub fn link_path(&self, link: Link) -> PathBuf {
        self.dir().join(format!("link_{}", link.name()))
    }

    pub fn lock_path(&self) -> PathBuf {
        Path::new(RUN_DIR).join(format!("{}.pid", self.name))
    }

    /// Serialises changes of the CONFIG map: the daemon (start, reload, route changes) and the
    /// commands beside it (flush, passthrough) each read it, change a field and write it
    /// back, and without the lock one could write back what the other just replaced.
    pub fn config_lock_path(&self) -> PathBuf {
        Path::new(RUN_DIR).join(format!("{}.config.lock", self.name))
    }

    /// What the running daemon was started with, for `nat-ctl reload`.
    pub fn run_state_path(&self) -> PathBuf {
        Path::new(RUN_DIR).join(format!("{}.json", self.name))
    }

    pub fn run_state(&self) -> Option<RunState> {
        serde_json::from_str(&fs::read_to_string(self.run_state_path()).ok()?).ok()
    }

    /// Does pinned state (at least the CONFIG map) exist?
    pub fn exists(&self) -> bool {
        self.map_path(nat_common::maps::names::CONFIG).exists()
    }

    /// Removes every pin of the instance (maps and links). Programs detach when their
    /// last link reference goes.
    pub fn remove_pins(&self) -> Result<()> {
        let dir = self.dir();
        if !dir.exists() {
            return Ok(());
        }
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = entry?.path();
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        let _ = fs::remove_file(self.config_lock_path());
        fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))
    }

    /// Pid of the daemon that holds the instance lock, if one is alive and has finished
    /// starting (it writes its pid only once the programs are attached).
    pub fn daemon_pid(&self) -> Option<u32> {
        let file = fs::File::open(self.lock_path()).ok()?;
        // A shared lock only probes (and is let go at once): it is refused while a daemon
        // holds its exclusive one.
        if Flock::lock(file, FlockArg::LockSharedNonblock).is_ok() {
            return None;
        }
        fs::read_to_string(self.lock_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// RUN_DIR, made (or made again) accessible to root only: the daemon's pid file and the
/// CONFIG lock live there, and another user who could open them could hold their locks and
/// keep the daemon from starting or from changing its configuration.
pub fn run_dir() -> Result<&'static Path> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let dir = Path::new(RUN_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {RUN_DIR}"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {RUN_DIR} to root"))?;
    Ok(dir)
}

/// How long a CONFIG change waits for another one in progress before it gives up.
pub const CONFIG_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the exclusive lock at `path` (see Instance::config_lock_path), waiting up to
/// CONFIG_LOCK_WAIT for whoever holds it; it is released when the lock is dropped.
pub fn lock_file(path: &Path) -> Result<Flock<fs::File>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    run_dir()?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = std::time::Instant::now() + CONFIG_LOCK_WAIT;
    // Non-blocking, tried until the deadline.
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, e)) if e != Errno::EWOULDBLOCK => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
            Err((unlocked, _)) => file = unlocked,
        }
        if std::time::Instant::now() > deadline {
            return Err(InstanceError::ConfigLocked {
                path: path.display().to_string(),
                waited: CONFIG_LOCK_WAIT,
            }
            .into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The daemon's command line as reload needs it, and how many reloads it applied.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    pub pid: u32,
    pub config: Option<PathBuf>,
    pub lan: Option<String>,
    pub wan: Option<String>,
    pub wan_addr: Option<std::net::Ipv4Addr>,
    pub log_level: Option<crate::config::LogLevel>,
    pub reloads: u64,
    /// Reloads the daemon could not apply, and why the last one failed.
    #[serde(default)]
    pub reload_failures: u64,
    #[serde(default)]
    pub reload_error: Option<String>,
}

impl RunState {
    pub fn write(&self, instance: &Instance) -> Result<()> {
        let path = instance.run_state_path();
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

/// Held by a running daemon for its whole life; the kernel drops it when the process dies,
/// even by SIGKILL.
pub struct DaemonLock {
    file: Flock<fs::File>,
    path: PathBuf,
}

impl Drop for DaemonLock {
    /// A daemon that ends leaves no pid file behind (removed while it still holds the lock,
    /// so no other daemon's file is taken). After SIGKILL, `nat-ctl detach` removes it.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl DaemonLock {
    pub fn acquire(instance: &Instance) -> Result<DaemonLock> {
        run_dir()?;
        let path = instance.lock_path();
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let Ok(file) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            let pid = fs::read_to_string(&path).unwrap_or_default();
            return Err(InstanceError::AlreadyRunning {
                name: instance.name.clone(),
                pid: pid.trim().to_string(),
            }
            .into());
        };
        file.set_len(0)?;
        Ok(DaemonLock { file, path })
    }

    /// Publishes the daemon's pid: from now on `status` reports it as running.
    pub fn ready(&mut self) -> Result<()> {
        use std::io::Write as _;
        writeln!(self.file, "{}", std::process::id())?;
        Ok(())
    }
}

/// Mounts bpffs on /sys/fs/bpf when nothing is mounted there.
pub fn ensure_bpffs() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(BPFFS) && l.contains(" bpf "))
    {
        return Ok(());
    }
    fs::create_dir_all(BPFFS).ok();
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting bpffs on {BPFFS} (are you root?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names() {
        assert!(Instance::new("xdp-nat").is_ok());
        assert!(Instance::new("a_b-9").is_ok());
        for bad in ["../etc", "", &"x".repeat(65)] {
            let e = Instance::new(bad).unwrap_err();
            assert!(
                matches!(e.downcast_ref(), Some(InstanceError::InvalidName(n)) if n == bad),
                "{e}"
            );
        }
        let i = Instance::new("t1").unwrap();
        assert_eq!(
            i.map_path("SESSIONS"),
            PathBuf::from("/sys/fs/bpf/t1/SESSIONS")
        );
        assert_eq!(
            i.link_path(Link::Lan),
            PathBuf::from("/sys/fs/bpf/t1/link_lan")
        );
    }
}
