//! `berth test IMAGE CASES_DIR`: a component's datadir tests, run in the cage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use berth::contract::result::EXIT_INTERRUPTED;
use berth::contract::{Component, ErrorClass};
use berth::job::{self, CaseReport, Services, Settings};

use super::{print, status};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The component's image, named as for `pull` (pulled as `berth run` pulls: see --pull)
    pub image: String,
    /// The folder of cases: one folder per case, with source/data/ (config.json, in/),
    /// expected/data/out/, and optionally expected-code, expected-stdout, expected-stderr
    /// (tests/functional in a component's repository)
    pub cases: PathBuf,
    /// Print {"passed": N, "failed": M, "cases": [{"name", "passed", "message"}]} on stdout
    /// instead of a report
    #[arg(long)]
    pub json: bool,
    /// Run only this case (repeat for more)
    #[arg(long = "case", value_name = "NAME")]
    pub only: Vec<String>,
    /// Copy each case's out/ into DIR/<case>/ (DIR/<case>/<step>/ in a chain), e.g. to
    /// make a new case's expected/data/out from it; DIR must be empty or new
    #[arg(long, value_name = "DIR")]
    pub keep_outputs: Option<PathBuf>,
    /// The component's id, which it sees as KBC_COMPONENTID [default: the last part of the
    /// image's repository, e.g. `ex-http` for registry.example.com/acme/ex-http:1.2]
    #[arg(long, value_name = "ID")]
    pub component_id: Option<String>,
    /// The component's network: none (only loopback: tests that reach nothing outside),
    /// bridge or host
    #[arg(long, default_value = "none", value_parser = ["none", "bridge", "host"])]
    pub network: String,
    /// The component's memory limit, as in a component definition (e.g. 512m, 2g)
    #[arg(long, default_value = berth::contract::job::DEFAULT_MEMORY, value_name = "SIZE")]
    pub memory: String,
    /// The longest a case may run, in seconds
    #[arg(long, default_value_t = berth::contract::job::DEFAULT_TIMEOUT_SECS, value_name = "SECONDS")]
    pub timeout: u64,
}

/// Runs the cases and reports them: 0 when every case passed, 1 when one failed or the
/// arguments are wrong, 3 when berth could not run the image at all. The host is prepared
/// as for a run already.
pub(super) fn test(svc: Services<'_>, settings: &Settings, args: &TestArgs) -> ExitCode {
    let component = match component(args) {
        Ok(c) => c,
        Err(message) => {
            print::err(format!("berth: {message}"));
            return status(ErrorClass::User);
        }
    };
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let cases = absolute(&args.cases);
    let keep = args.keep_outputs.as_deref().map(absolute);
    let options = job::TestOptions {
        cases: &cases,
        only: &args.only,
        keep_outputs: keep.as_deref(),
    };
    let json = args.json;
    let mut on_case = |case: &CaseReport| {
        if !json {
            print_case(case);
        }
    };
    match job::datadir_test(svc, settings, &component, &options, &mut on_case) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => {
                        print::out(text);
                    }
                    Err(e) => print::err(format!("berth: cannot print the report: {e}")),
                }
            } else {
                print::out(format!(
                    "{} passed, {} failed",
                    report.passed, report.failed
                ));
            }
            match report.failed {
                0 => ExitCode::SUCCESS,
                _ => status(ErrorClass::User),
            }
        }
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            if berth::interrupt::requested() {
                return ExitCode::from(EXIT_INTERRUPTED);
            }
            status(e.class())
        }
    }
}

/// The component the cases run: the image with the operator's limits.
fn component(args: &TestArgs) -> Result<Component, String> {
    let id = match &args.component_id {
        Some(id) => id.clone(),
        None => default_id(&args.image),
    };
    let definition = serde_json::json!({
        "id": id,
        "image": args.image,
        "network": args.network,
        "memory": args.memory,
        "process_timeout": args.timeout,
    });
    let text = serde_json::to_vec(&definition).map_err(|e| e.to_string())?;
    Component::parse(&text).map_err(|e| format!("component: {e}"))
}

/// The last part of the image's repository, in the letters a component id may have.
fn default_id(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    let repo = last.split(':').next().unwrap_or(last);
    let id: String = repo
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if id.is_empty() {
        "component".to_owned()
    } else {
        id
    }
}

fn print_case(case: &CaseReport) {
    if case.passed {
        print::out(format!("ok   {}", case.name));
        return;
    }
    print::out(format!("FAIL {}", case.name));
    for line in case.message.lines() {
        print::out(format!("     {line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_id_is_the_repositorys_last_part() {
        assert_eq!(
            default_id("registry.example.com/acme/ex-http:1.2"),
            "ex-http"
        );
        assert_eq!(
            default_id("127.0.0.1:5000/conform/python@sha256:ab"),
            "python"
        );
        assert_eq!(default_id("busybox"), "busybox");
        assert_eq!(default_id("oci:/srv/x+y:1"), "xy");
    }
}
