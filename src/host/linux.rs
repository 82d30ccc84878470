//! The real kernel.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use std::sync::OnceLock;

use super::mountinfo;
use super::nest::{self, Nest};
use super::{
    CgroupSupport, CgroupUsage, Host, HostError, IdMap, Limits, Network, NetworkGuard, Rootless,
    cgroups, network,
};

#[derive(Debug, Default)]
pub struct LinuxHost {
    /// Finding the controllers means parsing mountinfo several times; they do not change
    /// while berth runs.
    cgroups: OnceLock<CgroupSupport>,
    rootless: Option<Rootless>,
    /// `--cgroup-parent`, checked.
    cgroup_parent: Option<String>,
    /// Where containers' cgroups go, as the host names them.
    nest: OnceLock<Nest>,
    /// The same, as berth names them once [`Host::enter_cgroup_nest`] gave it its view.
    entered: OnceLock<Nest>,
    /// The memory ceiling, read before the view hides the cgroups above the parents.
    ceiling: OnceLock<Option<nest::Ceiling>>,
}

impl LinuxHost {
    pub fn new() -> Self {
        LinuxHost::default()
    }

    /// The host as berth sees it inside the user namespace it made for `rootless`.
    pub fn rootless(rootless: Rootless) -> Self {
        LinuxHost {
            rootless: Some(rootless),
            ..LinuxHost::default()
        }
    }

    /// Containers' cgroups go below `parent` (see [`nest::parse_parent`]) in every hierarchy.
    pub fn with_cgroup_parent(self, parent: Option<String>) -> Self {
        LinuxHost {
            cgroup_parent: parent,
            ..self
        }
    }

    /// The parent at the top of each hierarchy: root's, or a rootless operator's delegated one.
    fn top(&self) -> String {
        match self.rootless {
            Some(r) => format!("/berth-u{}", r.uid),
            None => "/berth".to_owned(),
        }
    }

    fn planned(&self) -> &Nest {
        self.nest.get_or_init(|| {
            let writable =
                |d: &Path| nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok();
            let top = self.top();
            let choice = nest::Choice {
                explicit: self.cgroup_parent.as_deref(),
                top: &top,
                writable,
            };
            let planned = nest::plan(&nest::current(), &choice);
            tracing::debug!(parents = ?planned.parent_dirs(), "containers' cgroups");
            planned
        })
    }

    /// The nest as berth names it now.
    fn local(&self) -> &Nest {
        self.entered.get().unwrap_or_else(|| self.planned())
    }

    /// Creates the parents, makes the v2 leaf, and mounts the view where one is needed;
    /// returns the nest as berth sees it afterwards.
    fn enter(&self) -> Result<Nest, HostError> {
        let planned = self.planned().clone();
        for place in &planned.places {
            let Some(dir) = place.dir() else { continue };
            let h = &place.hierarchy;
            if h.is_v2() && place.parent == h.own {
                // Nested in its own cgroup, which cannot have both processes and children
                // with controllers: berth leaves it for a leaf first.
                nest::leave_for_leaf(h)
                    .map_err(|source| HostError::NestDir { path: dir, source })?;
            } else if let Err(source) = nest::make_dirs(&dir) {
                // Rootless, the top-level parent is root's to make (setup-rootless); its
                // absence is reported with the controllers.
                if self.rootless.is_none() {
                    return Err(HostError::NestDir { path: dir, source });
                }
            }
        }
        if !planned.needs_view() {
            return Ok(planned);
        }
        if self.rootless.is_some() && nest::comounted(&planned) {
            tracing::warn!(
                "containers' cgroups go below {} in every hierarchy: a rootless berth cannot \
                 give itself the view that nests them in its own on a host with comounted \
                 controllers",
                self.top()
            );
            return Ok(planned.at_top(&self.top()));
        }
        for place in &planned.places {
            let Some(dir) = place.dir() else { continue };
            nest::show_at_top(&dir, &place.hierarchy.mount)
                .map_err(|source| HostError::NestDir { path: dir, source })?;
        }
        Ok(planned.viewed())
    }
}

