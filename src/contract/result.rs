//! The outcome of a job, as berth reports it: exit status classes and the `--json` document.

use serde::Serialize;

/// The longest message berth reports; longer ones keep their head and tail (contract §7).
pub const MAX_MESSAGE_CHARS: usize = 4000;

/// berth's exit status when the operator interrupts it (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Who is to blame when a job fails. Each class has its own exit status for berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// The job file, the configuration or the component's own work is wrong (component
    /// exit 1, timeout, out of memory, bad job file).
    User,
    /// The component crashed: any exit status other than 0 and 1.
    Application,
    /// berth could not do its part: registry unreachable, image missing or broken, the
    /// host refused an operation, or berth itself failed.
    Internal,
}

impl ErrorClass {
    /// berth's own exit status for this class. 0 is success.
    pub fn exit_status(self) -> u8 {
        match self {
            ErrorClass::User => 1,
            ErrorClass::Application => 2,
            ErrorClass::Internal => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Error,
}

/// The image that ran.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub reference: String,
    pub digest: String,
    /// Blobs and bytes this run fetched from the registry: 0 when the image was stored.
    pub fetched_blobs: usize,
    pub fetched_bytes: u64,
    /// Every image that ran, in order: processors before the component, the component,
    /// processors after it (contract §12), for each row.
    pub stages: Vec<StageSummary>,
}

/// Where an image runs in a row's chain (contract §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// A processor of `processors.before`.
    Before,
    /// The component itself.
    Main,
    /// A processor of `processors.after`.
    After,
}

/// One image that ran.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// The component it is (a processor's own id).
    pub component: String,
    pub position: Position,
    /// The row it ran for, when the configuration has rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<String>,
    pub reference: String,
    pub digest: String,
    /// Its exit status, as `exit_code`.
    pub exit_code: Option<i32>,
    /// What its container used.
    pub usage: Usage,
}

/// What the cgroups measured of a container — or, for a job, of all its containers — and
/// what it left in `/data/out`. A number this host cannot tell is `null` (a controller
/// missing or not delegated, a kernel without the file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// The most memory a container held at once, in bytes (page cache included, as the
    /// memory limit counts it).
    pub peak_memory_bytes: Option<u64>,
    /// CPU seconds in user space and in the kernel.
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    /// The most processes and threads a container had at once.
    pub peak_pids: Option<u64>,
    /// The bytes of the regular files it left in `/data/out` (for a job, all its images').
    pub out_bytes: Option<u64>,
}

impl Usage {
    /// Counts a container that ran after the others: peaks are the highest of them, times
    /// and bytes add up; what none could tell stays unknown.
    pub fn add(&mut self, other: &Usage) {
        fn join<T: Copy>(a: Option<T>, b: Option<T>, f: fn(T, T) -> T) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(f(a, b)),
                (a, b) => a.or(b),
            }
        }
        self.peak_memory_bytes = join(self.peak_memory_bytes, other.peak_memory_bytes, u64::max);
        self.cpu_user_seconds = join(self.cpu_user_seconds, other.cpu_user_seconds, |a, b| a + b);
        self.cpu_system_seconds =
            join(self.cpu_system_seconds, other.cpu_system_seconds, |a, b| {
                a + b
            });
        self.peak_pids = join(self.peak_pids, other.peak_pids, u64::max);
        self.out_bytes = join(self.out_bytes, other.out_bytes, u64::saturating_add);
    }
}

/// What the cage of the job's containers was, where an operator should know it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Cage {
    /// `private`, or `host` when the component opts out of its own user namespace.
    pub user_namespace: crate::contract::UserNamespace,
    /// The host ids the container's 0..65535 are (`START:SIZE`), with a private namespace.
    pub id_range: Option<String>,
    /// The limits this host cannot enforce, in words (empty when it enforces them all).
    pub unenforced: Vec<String>,
    /// How much the component's data folder, `/tmp` and root filesystem may grow.
    pub disk_limit: crate::contract::job::MemoryLimit,
    /// `unconfined` when the component opts out of the seccomp filter.
    #[serde(skip_serializing_if = "crate::contract::Seccomp::is_default")]
    pub seccomp: crate::contract::Seccomp,
    /// berth ran for an unprivileged operator, inside a user namespace of its own.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rootless: bool,
    /// A `bridge` container ran without the fence around the host's addresses, its
    /// attached subnets and link-local space (`--allow-host-access`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_access: bool,
}

