use std::collections::HashMap;

use serde_json::json;

use super::*;

/// Stored configurations in memory; counts what was read.
#[derive(Default)]
struct Store {
    configs: HashMap<(String, String), StoredConfig>,
    reads: usize,
    broken: bool,
}

impl Store {
    fn with(mut self, component: &str, id: &str, config: Value, rows: Value) -> Store {
        let rows = (rows.as_array().unwrap().iter())
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["configuration"].clone(),
                )
            })
            .collect();
        let stored = StoredConfig {
            configuration: config,
            rows,
        };
        self.configs
            .insert((component.to_owned(), id.to_owned()), stored);
        self
    }

    /// A variables configuration `vars` declaring `a` and `b`, with value rows `r1` and
    /// `default`.
    fn variables() -> Store {
        Store::default().with(
            VARIABLES_COMPONENT,
            "vars",
            json!({"variables": [{"name": "a", "type": "string"}, {"name": "b", "type": "string"}]}),
            json!([
                {"id": "r1", "configuration": {"values": [{"name": "a", "value": "from r1"},
                                                          {"name": "b", "value": "B1"}]}},
                {"id": "default", "configuration": {"values": [{"name": "a", "value": "dflt"},
                                                               {"name": "b", "value": 2}]}}
            ]),
        )
    }
}

impl Lookup for Store {
    type Error = &'static str;
    fn configuration(&mut self, c: &str, id: &str) -> Result<Option<StoredConfig>, &'static str> {
        self.reads += 1;
        if self.broken {
            return Err("store is down");
        }
        Ok(self.configs.get(&(c.to_owned(), id.to_owned())).cloned())
    }
}

fn data(pairs: &[(&str, &str)]) -> VariableValuesData {
    VariableValuesData {
        values: (pairs.iter())
            .map(|(n, v)| VariableValue {
                name: (*n).to_owned(),
                value: (*v).to_owned(),
            })
            .collect(),
    }
}

fn resolve_with(
    config: Value,
    job: JobValues<'_>,
    store: &mut Store,
) -> Result<Resolved, ResolveError<&'static str>> {
    resolve(config, job, store)
}

fn user_error(r: Result<Resolved, ResolveError<&'static str>>) -> PlaceholderError {
    match r {
        Err(ResolveError::Placeholder(e)) => e,
        other => panic!("expected a placeholder error, got {other:?}"),
    }
}

#[test]
fn without_variables_id_placeholders_stay_and_nothing_is_read() {
    let mut store = Store::default();
    let config = json!({"parameters": {"q": "{{ a }}", "list": ["{{ x }}"]}});
    let r = resolve_with(config.clone(), JobValues::default(), &mut store).unwrap();
    assert_eq!(r.configuration, config);
    assert!(r.replaced.is_empty());
    assert_eq!(store.reads, 0);
}

#[test]
fn inline_values_replace_placeholders_everywhere_json_escaped() {
    let mut store = Store::variables();
    let config = json!({
        "variables_id": "vars",
        "parameters": {"q": "a is {{ a }}, b is {{b}}", "{{a}}": 1, "n": "{{{ b }}}"},
        "storage": {"input": {"tables": [{"source": "in.c-{{ b }}.t"}]}}
    });
    let d = data(&[("a", "say \"hi\" / é \\ {{ b }}"), ("b", "x")]);
    let job = JobValues {
        id: None,
        data: Some(&d),
    };
    let r = resolve_with(config, job, &mut store).unwrap();
    assert_eq!(
        r.configuration,
        json!({
            "variables_id": "vars",
            "parameters": {"q": "a is say \"hi\" / é \\ {{ b }}, b is x",
                           "say \"hi\" / é \\ {{ b }}": 1, "n": "x"},
            "storage": {"input": {"tables": [{"source": "in.c-x.t"}]}}
        })
    );
    // First used first, in the text's order: keys come sorted (`n`, `q`, `{{a}}`).
    assert_eq!(
        r.replaced,
        vec![
            ("b".to_owned(), "x".to_owned()),
            ("a".to_owned(), "say \"hi\" / é \\ {{ b }}".to_owned()),
        ]
    );
}

