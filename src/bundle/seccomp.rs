//! The seccomp filter: podman's default profile (`data/seccomp.json`, see `data/README.md`),
//! compiled for one container.
//!
//! The profile is a template, not a filter: its rules carry conditions — capabilities the
//! container must have (`includes.caps`) or lack (`excludes.caps`), architectures
//! (`includes.arches`/`excludes.arches`, in Go's names: `amd64`, `arm64`) and a minimum kernel
//! (`includes.minKernel`) — that podman resolves per container. This module does the same and
//! hands libcontainer the plain rule list of the runtime spec: the profile's default action
//! (`ENOSYS` for every syscall it does not name), the host's architecture alone (a call
//! through a 32-bit entry point kills the thread; see `Profile::architectures`), and
//! the kept rules in the profile's order. Order matters: libseccomp keeps the first
//! unconditional rule for a syscall and silently ignores later ones.
//!
//! The profile is parsed once per process; compiling it is a filter over a few dozen rules.
//!
//! berth then tightens the compiled filter where podman leaves it open: a container
//! without `CAP_SYS_ADMIN` may not create namespaces ([`refuse_new_namespaces`]), and no
//! container reaches the host kernel's keyrings or log ([`refuse_host_kernel_state`]).

use std::collections::HashSet;
use std::sync::OnceLock;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

/// The profile every container gets.
const DEFAULT_PROFILE: &str = include_str!("data/seccomp.json");
const DEFAULT_PROFILE_PATH: &str = "src/bundle/data/seccomp.json";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile {name} is not valid")]
    Parse {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("seccomp profile {name}: minKernel {version:?} is not a kernel version")]
    MinKernel { name: String, version: String },
    #[error("the embedded seccomp profile {DEFAULT_PROFILE_PATH} cannot be used")]
    Default(#[source] &'static SeccompError),
    #[error("seccomp rule for {names:?} does not fit the runtime spec")]
    Rule {
        names: Vec<String>,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("seccomp filter does not fit the runtime spec")]
    Spec(#[source] oci_spec::OciSpecError),
}

/// A seccomp profile in the format of containers/common and moby.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    // The profile's `archMap` is not read: berth filters the native architecture alone
    // (see `Profile::architectures`).
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// Older profiles name one syscall per rule.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Condition>,
    #[serde(default)]
    excludes: Option<Condition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<CapName>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// A capability as the profile names it (`CAP_SYS_ADMIN`). One the runtime spec does not
/// know is one no container can hold.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CapName {
    Known(Capability),
    Unknown(#[expect(dead_code, reason = "kept for Debug output only")] String),
}

impl CapName {
    fn held_in(&self, caps: &HashSet<Capability>) -> bool {
        match self {
            CapName::Known(c) => caps.contains(c),
            CapName::Unknown(_) => false,
        }
    }
}

/// A kernel release, major and minor: what `minKernel` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    /// Reads the leading `major.minor` of a release such as `6.1.0-18-amd64` or `4.8`.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts
            .next()
            .map(|m| {
                let digits = m.find(|c: char| !c.is_ascii_digit()).unwrap_or(m.len());
                m[..digits].parse().unwrap_or(0)
            })
            .unwrap_or(0);
        Some(KernelVersion { major, minor })
    }

    /// The running kernel's (uname); 0.0 if it cannot be read, which keeps only the rules
    /// that need no particular kernel.
    pub fn running() -> KernelVersion {
        static RUNNING: OnceLock<KernelVersion> = OnceLock::new();
        *RUNNING.get_or_init(|| {
            nix::sys::utsname::uname()
                .ok()
                .and_then(|u| u.release().to_str().and_then(KernelVersion::parse))
                .unwrap_or(KernelVersion { major: 0, minor: 0 })
        })
    }
}

/// What a profile is compiled for besides the capabilities: an architecture (its libseccomp
/// name and the Go name the profile's `arches` conditions use) and a kernel.
#[derive(Debug, Clone, Copy)]
pub struct Platform {
    pub arch: Option<Arch>,
    pub go_arch: &'static str,
    pub kernel: KernelVersion,
}

impl Platform {
    /// This machine: the architecture berth was built for and the running kernel.
    pub fn host() -> Platform {
        let (arch, go_arch) = host_arch();
        Platform {
            arch,
            go_arch,
            kernel: KernelVersion::running(),
        }
    }
}