/// Wall-clock seconds spent in each phase. `run` covers each row from its data folder to
/// its cleanup; `mapping` is the part of it spent on input and output mapping, plus the
/// final commit to storage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub pull: f64,
    pub unpack: f64,
    pub run: f64,
    pub mapping: f64,
    pub total: f64,
}

/// What the job wrote to storage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutputSummary {
    pub tables: Vec<TableOutput>,
    /// Ids of the files uploaded.
    pub files: Vec<u64>,
    /// Ids of the debug archives stored (`--mode debug`), in the order they were made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub debug_files: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableOutput {
    pub id: String,
    pub rows_loaded: u64,
    /// Rows in the table afterwards.
    pub rows: u64,
}

/// The machine-readable result `berth run --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub job_id: String,
    pub status: Status,
    pub error_class: Option<ErrorClass>,
    pub message: String,
    /// The component's exit status (signal N reported as 128+N); `None` when it never ran.
    pub exit_code: Option<i32>,
    pub image: Option<ImageSummary>,
    /// The cage the containers ran in, once the job got that far.
    pub cage: Option<Cage>,
    /// What the job wrote to storage (nothing when it failed, but `write_always` tables).
    pub outputs: OutputSummary,
    pub timings: Timings,
    /// The job id had committed already (a requeue after its node died after the commit,
    /// or the late commit of a node presumed dead): this run applied nothing, and succeeded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already_committed: bool,
    /// What the job's containers used, once one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The variables replaced in its configuration, with their values (as the original's
    /// job result lists them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
}

/// A variable a job's configuration used, and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Variable {
    pub name: String,
    pub value: String,
}

impl JobResult {
    /// berth's exit status for this result.
    pub fn exit_status(&self) -> u8 {
        self.error_class.map_or(0, ErrorClass::exit_status)
    }
}

/// Shortens a message to `MAX_MESSAGE_CHARS`, keeping its head and tail around ` ... `.
pub fn truncate_message(message: &str) -> String {
    truncate_chars(message, MAX_MESSAGE_CHARS)
}

fn truncate_chars(message: &str, max: usize) -> String {
    let count = message.chars().count();
    if count <= max {
        return message.to_owned();
    }
    let sep = " ... ";
    let keep = max.saturating_sub(sep.len());
    let head = keep / 2;
    let tail = keep - head;
    let head_str: String = message.chars().take(head).collect();
    let tail_str: String = message.chars().skip(count - tail).collect();
    format!("{head_str}{sep}{tail_str}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_are_untouched() {
        assert_eq!(truncate_message("boom"), "boom");
    }

    #[test]
    fn long_messages_keep_head_and_tail() {
        let msg = format!("START{}END", "x".repeat(10_000));
        let t = truncate_message(&msg);
        assert_eq!(t.chars().count(), MAX_MESSAGE_CHARS);
        assert!(t.starts_with("START"));
        assert!(t.ends_with("END"));
        assert!(t.contains(" ... "));
    }

    #[test]
    fn truncation_respects_multibyte_characters() {
        let msg = "ž".repeat(5000);
        let t = truncate_message(&msg);
        assert_eq!(t.chars().count(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn usage_of_containers_keeps_peaks_and_adds_up_times_and_bytes() {
        let mut job = Usage::default();
        job.add(&Usage {
            peak_memory_bytes: Some(100),
            cpu_user_seconds: Some(1.5),
            cpu_system_seconds: None,
            peak_pids: Some(3),
            out_bytes: Some(10),
        });
        job.add(&Usage {
            peak_memory_bytes: Some(50),
            cpu_user_seconds: Some(0.5),
            cpu_system_seconds: Some(0.25),
            peak_pids: Some(7),
            out_bytes: Some(5),
        });
        assert_eq!(
            job,
            Usage {
                peak_memory_bytes: Some(100),
                cpu_user_seconds: Some(2.0),
                cpu_system_seconds: Some(0.25),
                peak_pids: Some(7),
                out_bytes: Some(15),
            }
        );
    }

    #[test]
    fn classes_map_to_exit_statuses() {
        assert_eq!(ErrorClass::User.exit_status(), 1);
        assert_eq!(ErrorClass::Application.exit_status(), 2);
        assert_eq!(ErrorClass::Internal.exit_status(), 3);
    }
}