#[test]
fn values_come_from_inline_data_then_the_jobs_row_then_the_default_row() {
    let config = json!({"variables_id": "vars", "variables_values_id": "default",
                        "parameters": {"v": "{{a}}-{{b}}"}});
    let mut store = Store::variables();
    let r = resolve_with(config.clone(), JobValues::default(), &mut store).unwrap();
    assert_eq!(r.configuration["parameters"]["v"], "dflt-2");
    let job = JobValues {
        id: Some("r1"),
        data: None,
    };
    let r = resolve_with(config.clone(), job, &mut store).unwrap();
    assert_eq!(r.configuration["parameters"]["v"], "from r1-B1");
    let d = data(&[("a", "1"), ("b", "2")]);
    let job = JobValues {
        id: None,
        data: Some(&d),
    };
    let r = resolve_with(config.clone(), job, &mut store).unwrap();
    assert_eq!(r.configuration["parameters"]["v"], "1-2");
    // An empty id and empty inline data are none at all.
    let empty = VariableValuesData::default();
    let job = JobValues {
        id: Some(""),
        data: Some(&empty),
    };
    let r = resolve_with(config, job, &mut store).unwrap();
    assert_eq!(r.configuration["parameters"]["v"], "dflt-2");
}

#[test]
fn value_sources_that_cannot_be_used_are_user_errors() {
    let config = json!({"variables_id": "vars", "parameters": {"v": "{{a}}"}});
    let mut store = Store::variables();
    let e = user_error(resolve_with(
        config.clone(),
        JobValues::default(),
        &mut store,
    ));
    assert_eq!(
        e.to_string(),
        "no variable values provided for variables configuration \"vars\""
    );
    // Both: refused even for a configuration without variables.
    let d = data(&[("a", "1")]);
    let both = JobValues {
        id: Some("r1"),
        data: Some(&d),
    };
    let e = user_error(resolve_with(json!({}), both, &mut store));
    assert!(matches!(e, PlaceholderError::BothValues), "{e}");
    let job = JobValues {
        id: Some("nope"),
        data: None,
    };
    let e = user_error(resolve_with(config.clone(), job, &mut store));
    assert_eq!(
        e.to_string(),
        "cannot read variable values \"nope\" of variables configuration \"vars\""
    );
    let d = data(&[("a", "1")]);
    let job = JobValues {
        id: None,
        data: Some(&d),
    };
    let e = user_error(resolve_with(config.clone(), job, &mut store));
    assert_eq!(e.to_string(), "no value provided for variable \"b\"");
    let d = data(&[("", "1")]);
    let job = JobValues {
        id: None,
        data: Some(&d),
    };
    let e = user_error(resolve_with(config.clone(), job, &mut store));
    assert!(matches!(e, PlaceholderError::EmptyName), "{e}");
    let mut empty = Store::default();
    let e = user_error(resolve_with(config, JobValues::default(), &mut empty));
    assert_eq!(
        e.to_string(),
        "variable configuration cannot be read: configuration \"vars\" of keboola.variables \
         is not stored (store it with `berth config put`)"
    );
}

#[test]
fn every_placeholder_without_a_value_is_named_vault_ones_first() {
    let config = json!({"variables_id": "vars",
                        "parameters": {"v": "{{a}} {{ zz }} {{ vault.token }} {{yy}} {{zz}}"}});
    let d = data(&[("a", "1"), ("b", "2")]);
    let job = JobValues {
        id: None,
        data: Some(&d),
    };
    let e = user_error(resolve_with(config, job, &mut Store::variables()));
    assert_eq!(
        e.to_string(),
        "missing values for placeholders: vault.token, zz, vault, yy"
    );
    // berth has no vault: a vault placeholder is missing even without variables.
    let config = json!({"parameters": {"v": "{{vault.a}} {{ vault.b-c }} {{{vault.d}}}"}});
    let e = user_error(resolve_with(
        config,
        JobValues::default(),
        &mut Store::default(),
    ));
    assert_eq!(
        e.to_string(),
        "missing values for placeholders: vault.a, vault.b-c"
    );
}

