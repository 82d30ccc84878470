//! A recording stand-in for the kernel, for tests of error paths and of everything that
//! must run without root.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{CgroupSupport, Host, HostError, IdMap, Network, NetworkGuard, network};

/// Records every call; `refuse_overlay` makes overlay mounts fail like a kernel without
/// overlayfs would; `privileged` is what [`Host::privileged`] answers; `pasta_missing`
/// makes outbound networks fail like a host without pasta.
#[derive(Debug, Default)]
pub struct FakeHost {
    pub refuse_overlay: bool,
    pub privileged: bool,
    pub pasta_missing: bool,
    /// A host without cgroup controllers: no limit can be enforced.
    pub no_cgroups: bool,
    /// A cgroup v2 (unified) host with every controller.
    pub cgroup_v2: bool,
    /// Plays a rootless berth inside its user namespace.
    pub rootless: Option<super::Rootless>,
    /// A memory limit above containers' cgroups, as a Slurm job's would be.
    pub memory_ceiling: Option<super::nest::Ceiling>,
    pub calls: Mutex<Vec<String>>,
    pub mounted: Mutex<Vec<PathBuf>>,
    /// What each listing of cgroups answers (none without it).
    pub cgroup_listing: CgroupListing,
}

/// Answers a listing of cgroups, and may change the world first (a test lets a job appear
/// between two steps of a sweep this way).
#[derive(Default)]
pub struct CgroupListing(pub Mutex<Option<ListCgroups>>);

/// See [`CgroupListing`].
pub type ListCgroups = Box<dyn FnMut() -> Vec<String> + Send>;

impl std::fmt::Debug for CgroupListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CgroupListing")
    }
}

impl FakeHost {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// What is mounted now: mounted and not unmounted since.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.mounted.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn set_mounted(&self, target: &Path, on: bool) {
        if let Ok(mut m) = self.mounted.lock() {
            m.retain(|t| t != target);
            if on {
                m.push(target.to_owned());
            }
        }
    }

    fn record(&self, call: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }
}

impl Host for FakeHost {
    fn privileged(&self) -> bool {
        self.privileged
    }

    fn rootless(&self) -> Option<super::Rootless> {
        self.rootless
    }

    fn isolate_mounts(&self) -> Result<(), HostError> {
        self.record("isolate_mounts".to_owned());
        Ok(())
    }

    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> Result<(), HostError> {
        let lowers: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        self.record(format!(
            "mount_overlay {} {}",
            lowers.join(":"),
            target.display()
        ));
        if self.refuse_overlay {
            return Err(HostError::Overlay {
                target: target.to_owned(),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
            });
        }
        self.set_mounted(target, true);
        Ok(())
    }

    fn mount_tmpfs(&self, target: &Path) -> Result<(), HostError> {
        self.record(format!("mount_tmpfs {}", target.display()));
        self.set_mounted(target, true);
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), HostError> {
        self.record(format!("unmount {}", target.display()));
        self.set_mounted(target, false);
        Ok(())
    }

    fn mounts_under(&self, _dir: &Path) -> Vec<PathBuf> {
        Vec::new()
    }

    fn loopback_up(&self, pid: i32) -> Result<(), HostError> {
        self.record(format!("loopback_up {pid}"));
        Ok(())
    }

    fn attach_network(
        &self,
        pid: i32,
        network: Network,
        scratch: &Path,
    ) -> Result<Option<NetworkGuard>, HostError> {
        self.record(format!(
            "attach_network {pid} {network:?} {}",
            scratch.display()
        ));
        if self.pasta_missing && network.outbound() {
            return Err(network::pasta_missing(None));
        }
        Ok(None)
    }

    fn limit_cgroup(&self, path: &str, _limits: &super::Limits) -> Result<(), HostError> {
        self.record(format!("limit_cgroup {path}"));
        Ok(())
    }

    fn oom_first(&self, pid: i32) -> Result<(), HostError> {
        self.record(format!("oom_first {pid}"));
        Ok(())
    }

    fn hard_nofile_limit(&self) -> u64 {
        4096
    }

    fn hard_file_size_limit(&self) -> u64 {
        u64::MAX
    }

    fn cgroups(&self) -> CgroupSupport {
        if self.no_cgroups {
            return CgroupSupport::default();
        }
        if self.cgroup_v2 {
            return CgroupSupport {
                memory: Some(PathBuf::from("/sys/fs/cgroup")),
                memory_v2: true,
                unified: true,
                pids: true,
                cpu: true,
                ..CgroupSupport::default()
            };
        }
        CgroupSupport {
            memory: Some(PathBuf::from("/sys/fs/cgroup/memory")),
            memory_v2: false,
            pids: true,
            cpu: true,
            v1_mounts: vec![PathBuf::from("/sys/fs/cgroup/memory")],
            ..CgroupSupport::default()
        }
    }

    fn oom_kills(&self, _cgroups_path: &str) -> Option<u64> {
        Some(0)
    }

    fn cgroup_usage(&self, _cgroups_path: &str) -> super::CgroupUsage {
        super::CgroupUsage::default()
    }

    fn cgroup_children(&self, _places: &[PathBuf]) -> Vec<String> {
        let mut listing = self
            .cgroup_listing
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        listing.as_mut().map(|list| list()).unwrap_or_default()
    }

    fn container_cgroup(&self, id: &str) -> Result<String, HostError> {
        let nest = super::nest::Nest::default();
        let path = nest.cgroups_path(id)?;
        self.record(format!("container_cgroup {path}"));
        Ok(path)
    }

    fn cgroup_places(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    fn enter_cgroup_nest(&self) -> Result<(), HostError> {
        self.record("enter_cgroup_nest".to_owned());
        Ok(())
    }

    fn memory_ceiling(&self) -> Option<super::nest::Ceiling> {
        self.memory_ceiling.clone()
    }

    fn subordinate_ids(&self) -> Option<IdMap> {
        None
    }

    fn kill_cgroup(&self, path: &str) -> Result<(), HostError> {
        self.record(format!("kill_cgroup {path}"));
        Ok(())
    }

    fn remove_cgroup(&self, dirs: &[PathBuf]) -> Result<(), HostError> {
        for d in dirs {
            self.record(format!("remove_cgroup {}", d.display()));
        }
        Ok(())
    }
}