impl Host for LinuxHost {
    fn privileged(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn rootless(&self) -> Option<Rootless> {
        self.rootless
    }

    fn isolate_mounts(&self) -> Result<(), HostError> {
        let err = |e: nix::Error| HostError::IsolateMounts(io::Error::from(e));
        nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(err)?;
        // Without this our mounts would propagate back into the host's namespace through
        // shared peer groups; slave keeps host mounts visible to us but not ours to it.
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(err)
    }

    /// The lower directories are named by `/proc/self/fd/N` of handles opened here: the
    /// mount data is one page (4096 bytes), which absolute store paths (~100 bytes each)
    /// would overflow at a few dozen layers, while 16 bytes a layer fit any image.
    fn mount_overlay(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), HostError> {
        for p in [upper, work] {
            let s = p.as_os_str().as_encoded_bytes();
            if s.contains(&b',') || s.contains(&b':') {
                return Err(HostError::OverlayPath(p.to_owned()));
            }
        }
        let overlay_err = |source: io::Error| HostError::Overlay {
            target: target.to_owned(),
            source,
        };
        let top = lowers
            .first()
            .ok_or_else(|| overlay_err(io::Error::from_raw_os_error(libc::EINVAL)))?;
        // The merged root shows the upper directory's mode and owner: berth's umask made it
        // 0700 and berth owns it, so a container user could not even traverse `/`, and its
        // root (in its own user namespace) could not write there. They must be the image's.
        let root = std::fs::metadata(top).map_err(overlay_err)?;
        std::fs::set_permissions(upper, root.permissions()).map_err(overlay_err)?;
        if self.privileged() {
            use std::os::unix::fs::MetadataExt;
            let (uid, gid) = (root.uid(), root.gid());
            std::os::unix::fs::chown(upper, Some(uid), Some(gid)).map_err(overlay_err)?;
        }
        let handles = lowers
            .iter()
            .map(|l| {
                let flags = rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC;
                rustix::fs::open(l, flags, rustix::fs::Mode::empty())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| overlay_err(e.into()))?;
        let lowerdir: Vec<String> = handles
            .iter()
            .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .collect();
        let mut base = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowerdir.join(":"),
            upper.display(),
            work.display()
        );
        if super::overlay_xattr_prefix().starts_with("user.") {
            base.push_str(",userxattr");
        }
        let mount = |data: &str| {
            nix::mount::mount(
                Some("overlay"),
                target,
                Some("overlay"),
                // Containers run with no_new_privileges, so set-id bits do nothing inside
                // anyway; nosuid keeps it so should that ever change.
                MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                Some(data),
            )
        };
        // The upper directory is thrown away after the job, so nothing is worth an fsync:
        // `volatile` skips them. Kernels without it reject the option; retry plainly.
        mount(&format!("{base},volatile"))
            .or_else(|_| mount(&base))
            .map_err(|e| overlay_err(e.into()))
    }

    fn mount_tmpfs(&self, target: &Path) -> Result<(), HostError> {
        nix::mount::mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            // Search only for others: a container's root is nobody on the host and must pass
            // through to its bundle.
            Some("mode=0711,size=64m"),
        )
        .map_err(|e| HostError::Tmpfs {
            target: target.to_owned(),
            source: e.into(),
        })
    }