fn host_arch() -> (Option<Arch>, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => (Some(Arch::ScmpArchX86_64), "amd64"),
        "x86" => (Some(Arch::ScmpArchX86), "386"),
        "aarch64" => (Some(Arch::ScmpArchAarch64), "arm64"),
        "arm" => (Some(Arch::ScmpArchArm), "arm"),
        "riscv64" => (Some(Arch::ScmpArchRiscv64), "riscv64"),
        "s390x" => (Some(Arch::ScmpArchS390x), "s390x"),
        "powerpc64" if cfg!(target_endian = "little") => (Some(Arch::ScmpArchPpc64le), "ppc64le"),
        "loongarch64" => (Some(Arch::ScmpArchLoongarch64), "loong64"),
        // libseccomp then filters the native architecture alone.
        other => (None, other),
    }
}

impl Profile {
    /// Parses a profile; `name` says which in errors.
    pub fn parse(json: &str, name: &str) -> Result<Profile, SeccompError> {
        let profile: Profile =
            serde_json::from_str(json).map_err(|source| SeccompError::Parse {
                name: name.to_owned(),
                source,
            })?;
        for rule in &profile.syscalls {
            let min = rule.includes.as_ref().and_then(|i| i.min_kernel.as_deref());
            if let Some(version) = min.filter(|v| KernelVersion::parse(v).is_none()) {
                return Err(SeccompError::MinKernel {
                    name: name.to_owned(),
                    version: version.to_owned(),
                });
            }
        }
        Ok(profile)
    }

    /// The filter for a container holding `caps` (its bounding set) on `platform`.
    pub fn compile(
        &self,
        caps: &HashSet<Capability>,
        platform: &Platform,
    ) -> Result<LinuxSeccomp, SeccompError> {
        let syscalls = self
            .syscalls
            .iter()
            .filter(|r| r.applies(caps, platform))
            .map(Rule::to_spec)
            .collect::<Result<Vec<LinuxSyscall>, SeccompError>>()?;
        let mut filter = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .syscalls(syscalls);
        if let Some(errno) = self.default_errno_ret {
            filter = filter.default_errno_ret(errno);
        }
        if let Some(arches) = self.architectures(platform) {
            filter = filter.architectures(arches);
        }
        filter.build().map_err(SeccompError::Spec)
    }

    /// The platform's architecture alone. podman and Docker add the sub-architectures the
    /// profile lists (x86 and x32 on x86_64), so that 32-bit programs run; berth does not:
    /// a system call made through another architecture's entry point (`int 0x80`, the x32
    /// bit) kills the thread instead — a classic way around a filter closed — and the
    /// filter libseccomp compiles at every container start is a third of the size, which
    /// is most of the cage's cost per run (measured: about 17 ms of 25). Components are
    /// 64-bit programs; a 32-bit one cannot run.
    fn architectures(&self, platform: &Platform) -> Option<Vec<Arch>> {
        Some(vec![platform.arch?])
    }
}

impl Rule {
    /// The profile's conditions, as podman applies them.
    fn applies(&self, caps: &HashSet<Capability>, platform: &Platform) -> bool {
        let none = Condition::default();
        let inc = self.includes.as_ref().unwrap_or(&none);
        let exc = self.excludes.as_ref().unwrap_or(&none);
        let min_kernel = inc.min_kernel.as_deref().and_then(KernelVersion::parse);
        inc.caps.iter().all(|c| c.held_in(caps))
            && !exc.caps.iter().any(|c| c.held_in(caps))
            && (inc.arches.is_empty() || inc.arches.iter().any(|a| a == platform.go_arch))
            && !exc.arches.iter().any(|a| a == platform.go_arch)
            && min_kernel.is_none_or(|k| platform.kernel >= k)
    }

    fn to_spec(&self) -> Result<LinuxSyscall, SeccompError> {
        let mut names = self.names.clone();
        names.extend(self.name.iter().cloned());
        let mut rule = LinuxSyscallBuilder::default()
            .names(names.clone())
            .action(self.action);
        if let Some(errno) = self.errno_ret {
            rule = rule.errno_ret(errno);
        }
        if let Some(args) = self.args.as_ref().filter(|a| !a.is_empty()) {
            rule = rule.args(args.clone());
        }
        rule.build()
            .map_err(|source| SeccompError::Rule { names, source })
    }
}

