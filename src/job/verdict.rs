//! How a container's end becomes the job's status (contract §7).

use crate::contract::job::MemoryLimit;
use crate::contract::result::Status;
use crate::contract::{ErrorClass, JobFile, truncate_message};
use crate::host::nest::Ceiling;
use crate::runtime::RunOutcome;

/// How the job ended, when it got to run its containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    pub class: Option<ErrorClass>,
    pub message: String,
}

impl Verdict {
    pub fn success(component_id: &str) -> Verdict {
        Verdict {
            status: Status::Success,
            class: None,
            message: format!("component {component_id} finished"),
        }
    }

    fn error(class: ErrorClass, message: String) -> Verdict {
        Verdict {
            status: Status::Error,
            class: Some(class),
            message,
        }
    }

    pub fn failed(&self) -> bool {
        self.status == Status::Error
    }
}

/// The memory limit the component's cgroup gets: its own, or the lower one of a cgroup
/// above it (a Slurm job's `--mem`, a systemd unit's `MemoryMax`), which would strike first.
pub fn memory_limit(job: &JobFile, ceiling: Option<&Ceiling>) -> MemoryLimit {
    let own = job.component.memory.0;
    MemoryLimit(ceiling.map_or(own, |c| c.bytes.min(own)))
}

/// The limit as an OOM message names it, with where it came from when it is not the
/// component's own.
fn limit_words(job: &JobFile, ceiling: Option<&Ceiling>) -> String {
    let limit = memory_limit(job, ceiling);
    match ceiling.filter(|c| c.bytes < job.component.memory.0) {
        Some(c) => format!(
            "limit {limit}, lowered from the component's {} by cgroup {}",
            job.component.memory, c.cgroup
        ),
        None => format!("limit {limit}"),
    }
}

/// Turns how the container ended into the job's status. `ceiling`: a memory limit above
/// the component's cgroup (see [`memory_limit`]).
pub fn classify(job: &JobFile, run: &RunOutcome, ceiling: Option<&Ceiling>) -> Verdict {
    let id = &job.component.id;
    let code = run.status.code();
    if run.interrupted {
        return Verdict::error(ErrorClass::Internal, "interrupted by the operator".into());
    }
    if run.timed_out {
        let secs = job.main_timeout_secs();
        let message = format!("component {id} exceeded the timeout of {secs} seconds");
        return Verdict::error(ErrorClass::User, message);
    }
    if let Some(over) = run.disk_exceeded {
        let cap = job.component.disk;
        let message = if over.too_deep {
            format!(
                "component {id} nested directories deeper than {} levels, past what berth \
                 measures of its disk limit of {cap}",
                crate::confined::MAX_USAGE_DEPTH
            )
        } else {
            format!(
                "component {id} wrote more than its disk limit of {cap} (/data, /tmp and its \
                 root filesystem together): {}",
                binary_size(over.written)
            )
        };
        return Verdict::error(ErrorClass::User, message);
    }
    if code != 0 && run.oom_killed {
        let limit = limit_words(job, ceiling);
        let message = format!("component {id} ran out of memory ({limit})");
        return Verdict::error(ErrorClass::User, message);
    }
    // SIGKILL from nobody berth knows of: where the cgroup cannot say, the original
    // runner's reading (the OOM killer) is the likely one.
    if code == 137 && !run.oom_known {
        let limit = limit_words(job, ceiling);
        let message = format!(
            "component {id} was killed (exit 137), most likely out of memory ({limit}); \
             this host has no memory cgroup to tell"
        );
        return Verdict::error(ErrorClass::User, message);
    }
    match code {
        0 => {
            if !run.stderr.trim().is_empty() {
                tracing::warn!(
                    "component {id} wrote to stderr: {}",
                    truncate_message(run.stderr.trim())
                );
            }
            Verdict::success(id)
        }
        1 => Verdict::error(ErrorClass::User, error_output(run)),
        _ => Verdict::error(
            ErrorClass::Application,
            format!(
                "component {id} failed with exit code {code}: {}",
                error_output(run)
            ),
        ),
    }
}

/// A size in the binary units limits are written in (as Docker reads them), to one
/// decimal: `41.9m` is 41.9 MiB.
fn binary_size(bytes: u64) -> String {
    #[expect(
        clippy::cast_precision_loss,
        reason = "a size shown to one decimal of its unit"
    )]
    let b = bytes as f64;
    match bytes {
        0..0x10_0000 => format!("{:.1}k", b / 1024.0),
        0x10_0000..0x4000_0000 => format!("{:.1}m", b / f64::from(1 << 20)),
        _ => format!("{:.1}g", b / f64::from(1 << 30)),
    }
}