    fn unmount(&self, target: &Path) -> Result<(), HostError> {
        match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
            Err(e) => Err(HostError::Unmount {
                target: target.to_owned(),
                source: e.into(),
            }),
        }
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = text
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(mountinfo::unescape)
            .filter(|p| p.starts_with(dir))
            .collect();
        found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        found
    }

    fn loopback_up(&self, pid: i32) -> Result<(), HostError> {
        let err = |source: io::Error| HostError::Loopback { pid, source };
        let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(err)?;
        // setns changes the namespace of the calling thread only; a short-lived thread keeps
        // berth's own threads in the host namespace. It is joined before the container starts,
        // so libcontainer never clones while it exists.
        std::thread::spawn(move || -> io::Result<()> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)?;
            set_interface_up("lo")
        })
        .join()
        .map_err(|_| err(io::Error::other("loopback thread panicked")))?
        .map_err(err)
    }

    fn attach_network(
        &self,
        pid: i32,
        network: Network,
        scratch: &Path,
    ) -> Result<Option<NetworkGuard>, HostError> {
        match network {
            Network::Host => Ok(None),
            Network::Loopback => self.loopback_up(pid).map(|()| None),
            // pasta brings `lo` up too, but berth does not rely on every version doing so.
            Network::Outbound | Network::OutboundToHost => {
                self.loopback_up(pid)?;
                let guard = network::connect(pid, scratch, self.privileged())?;
                if network == Network::Outbound {
                    // Computed now: the host's addresses are what they are when it starts.
                    let addresses = super::fence::host_addresses()
                        .map_err(|source| HostError::Fence { pid, source })?;
                    super::fence::install(pid, &super::fence::fenced(&addresses))?;
                }
                Ok(Some(guard))
            }
        }
    }

    fn oom_first(&self, pid: i32) -> Result<(), HostError> {
        std::fs::write(format!("/proc/{pid}/oom_score_adj"), "1000")
            .map_err(|source| HostError::OomScore { pid, source })
    }

    fn hard_file_size_limit(&self) -> u64 {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE)
            .map_or(u64::MAX, |(_, hard)| hard)
    }

    fn hard_nofile_limit(&self) -> u64 {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(_, hard)| hard)
            .unwrap_or(1024)
    }

    fn cgroups(&self) -> CgroupSupport {
        let discover = || match self.rootless {
            Some(_) => cgroups::delegated(cgroups::discover(), self.local()),
            None => cgroups::discover(),
        };
        self.cgroups.get_or_init(discover).clone()
    }

    fn container_cgroup(&self, id: &str) -> Result<String, HostError> {
        Ok(self.local().cgroups_path(id)?)
    }

    fn cgroup_places(&self) -> Vec<PathBuf> {
        let top = self.top();
        let mut places = self.planned().parent_dirs();
        places.extend(
            self.planned()
                .places
                .iter()
                .filter_map(|p| p.hierarchy.dir(&top)),
        );
        places.sort();
        places.dedup();
        places
    }

    fn enter_cgroup_nest(&self) -> Result<(), HostError> {
        // Read while the cgroups above the parents are still in sight.
        self.memory_ceiling();
        if self.entered.get().is_some() {
            return Ok(());
        }
        let entered = self.enter()?;
        let _ = self.entered.set(entered);
        Ok(())
    }

    fn memory_ceiling(&self) -> Option<nest::Ceiling> {
        self.ceiling
            .get_or_init(|| self.planned().memory_ceiling())
            .clone()
    }

    fn limit_cgroup(&self, path: &str, limits: &Limits) -> Result<(), HostError> {
        let support = self.cgroups();
        if support.rootless {
            cgroups::write_limits(&support, path, limits)?;
        }
        Ok(())
    }

    fn cgroup_children(&self, places: &[PathBuf]) -> Vec<String> {
        cgroups::children(places)
    }

    fn oom_kills(&self, cgroups_path: &str) -> Option<u64> {
        cgroups::oom_kills(&self.cgroups(), cgroups_path)
    }

    fn cgroup_usage(&self, cgroups_path: &str) -> CgroupUsage {
        cgroups::usage(&self.cgroups(), cgroups_path)
    }

    fn subordinate_ids(&self) -> Option<IdMap> {
        if let Some(r) = self.rootless {
            return Some(r.container_ids());
        }
        let uid = nix::unistd::geteuid();
        let name = nix::unistd::User::from_uid(uid).ok().flatten()?.name;
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
        IdMap::from_subordinate(&subuid, &subgid, &name, uid.as_raw())
    }

    fn remove_cgroup(&self, dirs: &[PathBuf]) -> Result<(), HostError> {
        cgroups::remove(dirs)
    }

    fn kill_cgroup(&self, path: &str) -> Result<(), HostError> {
        cgroups::kill_all(path)
    }
}

/// Sets IFF_UP on an interface of the calling thread's network namespace.
fn set_interface_up(name: &str) -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is a plain C struct of integers, arrays and a union of such; the
    // all-zero bit pattern is a valid (empty) value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // JUSTIFICATION: nix has no wrapper for the interface-flag ioctls.
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_ifru.ifru_flags of the ifreq we
    // own, which outlives the call; the socket fd is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the flags member of the union is initialised.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads the ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_refuses_paths_it_cannot_express() {
        let h = LinuxHost::new();
        let e = h
            .mount_overlay(
                &[PathBuf::from("/a,b")],
                Path::new("/u:v"),
                Path::new("/w"),
                Path::new("/t"),
            )
            .unwrap_err();
        assert!(matches!(e, HostError::OverlayPath(_)), "{e}");
    }

    /// 120 layers whose absolute paths together are ~4× the one page of mount data.
    #[test]
    fn an_overlay_stacks_more_layers_than_their_paths_fit_in_a_page() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: mounting needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let long = "l".repeat(100);
        let lowers: Vec<PathBuf> = (0..120)
            .map(|i| {
                let l = d.path().join(format!("{long}{i:03}"));
                std::fs::create_dir(&l).unwrap();
                std::fs::write(l.join(format!("f{i}")), i.to_string()).unwrap();
                l
            })
            .collect();
        let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
        assert!(total > 4096, "{total}");
        let [upper, work, target] = ["u", "w", "t"].map(|n| d.path().join(n));
        for p in [&upper, &work, &target] {
            std::fs::create_dir(p).unwrap();
        }
        let h = LinuxHost::new();
        h.mount_overlay(&lowers, &upper, &work, &target).unwrap();
        let seen = std::fs::read_to_string(target.join("f0"));
        let last = std::fs::read_to_string(target.join("f119"));
        h.unmount(&target).unwrap();
        assert_eq!((seen.unwrap(), last.unwrap()), ("0".into(), "119".into()));
    }
}