/// The embedded profile, parsed on first use.
fn default_profile() -> Result<&'static Profile, SeccompError> {
    static PROFILE: OnceLock<Result<Profile, SeccompError>> = OnceLock::new();
    PROFILE
        .get_or_init(|| Profile::parse(DEFAULT_PROFILE, DEFAULT_PROFILE_PATH))
        .as_ref()
        .map_err(SeccompError::Default)
}

/// The default filter for a container whose bounding set is `caps`, on this machine.
pub fn default_filter(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, SeccompError> {
    let platform = Platform::host();
    let filter = default_profile()?.compile(caps, &platform)?;
    let filter = refuse_new_namespaces(filter, caps, &platform)?;
    refuse_host_kernel_state(filter, caps)
}

/// The kernel's key management calls: every keyring a container could reach belongs to
/// the host's kernel (keys are not namespaced, only the user keyrings' names are).
const KEYRING_SYSCALLS: [&str; 3] = ["add_key", "keyctl", "request_key"];

/// berth's second tightening: the host kernel's keyrings and its log, which podman's
/// profile opens to every container (`keyctl` and `syslog` unconditionally; `add_key` and
/// `request_key` fall to its ENOSYS default) and Docker's does not.
/// - `keyctl`, `add_key`, `request_key` answer `EPERM`, whatever the capabilities, as in
///   Docker's profile: a component could otherwise read or plant keys that other
///   processes of the same uid on the host use (a berth container's root is a host uid),
///   or fill the host's key quota;
/// - `syslog` answers `EPERM` without `CAP_SYSLOG` (which berth never gives), as in
///   Docker's profile: the kernel's own check depends on the host's `dmesg_restrict`, and
///   the kernel log names the host's devices, addresses and other containers' crashes.
fn refuse_host_kernel_state(
    filter: LinuxSeccomp,
    caps: &HashSet<Capability>,
) -> Result<LinuxSeccomp, SeccompError> {
    let mut refused: Vec<&str> = KEYRING_SYSCALLS.to_vec();
    if !caps.contains(&Capability::Syslog) {
        refused.push("syslog");
    }
    let mut filter = filter;
    let mut syscalls: Vec<LinuxSyscall> = filter.syscalls().clone().unwrap_or_default();
    remove_names(&mut syscalls, &refused, |_| true);
    for name in refused {
        syscalls.push(rule(
            name,
            LinuxSeccompAction::ScmpActErrno,
            Some(EPERM),
            None,
        )?);
    }
    filter.set_syscalls(Some(syscalls));
    Ok(filter)
}

/// The `CLONE_NEW*` flags `clone` takes: mount, cgroup, uts, ipc, user, pid and network
/// namespaces (Docker's mask, 0x7E020000). `CLONE_NEWTIME` has no bit of its own there: it
/// is 0x80, inside the exit signal of `clone`'s flags.
const CLONE_NAMESPACES: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];
/// `CLONE_NEWTIME`, which `unshare` takes besides the others.
const CLONE_NEWTIME: u64 = 0x80;
/// `ENOSYS`: what `clone3` answers, so the C library falls back to `clone`.
const ENOSYS: u32 = 38;
/// `EPERM`: what creating a namespace answers, as the kernel itself would without the
/// capability.
const EPERM: u32 = 1;
const NAMESPACE_SYSCALLS: [&str; 3] = ["clone", "clone3", "unshare"];

