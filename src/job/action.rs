//! A synchronous action (contract §13): the component's image run once on the
//! configuration with `"action": NAME` in `config.json`, without mapping or state, its
//! stdout the answer.

use serde_json::Value;

use super::{RunOptions, Services, Settings};
use crate::contract::result::Status;
use crate::contract::{ErrorClass, JobFile, JobResult};

/// What an action that printed nothing answers, as the original runner says it.
pub const NO_RESPONSE: &str = "No response from component.";

/// The most an action may print: its answer is held in memory whole.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Runs action `name` of the job's component: its answer (the JSON it printed), or the
/// result of the job that failed (an unlisted action, a failed container, no answer or one
/// that is not JSON are user errors, with the original runner's words). `options` says what
/// a run's would: a `bridge` component reaches the host and its networks only with
/// `allow_host_access`, and gets berth's proxy variables only in `proxy_env`; its `action`
/// is set to `name`, and mapping options (`keep_outputs`, `debug`) are ignored.
pub fn action(
    svc: Services<'_>,
    settings: &Settings,
    job: &JobFile,
    name: &str,
    options: RunOptions,
) -> Result<Value, Box<JobResult>> {
    if name == "run" {
        let message = "\"run\" is not a synchronous action: use `berth run`".to_owned();
        return Err(user_error(refused(), message));
    }
    if !job.component.synchronous_actions.iter().any(|a| a == name) {
        return Err(user_error(
            refused(),
            format!(
                "component {} has no synchronous action {name:?} (its synchronous_actions: {:?})",
                job.component.id, job.component.synchronous_actions
            ),
        ));
    }
    let options = RunOptions {
        action: Some(name.to_owned()),
        allow_host_access: options.allow_host_access,
        proxy_env: options.proxy_env,
        fresh_id: options.fresh_id,
        strict_limits: options.strict_limits,
        ..RunOptions::default()
    };
    let mut stdout = String::new();
    let mut too_long = false;
    let mut on_line = |line: &str| {
        if stdout.len() + line.len() >= MAX_RESPONSE_BYTES {
            too_long = true;
            return;
        }
        stdout.push_str(line);
        stdout.push('\n');
    };
    let result = super::run(svc, settings, job, &options, &mut on_line);
    if result.status == Status::Error {
        return Err(Box::new(result));
    }
    if too_long {
        let message =
            format!("the response of action {name:?} is larger than {MAX_RESPONSE_BYTES} bytes");
        return Err(user_error(result, message));
    }
    answer(&stdout).map_err(|message| user_error(result, message))
}

/// The JSON an action printed.
fn answer(stdout: &str) -> Result<Value, String> {
    if stdout.trim().is_empty() {
        return Err(NO_RESPONSE.to_owned());
    }
    serde_json::from_str(stdout)
        .map_err(|e| format!("Decoding JSON response from component failed: {e}"))
}

/// The result of an action that never started.
fn refused() -> JobResult {
    JobResult {
        job_id: String::new(),
        status: Status::Error,
        error_class: Some(ErrorClass::User),
        message: String::new(),
        exit_code: None,
        image: None,
        cage: None,
        outputs: Default::default(),
        timings: Default::default(),
        already_committed: false,
        usage: None,
        variables: Vec::new(),
    }
}

/// `result` turned into a user error saying `message`.
fn user_error(mut result: JobResult, message: String) -> Box<JobResult> {
    result.status = Status::Error;
    result.error_class = Some(ErrorClass::User);
    result.message = message;
    Box::new(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_must_be_one_json_document() {
        assert_eq!(answer("{\"a\": 1}\n").unwrap(), serde_json::json!({"a": 1}));
        assert_eq!(answer("  \n").unwrap_err(), NO_RESPONSE);
        let e = answer("hello\n").unwrap_err();
        assert!(
            e.starts_with("Decoding JSON response from component failed: "),
            "{e}"
        );
        assert!(answer("{}\n{}\n").is_err());
    }
}
