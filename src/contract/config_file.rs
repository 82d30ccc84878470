//! What a component reads: `/data/config.json` (contract §2) and its environment (§3).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::job::{Configuration, JobFile};

/// Builds the `config.json` the component reads: the configuration without `runtime` and
/// `processors`, with the component's `image_parameters`, the `action`, and the four keys
/// every component may rely on (`storage`, `parameters`, `image_parameters`,
/// `authorization`) always present.
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

/// Identity of one run, as the component sees it in its environment.
#[derive(Debug, Clone)]
pub struct RunIdentity<'a> {
    pub job: &'a JobFile,
    pub run_id: &'a str,
    /// The id of the image that runs (processors get their own).
    pub component_id: &'a str,
    pub row_id: Option<&'a str>,
    pub debug: bool,
}

/// The `KBC_*` variables of contract §3, in a stable order.
pub fn environment(id: &RunIdentity<'_>) -> Vec<(String, String)> {
    let job = id.job;
    let config_id = match &job.config_id {
        Some(c) => c.clone(),
        // An inline configuration has no id; a hash of its parameters keeps the value stable
        // across runs of the same configuration, as the original runner does.
        None => {
            let params = serde_json::to_vec(&job.configuration.parameters).unwrap_or_default();
            let digest = Sha256::digest(&params);
            hex::encode(digest)
        }
    };
    let mut env = vec![
        ("KBC_RUNID".to_owned(), id.run_id.to_owned()),
        ("KBC_PROJECTID".to_owned(), job.project_id.clone()),
        ("KBC_DATADIR".to_owned(), "/data/".to_owned()),
        ("KBC_CONFIGID".to_owned(), config_id),
        (
            "KBC_CONFIGVERSION".to_owned(),
            job.config_version.clone().unwrap_or_default(),
        ),
        ("KBC_COMPONENTID".to_owned(), id.component_id.to_owned()),
        (
            "KBC_COMPONENT_RUN_MODE".to_owned(),
            if id.debug { "debug" } else { "run" }.to_owned(),
        ),
    ];
    if let Some(row) = id.row_id {
        env.push(("KBC_CONFIGROWID".to_owned(), row.to_owned()));
    }
    env
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
            run_id: "r1",
            component_id: "acme.hello",
            row_id: None,
            debug: false,
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
                run_id: "r",
                component_id: "a",
                row_id: None,
                debug: false,
            })
            .into_iter()
            .find(|(k, _)| k == "KBC_CONFIGID")
            .unwrap()
            .1
        };
        assert_eq!(id(&a), id(&a));
        assert_ne!(id(&a), id(&b));
        assert_eq!(id(&a).len(), 64);
    }
}