/// berth's own tightening of the compiled profile: a container without `CAP_SYS_ADMIN`
/// creates no namespace of any kind, as under Docker's default profile.
///
/// podman's profile allows `clone`, `clone3` and `unshare` with any flags and leaves the
/// rest to the kernel, which lets anyone create a user namespace (measured in a berth
/// container: `unshare -U`, `unshare -r`, `unshare -U -m`, `unshare -U -n` all succeed). A
/// berth container runs as real root, and a nested user namespace hands its creator every
/// capability over the namespaces it owns: mounting filesystems, netfilter and other
/// network configuration, and the rest of the kernel code that trusts such a capability,
/// a large attack surface no data-processing component needs. So, without `CAP_SYS_ADMIN`:
/// - `clone` and `unshare` are allowed only without `CLONE_NEW*` flags, and answer `EPERM`
///   with any of them (one rule per flag: seccomp cannot test "any of these bits");
/// - `clone3`, whose flags sit in memory a filter cannot read, answers `ENOSYS`: the C
///   library then falls back to `clone` for threads and processes.
///
/// The profile's unconditional rules for these syscalls are removed first: libseccomp keeps
/// an unconditional rule over any conditional one.
///
/// libcontainer 0.7 reads a `SCMP_CMP_MASKED_EQ` argument the other way round from runc:
/// `valueTwo` is the mask and `value` the value (runc: `value` is the mask). The "no flag"
/// rule is written for libcontainer; the per-flag rules have mask and value equal, which
/// reads the same either way.
fn refuse_new_namespaces(
    filter: LinuxSeccomp,
    caps: &HashSet<Capability>,
    platform: &Platform,
) -> Result<LinuxSeccomp, SeccompError> {
    if caps.contains(&Capability::SysAdmin) {
        return Ok(filter);
    }
    let mut filter = filter;
    let mut syscalls: Vec<LinuxSyscall> = filter.syscalls().clone().unwrap_or_default();
    remove_names(&mut syscalls, &NAMESPACE_SYSCALLS, |r| {
        r.args().as_ref().is_none_or(Vec::is_empty)
    });
    // The flags are `clone`'s first argument, but its second on s390.
    let clone_index = if platform.go_arch.starts_with("s390") {
        1
    } else {
        0
    };
    syscalls.extend(flag_rules("clone", clone_index, &CLONE_NAMESPACES)?);
    let mut unshare_flags = CLONE_NAMESPACES.to_vec();
    unshare_flags.push(CLONE_NEWTIME);
    syscalls.extend(flag_rules("unshare", 0, &unshare_flags)?);
    let default = (filter.default_action(), filter.default_errno_ret());
    if default != (LinuxSeccompAction::ScmpActErrno, Some(ENOSYS)) {
        syscalls.push(rule(
            "clone3",
            LinuxSeccompAction::ScmpActErrno,
            Some(ENOSYS),
            None,
        )?);
    }
    filter.set_syscalls(Some(syscalls));
    Ok(filter)
}

/// Takes `names` out of every rule `which` selects, and drops the rules left naming none:
/// libseccomp keeps the first unconditional rule for a syscall, so a refusal added after
/// the profile's allow would be ignored.
fn remove_names(
    syscalls: &mut Vec<LinuxSyscall>,
    names: &[&str],
    which: impl Fn(&LinuxSyscall) -> bool,
) {
    for rule in syscalls.iter_mut().filter(|r| which(r)) {
        let kept = rule
            .names()
            .iter()
            .filter(|n| !names.contains(&n.as_str()))
            .cloned()
            .collect();
        rule.set_names(kept);
    }
    syscalls.retain(|r| !r.names().is_empty());
}

/// `syscall` allowed when argument `index` has none of `flags`, refused with `EPERM` when
/// it has any.
fn flag_rules(
    syscall: &str,
    index: usize,
    flags: &[u64],
) -> Result<Vec<LinuxSyscall>, SeccompError> {
    let mask = flags.iter().fold(0, |m, f| m | f);
    let mut rules = vec![rule(
        syscall,
        LinuxSeccompAction::ScmpActAllow,
        None,
        Some(masked_eq(index, mask, 0)?),
    )?];
    for &flag in flags {
        rules.push(rule(
            syscall,
            LinuxSeccompAction::ScmpActErrno,
            Some(EPERM),
            Some(masked_eq(index, flag, flag)?),
        )?);
    }
    Ok(rules)
}

/// `(argument index & mask) == value`, as libcontainer reads it (see
/// [`refuse_new_namespaces`]).
fn masked_eq(index: usize, mask: u64, value: u64) -> Result<LinuxSeccompArg, SeccompError> {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .value_two(mask)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
        .map_err(SeccompError::Spec)
}