/// What the component said about its failure: stderr, else stdout, else a placeholder.
fn error_output(run: &RunOutcome) -> String {
    let stderr = run.stderr.trim();
    let stdout = run.stdout_tail.trim();
    if !stderr.is_empty() {
        stderr.to_owned()
    } else if !stdout.is_empty() {
        stdout.to_owned()
    } else {
        "No error message.".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ExitStatus;

    fn job() -> JobFile {
        JobFile::parse(
            br#"{"component": {"id": "acme.hello", "image": "x/y", "process_timeout": 7}}"#,
        )
        .unwrap()
    }

    fn outcome(status: ExitStatus) -> RunOutcome {
        RunOutcome {
            status,
            timed_out: false,
            oom_killed: false,
            oom_known: true,
            interrupted: false,
            disk_exceeded: None,
            stdout_tail: String::new(),
            stderr: String::new(),
            usage: crate::host::CgroupUsage::default(),
        }
    }

    fn parts(v: Verdict) -> (Status, Option<ErrorClass>, String) {
        (v.status, v.class, v.message)
    }

    #[test]
    fn exit_codes_map_to_classes() {
        let j = job();
        assert_eq!(
            classify(&j, &outcome(ExitStatus::Code(0)), None).status,
            Status::Success
        );
        let mut o = outcome(ExitStatus::Code(1));
        o.stdout_tail = "bad config".to_owned();
        assert_eq!(
            parts(classify(&j, &o, None)),
            (
                Status::Error,
                Some(ErrorClass::User),
                "bad config".to_owned()
            )
        );
        o.stderr = "real reason\n".to_owned();
        assert_eq!(classify(&j, &o, None).message, "real reason");
        assert_eq!(
            classify(&j, &outcome(ExitStatus::Code(1)), None).message,
            "No error message."
        );
        let (_, class, msg) = parts(classify(&j, &outcome(ExitStatus::Code(3)), None));
        assert_eq!(class, Some(ErrorClass::Application));
        assert!(msg.contains("exit code 3"), "{msg}");
        let (_, class, msg) = parts(classify(&j, &outcome(ExitStatus::Signal(11)), None));
        assert_eq!(class, Some(ErrorClass::Application));
        assert!(msg.contains("exit code 139"), "{msg}");
    }

    #[test]
    fn a_component_past_its_disk_limit_is_a_user_error_naming_it() {
        let j = JobFile::parse(
            br#"{"component": {"id": "acme.hello", "image": "x/y", "disk": "50m"}}"#,
        )
        .unwrap();
        let mut o = outcome(ExitStatus::Signal(9));
        o.disk_exceeded = Some(crate::runtime::DiskExceeded {
            written: 51 << 20,
            too_deep: false,
        });
        let (_, class, msg) = parts(classify(&j, &o, None));
        assert_eq!(class, Some(ErrorClass::User));
        assert_eq!(
            msg,
            "component acme.hello wrote more than its disk limit of 50m (/data, /tmp and its \
             root filesystem together): 51.0m"
        );
        // Also when it exited on its own, having written too much just before.
        o.status = ExitStatus::Code(0);
        assert_eq!(classify(&j, &o, None).class, Some(ErrorClass::User));
        o.disk_exceeded = Some(crate::runtime::DiskExceeded {
            written: 0,
            too_deep: true,
        });
        assert!(
            classify(&j, &o, None)
                .message
                .contains("deeper than 256 levels")
        );
    }

    #[test]
    fn timeout_and_oom_are_user_errors() {
        let j = job();
        let mut o = outcome(ExitStatus::Signal(9));
        o.timed_out = true;
        let (_, class, msg) = parts(classify(&j, &o, None));
        assert_eq!(class, Some(ErrorClass::User));
        assert_eq!(
            msg,
            "component acme.hello exceeded the timeout of 7 seconds"
        );
        let mut o = outcome(ExitStatus::Signal(9));
        o.oom_killed = true;
        let (_, class, msg) = parts(classify(&j, &o, None));
        assert_eq!(class, Some(ErrorClass::User));
        assert_eq!(msg, "component acme.hello ran out of memory (limit 256m)");
        // Exit 137 the cgroup explains otherwise is the component's own failure; where no
        // cgroup can say, it reads as out of memory, as in the original runner.
        let o = outcome(ExitStatus::Signal(9));
        assert_eq!(classify(&j, &o, None).class, Some(ErrorClass::Application));
        let mut o = outcome(ExitStatus::Code(137));
        o.oom_known = false;
        let (_, class, msg) = parts(classify(&j, &o, None));
        assert_eq!(class, Some(ErrorClass::User));
        assert!(
            msg.contains("most likely out of memory (limit 256m)"),
            "{msg}"
        );
    }

    #[test]
    fn an_oom_under_a_lower_parent_limit_names_the_effective_limit() {
        let j = job();
        let ceiling = Ceiling {
            bytes: 100 << 20,
            cgroup: "/slurm_n1/uid_0/job_7".into(),
        };
        assert_eq!(memory_limit(&j, Some(&ceiling)), MemoryLimit(100 << 20));
        let mut o = outcome(ExitStatus::Signal(9));
        o.oom_killed = true;
        let (_, class, msg) = parts(classify(&j, &o, Some(&ceiling)));
        assert_eq!(class, Some(ErrorClass::User));
        assert_eq!(
            msg,
            "component acme.hello ran out of memory (limit 100m, lowered from the \
             component's 256m by cgroup /slurm_n1/uid_0/job_7)"
        );
        // A higher limit above changes nothing.
        let high = Ceiling {
            bytes: 1_000_000_000,
            cgroup: "/x".into(),
        };
        assert_eq!(memory_limit(&j, Some(&high)), MemoryLimit(256 << 20));
        let (_, _, msg) = parts(classify(&j, &o, Some(&high)));
        assert_eq!(msg, "component acme.hello ran out of memory (limit 256m)");
    }
}
