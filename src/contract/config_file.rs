//! What a component reads: `/data/config.json` (contract §2) and its environment (§3).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::job::{Configuration, JobFile};
use super::mapping::DataTypeSupport;

/// Builds the `config.json` the component reads: the configuration without `runtime` and
/// `processors`, with the component's `image_parameters`, the `action`, the four keys
/// every component may rely on (`storage`, `parameters`, `image_parameters`,
/// `authorization`) always present, and the original's defaults on every mapping.
pub fn config_json(
    configuration: &Configuration,
    image_parameters: &Map<String, Value>,
    action: &str,
) -> Value {
    let mut config = match serde_json::to_value(configuration) {
        Ok(Value::Object(map)) => map,
        // Configuration is a struct of maps and options: it always serialises to an object.
        _ => Map::new(),
    };
    config.remove("runtime");
    config.remove("processors");
    if let Some(storage) = config.get_mut("storage") {
        super::mapping_defaults::fill(storage);
    }
    config.insert(
        "image_parameters".to_owned(),
        Value::Object(image_parameters.clone()),
    );
    config.insert("action".to_owned(), Value::String(action.to_owned()));
    for key in ["storage", "parameters", "authorization"] {
        config
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Value::Object(config)
}

/// The stack name a component sees when the operator names none (`KBC_STACKID`).
pub const DEFAULT_STACK_ID: &str = "berth";

/// The feature gate berth always announces: it runs jobs as Keboola's second queue does
/// (the libraries otherwise drop `write_always` from their manifests, for the old queue).
pub const QUEUE_V2: &str = "queuev2";

/// Identity of one run, as the component sees it in its environment.
#[derive(Debug, Clone)]
pub struct RunIdentity<'a> {
    pub job: &'a JobFile,
    /// The configuration (or row) that runs.
    pub config: &'a Configuration,
    pub run_id: &'a str,
    /// The id of the image that runs (processors get their own).
    pub component_id: &'a str,
    pub row_id: Option<&'a str>,
    pub debug: bool,
    /// `KBC_STACKID`; `None` leaves it unset (the libraries then write the current
    /// manifest format).
    pub stack_id: Option<&'a str>,
}

/// The `KBC_*` variables of contract §3, in a stable order.
pub fn environment(id: &RunIdentity<'_>) -> Vec<(String, String)> {
    let job = id.job;
    let mut env = vec![
        ("KBC_RUNID".to_owned(), kbc_run_id(id.run_id)),
        ("KBC_PROJECTID".to_owned(), job.project_id.clone()),
        ("KBC_DATADIR".to_owned(), "/data/".to_owned()),
        ("KBC_CONFIGID".to_owned(), config_id(job)),
        (
            "KBC_CONFIGVERSION".to_owned(),
            job.config_version.clone().unwrap_or_default(),
        ),
        ("KBC_COMPONENTID".to_owned(), id.component_id.to_owned()),
        (
            "KBC_COMPONENT_RUN_MODE".to_owned(),
            if id.debug { "debug" } else { "run" }.to_owned(),
        ),
        ("KBC_PROJECT_FEATURE_GATES".to_owned(), feature_gates(job)),
        // Files are staged on the local disk: none of the original's clouds.
        ("KBC_STAGING_FILE_PROVIDER".to_owned(), "local".to_owned()),
        (
            "KBC_DATA_TYPE_SUPPORT".to_owned(),
            data_type_support(id.config).as_str().to_owned(),
        ),
    ];
    if let Some(stack) = id.stack_id {
        env.push(("KBC_STACKID".to_owned(), stack.to_owned()));
    }
    if let Some(branch) = &job.branch_id {
        env.push(("KBC_BRANCHID".to_owned(), branch.clone()));
    }
    if let Some(row) = id.row_id {
        env.push(("KBC_CONFIGROWID".to_owned(), row.to_owned()));
    }
    env
}

/// `KBC_CONFIGID`: the stored configuration's id, or for an inline configuration, which
/// has none, a hash of its parameters (stable across runs of the same configuration), 40
/// hex digits like the original's SHA-1. Processors get their job's.
pub fn config_id(job: &JobFile) -> String {
    match &job.config_id {
        Some(c) => c.clone(),
        None => {
            let params = serde_json::to_vec(&job.configuration.parameters).unwrap_or_default();
            let mut hex = hex::encode(Sha256::digest(&params));
            hex.truncate(40);
            hex
        }
    }
}

/// `KBC_RUNID`: the original's run ids are decimal numbers; berth's job id (hex) read as
/// one, so the same job always has the same run id. Anything else is passed as it is.
pub fn kbc_run_id(job_id: &str) -> String {
    match u64::from_str_radix(job_id, 16) {
        Ok(n) if !job_id.is_empty() && job_id.len() <= 15 => n.to_string(),
        _ => job_id.to_owned(),
    }
}

/// The project's feature gates, with berth's own first, each once, comma-separated.
fn feature_gates(job: &JobFile) -> String {
    let mut gates = vec![QUEUE_V2];
    for f in &job.project_features {
        if !gates.contains(&f.as_str()) {
            gates.push(f);
        }
    }
    gates.join(",")
}