fn rule(
    syscall: &str,
    action: LinuxSeccompAction,
    errno: Option<u32>,
    arg: Option<LinuxSeccompArg>,
) -> Result<LinuxSyscall, SeccompError> {
    let mut rule = LinuxSyscallBuilder::default()
        .names(vec![syscall.to_owned()])
        .action(action);
    if let Some(errno) = errno {
        rule = rule.errno_ret(errno);
    }
    if let Some(arg) = arg {
        rule = rule.args(vec![arg]);
    }
    rule.build().map_err(|source| SeccompError::Rule {
        names: vec![syscall.to_owned()],
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD64_6_1: Platform = Platform {
        arch: Some(Arch::ScmpArchX86_64),
        go_arch: "amd64",
        kernel: KernelVersion { major: 6, minor: 1 },
    };

    fn podman_caps() -> HashSet<Capability> {
        super::super::CAPABILITIES.into_iter().collect()
    }

    fn profile() -> &'static Profile {
        default_profile().unwrap()
    }

    /// The actions (with errno) of every kept rule that names `syscall`, in order.
    fn actions_for(filter: &LinuxSeccomp, syscall: &str) -> Vec<(LinuxSeccompAction, Option<u32>)> {
        filter
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == syscall))
            .map(|r| (r.action(), r.errno_ret()))
            .collect()
    }

    #[test]
    fn the_embedded_profile_parses() {
        let p = profile();
        assert_eq!(p.default_action, LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret, Some(38));
        assert_eq!(p.syscalls.len(), 35);
        assert!(p.syscalls[1].names.iter().any(|n| n == "read"));
        let rule = p
            .syscalls
            .iter()
            .find(|r| r.names == ["personality"])
            .unwrap();
        let args = rule.args.as_ref().unwrap();
        assert_eq!((args[0].index(), args[0].value()), (0, 0));
    }

    #[test]
    fn default_action_errno_and_architectures_are_compiled() {
        let f = profile().compile(&podman_caps(), &AMD64_6_1).unwrap();
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(f.default_errno_ret(), Some(38));
        assert_eq!(
            f.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64][..]),
            "the native architecture alone: 32-bit entry points kill"
        );
        let arm = Platform {
            arch: Some(Arch::ScmpArchAarch64),
            go_arch: "arm64",
            ..AMD64_6_1
        };
        let f = profile().compile(&podman_caps(), &arm).unwrap();
        assert_eq!(
            f.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64][..])
        );
        // The compiled filter is what the runtime spec carries: it round-trips as JSON.
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["architectures"][0], "SCMP_ARCH_AARCH64");
    }

    #[test]
    fn rules_follow_the_containers_capabilities() {
        let without = profile().compile(&podman_caps(), &AMD64_6_1).unwrap();
        let eperm = (LinuxSeccompAction::ScmpActErrno, Some(1));
        let allow = (LinuxSeccompAction::ScmpActAllow, None);
        // The CAP_SYS_ADMIN block: refused without the capability, allowed with it.
        for syscall in ["bpf", "perf_event_open", "sethostname", "quotactl"] {
            assert_eq!(actions_for(&without, syscall), vec![eperm], "{syscall}");
        }
        // Held capabilities keep their rule: chroot needs CAP_SYS_CHROOT, which podman gives.
        assert_eq!(actions_for(&without, "chroot"), vec![allow]);
        let mut admin = podman_caps();
        admin.insert(Capability::SysAdmin);
        let with = profile().compile(&admin, &AMD64_6_1).unwrap();
        for syscall in ["bpf", "perf_event_open", "sethostname", "quotactl"] {
            assert_eq!(actions_for(&with, syscall), vec![allow], "{syscall}");
        }
        let mut no_chroot = podman_caps();
        no_chroot.remove(&Capability::SysChroot);
        let f = profile().compile(&no_chroot, &AMD64_6_1).unwrap();
        assert_eq!(actions_for(&f, "chroot"), vec![eperm]);
        // Without CAP_AUDIT_WRITE, audit netlink sockets get EINVAL and other sockets pass.
        let socket = actions_for(&without, "socket");
        assert_eq!(socket[0], (LinuxSeccompAction::ScmpActErrno, Some(22)));
        assert!(socket[1..].iter().all(|a| *a == allow) && socket.len() == 4);
    }

    #[test]
    fn rules_follow_the_architecture_and_the_kernel() {
        let f = profile().compile(&podman_caps(), &AMD64_6_1).unwrap();
        assert_eq!(actions_for(&f, "arch_prctl").len(), 1);
        assert_eq!(actions_for(&f, "modify_ldt").len(), 1);
        assert!(actions_for(&f, "arm_fadvise64_64").is_empty());
        assert!(actions_for(&f, "s390_runtime_instr").is_empty());
        let arm = Platform {
            arch: Some(Arch::ScmpArchAarch64),
            go_arch: "arm64",
            ..AMD64_6_1
        };
        let f = profile().compile(&podman_caps(), &arm).unwrap();
        assert!(actions_for(&f, "arch_prctl").is_empty());
        assert_eq!(actions_for(&f, "arm_fadvise64_64").len(), 1);

        let template = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.10"}},
            {"names": ["not_on_amd64"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}}
        ]}"#;
        let p = Profile::parse(template, "test").unwrap();
        let old = Platform {
            kernel: KernelVersion { major: 5, minor: 4 },
            ..AMD64_6_1
        };
        let f = p.compile(&podman_caps(), &old).unwrap();
        assert!(actions_for(&f, "new_call").is_empty());
        let f = p.compile(&podman_caps(), &AMD64_6_1).unwrap();
        assert_eq!(actions_for(&f, "new_call").len(), 1);
        assert!(actions_for(&f, "not_on_amd64").is_empty());
        // No archMap: the native architecture alone.
        assert_eq!(
            f.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64][..])
        );
        assert_eq!(f.default_errno_ret(), None);
    }

    /// A rule as the tests compare it: action, errno, and each argument's index, value and
    /// valueTwo (every one a masked comparison).
    type RuleView = (
        LinuxSeccompAction,
        Option<u32>,
        Vec<(usize, u64, Option<u64>)>,
    );

    /// Every rule naming `syscall`.
    fn rules_for(filter: &LinuxSeccomp, syscall: &str) -> Vec<RuleView> {
        filter
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == syscall))
            .map(|r| {
                let args = r.args().iter().flatten();
                let args = args
                    .inspect(|a| assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq))
                    .map(|a| (a.index(), a.value(), a.value_two()))
                    .collect();
                (r.action(), r.errno_ret(), args)
            })
            .collect()
    }

    /// The "no flag" rule, then one `EPERM` rule per flag.
    fn expected_flag_rules(index: usize, mask: u64, flags: &[u64]) -> Vec<RuleView> {
        let mut rules = vec![(
            LinuxSeccompAction::ScmpActAllow,
            None,
            vec![(index, 0, Some(mask))],
        )];
        for &f in flags {
            rules.push((
                LinuxSeccompAction::ScmpActErrno,
                Some(1),
                vec![(index, f, Some(f))],
            ));
        }
        rules
    }

    #[test]
    fn namespaces_are_refused_without_sys_admin() {
        let caps = podman_caps();
        let compiled = profile().compile(&caps, &AMD64_6_1).unwrap();
        // podman's profile allows all three outright.
        for syscall in NAMESPACE_SYSCALLS {
            assert_eq!(
                actions_for(&compiled, syscall),
                vec![(LinuxSeccompAction::ScmpActAllow, None)]
            );
        }
        let f = refuse_new_namespaces(compiled.clone(), &caps, &AMD64_6_1).unwrap();
        assert_eq!(
            rules_for(&f, "clone"),
            expected_flag_rules(0, 0x7E02_0000, &CLONE_NAMESPACES)
        );
        let mut unshare = CLONE_NAMESPACES.to_vec();
        unshare.push(0x80);
        assert_eq!(
            rules_for(&f, "unshare"),
            expected_flag_rules(0, 0x7E02_0080, &unshare)
        );
        // clone3 is left to the default action, which answers ENOSYS.
        assert!(rules_for(&f, "clone3").is_empty());
        assert_eq!(
            (f.default_action(), f.default_errno_ret()),
            (LinuxSeccompAction::ScmpActErrno, Some(38))
        );
        // Nothing else changed: the other syscalls of the same unconditional rule stay.
        for syscall in ["read", "fork", "vfork", "setns", "mount"] {
            assert_eq!(
                actions_for(&f, syscall),
                actions_for(&compiled, syscall),
                "{syscall}"
            );
        }
        assert_eq!(f.architectures(), compiled.architectures());
        // The flags are clone's second argument on s390x.
        let s390x = Platform {
            arch: Some(Arch::ScmpArchS390x),
            go_arch: "s390x",
            ..AMD64_6_1
        };
        let f = refuse_new_namespaces(compiled.clone(), &caps, &s390x).unwrap();
        assert_eq!(
            rules_for(&f, "clone"),
            expected_flag_rules(1, 0x7E02_0000, &CLONE_NAMESPACES)
        );
        // With CAP_SYS_ADMIN (which berth never gives) the kernel's checks are enough.
        let mut admin = caps.clone();
        admin.insert(Capability::SysAdmin);
        let with = profile().compile(&admin, &AMD64_6_1).unwrap();
        assert_eq!(
            refuse_new_namespaces(with.clone(), &admin, &AMD64_6_1).unwrap(),
            with
        );
    }

    #[test]
    fn keyrings_and_the_kernel_log_are_refused() {
        let caps = podman_caps();
        let compiled = profile().compile(&caps, &AMD64_6_1).unwrap();
        // podman's profile allows keyctl and syslog outright.
        for syscall in ["keyctl", "syslog"] {
            assert_eq!(
                actions_for(&compiled, syscall),
                vec![(LinuxSeccompAction::ScmpActAllow, None)]
            );
        }
        let f = refuse_host_kernel_state(compiled.clone(), &caps).unwrap();
        let eperm = vec![(LinuxSeccompAction::ScmpActErrno, Some(1))];
        for syscall in ["keyctl", "add_key", "request_key", "syslog"] {
            assert_eq!(actions_for(&f, syscall), eperm, "{syscall}");
        }
        for syscall in ["read", "kill", "ioctl"] {
            assert_eq!(actions_for(&f, syscall), actions_for(&compiled, syscall));
        }
        // The whole filter a container gets.
        let all = default_filter(&caps).unwrap();
        for syscall in ["keyctl", "add_key", "request_key", "syslog"] {
            assert_eq!(actions_for(&all, syscall), eperm, "{syscall}");
        }
        // CAP_SYSLOG (which berth never gives) would open the log, not the keyrings.
        let mut syslog = caps.clone();
        syslog.insert(Capability::Syslog);
        let f = refuse_host_kernel_state(compiled, &syslog).unwrap();
        assert_eq!(
            actions_for(&f, "syslog"),
            vec![(LinuxSeccompAction::ScmpActAllow, None)]
        );
        assert_eq!(actions_for(&f, "keyctl"), eperm);
    }

    #[test]
    fn clone3_gets_enosys_whatever_the_default() {
        let p = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [
                {"names": ["clone3", "read"], "action": "SCMP_ACT_ALLOW"}
            ]}"#,
            "test",
        )
        .unwrap();
        let caps = podman_caps();
        let compiled = p.compile(&caps, &AMD64_6_1).unwrap();
        let f = refuse_new_namespaces(compiled, &caps, &AMD64_6_1).unwrap();
        assert_eq!(
            actions_for(&f, "clone3"),
            vec![(LinuxSeccompAction::ScmpActErrno, Some(38))]
        );
        assert_eq!(
            actions_for(&f, "read"),
            vec![(LinuxSeccompAction::ScmpActAllow, None)]
        );
    }

    #[test]
    fn kernel_versions_parse_and_order() {
        let v = |s| KernelVersion::parse(s).unwrap();
        assert_eq!(
            v("6.18.44-fc-v657"),
            KernelVersion {
                major: 6,
                minor: 18
            }
        );
        assert_eq!(v("4.8"), KernelVersion { major: 4, minor: 8 });
        assert_eq!(v("5"), KernelVersion { major: 5, minor: 0 });
        assert!(v("5.10") > v("5.4") && v("6.0") > v("5.19"));
        assert_eq!(KernelVersion::parse("linux"), None);
        assert!(KernelVersion::running() > v("3.0"));
    }

    #[test]
    fn bad_profiles_are_refused_with_their_name() {
        let e =
            Profile::parse(r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#, "custom.json").unwrap_err();
        assert!(e.to_string().contains("custom.json"), "{e}");
        let e = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["x"],
                "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "new"}}]}"#,
            "custom.json",
        )
        .unwrap_err();
        assert!(matches!(e, SeccompError::MinKernel { .. }), "{e}");
    }

    #[test]
    fn unknown_capabilities_never_match() {
        let p = Profile::parse(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_FUTURE"]}},
                {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_FUTURE"]}},
                {"name": "c", "action": "SCMP_ACT_ALLOW", "args": null}
            ]}"#,
            "test",
        )
        .unwrap();
        let f = p.compile(&podman_caps(), &AMD64_6_1).unwrap();
        assert!(actions_for(&f, "a").is_empty());
        assert_eq!(actions_for(&f, "b").len(), 1);
        assert_eq!(actions_for(&f, "c").len(), 1);
    }
}