#[test]
fn a_value_that_breaks_the_json_or_a_broken_template_is_a_user_error() {
    let d = data(&[("a", "value\""), ("b", "")]);
    let job = JobValues {
        id: None,
        data: Some(&d),
    };
    let config = json!({"variables_id": "vars", "parameters": {"v": "{{{ a }}}"}});
    let e = user_error(resolve_with(config, job, &mut Store::variables()));
    assert!(matches!(e, PlaceholderError::InvalidResult(_)), "{e}");
    let config = json!({"variables_id": "vars", "parameters": {"v": "{{#a}}"}});
    let e = user_error(resolve_with(config, job, &mut Store::variables()));
    assert!(matches!(e, PlaceholderError::Syntax(_)), "{e}");
    assert!(
        crate::util::chain(&e).contains("missing closing tag for {{#a}}"),
        "{}",
        crate::util::chain(&e)
    );
}

#[test]
fn invalid_variables_configurations_are_named() {
    let config = json!({"variables_id": "v", "parameters": {}});
    let d = data(&[("a", "1")]);
    let job = JobValues {
        id: None,
        data: Some(&d),
    };
    for (bad, reason) in [
        (
            json!({"variables": [{"name": "a"}]}),
            "variables[0].type is missing",
        ),
        (
            json!({"variables": [{"name": "", "type": "string"}]}),
            "variables[0].name cannot be empty",
        ),
        (json!({"vars": []}), "unknown key \"vars\""),
        (json!({"variables": {}}), "variables must be a list"),
    ] {
        let mut store = Store::default().with(VARIABLES_COMPONENT, "v", bad, json!([]));
        let e = user_error(resolve_with(config.clone(), job, &mut store)).to_string();
        assert!(
            e.starts_with("variable configuration \"v\" is invalid: "),
            "{e}"
        );
        assert!(e.contains(reason), "{e}");
    }
    let mut store = Store::default().with(
        VARIABLES_COMPONENT,
        "v",
        json!({"variables": []}),
        json!([{"id": "r", "configuration": {"values": [{"name": "a", "value": ""}]}}]),
    );
    let job = JobValues {
        id: Some("r"),
        data: None,
    };
    let e = user_error(resolve_with(config.clone(), job, &mut store)).to_string();
    assert!(e.contains("values[0].value cannot be empty"), "{e}");
    let e = user_error(resolve_with(
        json!({"variables_id": {"x": 1}}),
        JobValues::default(),
        &mut store,
    ));
    assert_eq!(
        e.to_string(),
        "configuration key variables_id must be a string"
    );
}

#[test]
fn shared_code_goes_in_first_and_its_variables_are_rendered() {
    let mut store = Store::variables().with(
        SHARED_CODE_COMPONENT,
        "sc",
        json!({}),
        json!([
            {"id": "drop", "configuration": {"code_content": "DROP TABLE {{ a }};"}},
            {"id": "two", "configuration": {"code_content": ["S1;", "S2;"]}}
        ]),
    );
    let config = json!({
        "shared_code_id": "sc", "shared_code_row_ids": ["drop", "two"],
        "variables_id": "vars", "variables_values_id": "default",
        "parameters": {"script": ["{{ two }}", "{{drop}}", "SELECT '{{ b }}';"]}
    });
    let r = resolve_with(config.clone(), JobValues::default(), &mut store).unwrap();
    assert_eq!(
        r.configuration["parameters"],
        json!({"script": ["S1;", "S2;", "DROP TABLE dflt;", "SELECT '2';"]})
    );
    // In a plain string the placeholder is Mustache's, and a row id is no variable.
    let mut config = config;
    config["parameters"]["text"] = json!("{{ drop }}");
    let e = user_error(resolve_with(config, JobValues::default(), &mut store));
    assert_eq!(e.to_string(), "missing values for placeholders: drop");
    let e = user_error(resolve_with(
        json!({"shared_code_id": "sc", "shared_code_row_ids": ["nope"]}),
        JobValues::default(),
        &mut store,
    ));
    assert_eq!(
        e.to_string(),
        "shared code configuration cannot be read: configuration \"sc\" of keboola.shared-code \
         has no row \"nope\""
    );
}