/// The configuration's `storage.output.data_type_support`, else `none`.
fn data_type_support(config: &Configuration) -> DataTypeSupport {
    config
        .storage
        .as_ref()
        .and_then(|s| s.output.data_type_support)
        .unwrap_or(DataTypeSupport::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> JobFile {
        JobFile::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn config_json_drops_runner_keys_and_fills_defaults() {
        let j = job(
            r#"{"component": {"id": "a.b", "image": "x/y", "image_parameters": {"k": 1}},
                        "configuration": {"parameters": {"greeting": "hi"},
                                          "runtime": {"process_timeout": 5},
                                          "processors": {"before": []}}}"#,
        );
        let c = config_json(&j.configuration, &j.component.image_parameters, "run");
        assert_eq!(
            c,
            serde_json::json!({
                "parameters": {"greeting": "hi"},
                "storage": {},
                "authorization": {},
                "image_parameters": {"k": 1},
                "action": "run"
            })
        );
    }

    #[test]
    fn configuration_cannot_smuggle_its_own_image_parameters() {
        let j = job(r##"{"component": {"id": "a", "image": "x/y"},
                        "configuration": {"image_parameters": {"#secret": "mine"}}}"##);
        let c = config_json(&j.configuration, &j.component.image_parameters, "run");
        assert_eq!(c["image_parameters"], serde_json::json!({}));
    }

    #[test]
    fn environment_has_contract_variables() {
        let j = job(r#"{"component": {"id": "acme.hello", "image": "x/y"}, "config_id": "42"}"#);
        let env = environment(&RunIdentity {
            job: &j,
            config: &j.configuration,
            run_id: "r1",
            component_id: "acme.hello",
            row_id: None,
            debug: false,
            stack_id: None,
        });
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KBC_CONFIGID"), Some("42"));
        assert_eq!(get("KBC_DATADIR"), Some("/data/"));
        assert_eq!(get("KBC_COMPONENTID"), Some("acme.hello"));
        assert_eq!(get("KBC_COMPONENT_RUN_MODE"), Some("run"));
        assert_eq!(get("KBC_CONFIGROWID"), None);
    }

    #[test]
    fn inline_configuration_id_is_a_stable_hash_of_parameters() {
        let a = job(
            r#"{"component": {"id": "a", "image": "x/y"}, "configuration": {"parameters": {"x": 1}}}"#,
        );
        let b = job(
            r#"{"component": {"id": "a", "image": "x/y"}, "configuration": {"parameters": {"x": 2}}}"#,
        );
        let id = |j: &JobFile| {
            environment(&RunIdentity {
                job: j,
                config: &j.configuration,
                run_id: "r",
                component_id: "a",
                row_id: None,
                debug: false,
                stack_id: None,
            })
            .into_iter()
            .find(|(k, _)| k == "KBC_CONFIGID")
            .unwrap()
            .1
        };
        assert_eq!(id(&a), id(&a));
        assert_ne!(id(&a), id(&b));
        assert_eq!(id(&a).len(), 40);
    }

    fn env_of(j: &JobFile, stack: Option<&str>, row: Option<&str>) -> Vec<(String, String)> {
        environment(&RunIdentity {
            job: j,
            config: &j.configuration,
            run_id: "0000000a1b2c",
            component_id: "acme.hello",
            row_id: row,
            debug: false,
            stack_id: stack,
        })
    }

    fn get<'e>(env: &'e [(String, String)], k: &str) -> Option<&'e str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn environment_has_what_component_libraries_read() {
        let j = job(
            r#"{"component": {"id": "acme.hello", "image": "x/y"}, "config_id": "42",
                        "branch_id": "77", "project_features": ["new-native-types", "queuev2"],
                        "configuration": {"storage": {"output": {"data_type_support": "hints"}}}}"#,
        );
        let env = env_of(&j, Some("berth"), Some("r1"));
        assert_eq!(get(&env, "KBC_STACKID"), Some("berth"));
        assert_eq!(get(&env, "KBC_BRANCHID"), Some("77"));
        assert_eq!(
            get(&env, "KBC_PROJECT_FEATURE_GATES"),
            Some("queuev2,new-native-types")
        );
        assert_eq!(get(&env, "KBC_STAGING_FILE_PROVIDER"), Some("local"));
        assert_eq!(get(&env, "KBC_DATA_TYPE_SUPPORT"), Some("hints"));
        assert_eq!(get(&env, "KBC_COMPONENT_RUN_MODE"), Some("run"));
        assert_eq!(get(&env, "KBC_CONFIGROWID"), Some("r1"));
        // The original's run ids are numbers.
        assert_eq!(get(&env, "KBC_RUNID"), Some("662316"));

        let j = job(r#"{"component": {"id": "acme.hello", "image": "x/y"}}"#);
        let env = env_of(&j, None, None);
        assert_eq!(get(&env, "KBC_STACKID"), None);
        assert_eq!(get(&env, "KBC_BRANCHID"), None);
        assert_eq!(get(&env, "KBC_PROJECT_FEATURE_GATES"), Some("queuev2"));
        assert_eq!(get(&env, "KBC_DATA_TYPE_SUPPORT"), Some("none"));
        let config_id = get(&env, "KBC_CONFIGID").unwrap();
        assert!(config_id.len() == 40 && config_id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