#[test]
fn bad_shared_code_rows_are_user_errors_and_store_failures_are_not() {
    let mut store = Store::default().with(
        SHARED_CODE_COMPONENT,
        "sc",
        json!({}),
        json!([{"id": "r", "configuration": {"code": "x"}},
               {"id": "n", "configuration": {"code_content": 5}}]),
    );
    for (row, reason) in [
        ("r", "unknown key \"code\""),
        ("n", "must be a string or a list"),
    ] {
        let config = json!({"shared_code_id": "sc", "shared_code_row_ids": [row]});
        let e = user_error(resolve_with(config, JobValues::default(), &mut store)).to_string();
        assert!(
            e.starts_with(&format!(
                "shared code row \"{row}\" of configuration \"sc\" is invalid"
            )),
            "{e}"
        );
        assert!(e.contains(reason), "{e}");
    }
    store.broken = true;
    let config = json!({"shared_code_id": "sc", "shared_code_row_ids": ["r"]});
    let r = resolve_with(config, JobValues::default(), &mut store);
    assert!(
        matches!(r, Err(ResolveError::Lookup("store is down"))),
        "{r:?}"
    );
    // Without row ids shared code is not looked at.
    store.reads = 0;
    let config = json!({"shared_code_id": "sc", "shared_code_row_ids": []});
    resolve_with(config, JobValues::default(), &mut store).unwrap();
    assert_eq!(store.reads, 0);
}

#[test]
fn inline_values_parse_from_scalars() {
    let d: VariableValuesData = serde_json::from_value(
        json!({"values": [{"name": "a", "value": 5}, {"name": "b", "value": true}]}),
    )
    .unwrap();
    assert_eq!(d.values[0].value, "5");
    assert_eq!(d.values[1].value, "1");
    let e = serde_json::from_value::<VariableValuesData>(
        json!({"values": [{"name": "a", "value": [1]}]}),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("expected a string or a number"),
        "{e}"
    );
    assert!(serde_json::from_value::<VariableValuesData>(json!({"vals": []})).is_err());
}

#[test]
fn a_job_file_takes_values_by_keboolas_names_or_its_own() {
    let j = crate::contract::JobFile::parse(
        br#"{"component": {"id": "a", "image": "x/y"}, "variableValuesId": "7",
             "variableValuesData": {"values": [{"name": "n", "value": "v"}]}}"#,
    )
    .unwrap();
    assert_eq!(j.variable_values_id.as_deref(), Some("7"));
    assert_eq!(j.variable_values_data.unwrap().values[0].value, "v");
    let j = crate::contract::JobFile::parse(
        br#"{"component": {"id": "a", "image": "x/y"}, "variable_values_id": "8"}"#,
    )
    .unwrap();
    assert_eq!(j.variable_values_id.as_deref(), Some("8"));
    let e = crate::contract::JobFile::parse(
        br#"{"component": {"id": "a", "image": "x/y"},
             "variable_values_data": {"values": [{"name": "n"}]}}"#,
    )
    .unwrap_err();
    assert!(e.starts_with("variable_values_data.values[0]"), "{e}");
}
