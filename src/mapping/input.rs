//! Input mapping (contract §5): the tables and files a configuration maps, exported from
//! storage into `/data/in` with a manifest beside each.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{Value, json};

use super::time::{iso, iso_ms, parse_since};
use super::{FileImport, InputState, MappingError, TableImport, plain_name};
use crate::contract::mapping::{
    InputFile, InputFileManifest, InputMapping, InputTable, InputTableManifest, TagFilter, TagMatch,
};
use crate::storage::{
    ExportQuery, FileInfo, FileQuery, Metadata, Storage, TableId, TableInfo, WhereFilter,
};

/// How many files a file mapping brings without an explicit `limit`.
pub const DEFAULT_FILE_LIMIT: u64 = 100;

/// `max_age_days` in the manifest of a file that is not permanent (Keboola's default).
const TEMPORARY_FILE_DAYS: u64 = 15;

/// The write buffer of a table exported into the data folder.
const EXPORT_BUFFER: usize = 1 << 20;

/// What input mapping did, and the new bookkeeping for `adaptive` mappings.
#[derive(Debug, Default)]
pub struct InputReport {
    pub tables: Vec<(TableId, u64)>,
    pub files: Vec<u64>,
    pub state: InputState,
    /// The files a mapping with `processed_tags` brought, with those tags: for the job's
    /// commit ([`Changes::file_tags`](crate::storage::Changes)), once it succeeded.
    pub processed_tags: Vec<(u64, Vec<String>)>,
}

/// Exports every mapped table and file into `data/in`. `previous` is what the last
/// successful run recorded for `adaptive` mappings.
pub fn stage_inputs(
    storage: &dyn Storage,
    mapping: &InputMapping,
    data: &Path,
    previous: &InputState,
    now_ms: i64,
) -> Result<InputReport, MappingError> {
    stage_typed_inputs(storage, mapping, data, previous, now_ms, false)
}

/// [`stage_inputs`], with `native_types`: the configuration's `data_type_support` is
/// `authoritative` or `hints`, so table manifests also carry a `schema` (built from the
/// columns' `KBC.datatype.*` metadata), as the original writes for typed tables.
pub fn stage_typed_inputs(
    storage: &dyn Storage,
    mapping: &InputMapping,
    data: &Path,
    previous: &InputState,
    now_ms: i64,
    native_types: bool,
) -> Result<InputReport, MappingError> {
    let mut stager = Stager {
        storage,
        data,
        previous,
        now_ms,
        names: HashSet::new(),
        native_types,
    };
    let mut report = InputReport::default();
    for (i, t) in mapping.tables.iter().enumerate() {
        let (id, rows, import) = stager.table(t, i)?;
        report.tables.push((id, rows));
        report.state.tables.extend(import);
    }
    for (i, f) in mapping.files.iter().enumerate() {
        let (ids, import) = stager.files(f, i)?;
        if !f.processed_tags.is_empty() {
            let tagged = ids.iter().map(|id| (*id, f.processed_tags.clone()));
            report.processed_tags.extend(tagged);
        }
        report.files.extend(ids);
        report.state.files.extend(import);
    }
    Ok(report)
}

/// One input mapping at work: where it reads and writes, and the names already used.
struct Stager<'a> {
    storage: &'a dyn Storage,
    data: &'a Path,
    previous: &'a InputState,
    now_ms: i64,
    /// File names in `in/tables` and `in/files` taken so far.
    names: HashSet<String>,
    /// Table manifests carry a `schema`.
    native_types: bool,
}

/// A user error about field `f` of table mapping `i`.
fn table_error(i: usize, f: &str, m: String) -> MappingError {
    MappingError::User(format!("storage.input.tables[{i}].{f}: {m}"))
}

impl Stager<'_> {
    fn table(
        &mut self,
        t: &InputTable,
        i: usize,
    ) -> Result<(TableId, u64, Option<TableImport>), MappingError> {
        let user = |f: &str, m: String| table_error(i, f, m);
        let id: TableId = t
            .source
            .parse()
            .map_err(|e: crate::storage::StorageError| user("source", e.to_string()))?;
        let info = self
            .storage
            .table(&id)?
            .ok_or_else(|| user("source", format!("table {id} does not exist")))?;
        let name = t.destination.clone().unwrap_or_else(|| id.to_string());
        if !plain_name(&name) || name.ends_with(".manifest") {
            return Err(user("destination", format!("{name:?} is not a file name")));
        }
        if !self.names.insert(name.clone()) {
            return Err(user("destination", format!("{name:?} is mapped twice")));
        }
        let (changed_since_ms, adaptive) = self.changed_since(t, i, &id)?;
        let columns = (!t.columns.is_empty()).then(|| t.columns.clone());
        let query = ExportQuery {
            columns: columns.clone(),
            filter: where_filter(t, i)?,
            changed_since_ms,
            limit: t.limit,
        };
        let rows = self.export_table(&id, &query, &name)?;
        let mut manifest = table_manifest(&id, &info, columns);
        if self.native_types {
            manifest.schema = Some(schema(&info, &manifest.columns));
        }
        let tables = self.data.join("in/tables");
        write_manifest(&tables.join(format!("{name}.manifest")), &manifest)?;
        tracing::info!("input table {id} → in/tables/{name} ({rows} rows)");
        let import = adaptive.then(|| TableImport {
            source: id.to_string(),
            last_import_date: iso_ms(info.last_import_ms),
        });
        Ok((id, rows, import))
    }

    /// The `changed_since` time of a table mapping, and whether it is `adaptive`.
    fn changed_since(
        &self,
        t: &InputTable,
        i: usize,
        id: &TableId,
    ) -> Result<(Option<i64>, bool), MappingError> {
        let user = |f: &str, m: String| table_error(i, f, m);
        let since = |text: &str, f: &str| parse_since(text, self.now_ms).map_err(|m| user(f, m));
        // As the original: `days: 0` and `changed_since: ""` (what its forms save for
        // "not set") filter nothing.
        let changed_since = t.changed_since.as_ref().filter(|s| !s.is_empty());
        match (changed_since, t.days.filter(|d| *d != 0)) {
            (Some(_), Some(_)) => Err(user(
                "days",
                "use either days or changed_since, not both".into(),
            )),
            (None, Some(d)) => Ok((Some(since(&format!("-{d} days"), "days")?), false)),
            (Some(s), None) if s == "adaptive" => {
                let id = id.to_string();
                match self.previous.tables.iter().find(|p| p.source == id) {
                    // Rows changed at the recorded time were exported then: start after it.
                    Some(p) => Ok((Some(since(&p.last_import_date, "changed_since")? + 1), true)),
                    None => Ok((None, true)),
                }
            }
            (Some(s), None) => Ok((Some(since(s, "changed_since")?), false)),
            (None, None) => Ok((None, false)),
        }
    }

    fn export_table(
        &self,
        id: &TableId,
        query: &ExportQuery,
        name: &str,
    ) -> Result<u64, MappingError> {
        let path = self.data.join("in/tables").join(name);
        let file = File::create(&path).map_err(MappingError::io(&path))?;
        let mut out = BufWriter::with_capacity(EXPORT_BUFFER, file);
        let rows = self.storage.export(id, query, &mut out)?;
        out.flush().map_err(MappingError::io(&path))?;
        Ok(rows)
    }

    fn files(
        &mut self,
        f: &InputFile,
        i: usize,
    ) -> Result<(Vec<u64>, Option<FileImport>), MappingError> {
        let user = |m: String| MappingError::User(format!("storage.input.files[{i}]: {m}"));
        let (mut query, key) = file_query(f).map_err(user)?;
        let adaptive = match f.changed_since.as_deref() {
            None | Some("") => false,
            Some(_) if f.query.is_some() => {
                return Err(user(
                    "changed_since is not supported with a query (as in the original)".into(),
                ));
            }
            Some("adaptive") if key.is_empty() => {
                return Err(user("changed_since adaptive needs tags".into()));
            }
            Some("adaptive") => true,
            // As the original: files created since then (`-7 days`, a date, a timestamp).
            Some(since) => {
                let ms = parse_since(since, self.now_ms)
                    .map_err(|m| user(format!("changed_since: {m}")))?;
                query.created_since_ms = Some(ms);
                false
            }
        };
        if adaptive {
            let last = self.previous.files.iter().find(|p| p.tags == key);
            query.since_id = last.map(|p| p.last_import_id);
        }
        let found = self.storage.files(&query)?;
        let mut ids = Vec::new();
        for info in &found {
            let name = format!("{}_{}", info.id, info.name);
            if !plain_name(&name) {
                return Err(user(format!(
                    "stored file {} has an unusable name",
                    info.id
                )));
            }
            // Two mappings that match the same file: one copy is enough.
            if self.names.insert(name.clone()) {
                self.copy_file(info, &name)?;
                ids.push(info.id);
            }
        }
        let tags: Vec<&String> = key.iter().map(|t| &t.name).collect();
        tracing::info!("input files {tags:?}: {} files", ids.len());
        let import = adaptive.then(|| FileImport {
            last_import_id: found
                .iter()
                .map(|f| f.id)
                .max()
                .or(query.since_id)
                .unwrap_or(0),
            tags: key,
        });
        Ok((ids, import))
    }

    /// Copies a stored file to `in/files/<name>` with its manifest.
    fn copy_file(&self, info: &FileInfo, name: &str) -> Result<(), MappingError> {
        let dir = self.data.join("in/files");
        let path = dir.join(name);
        let mut src = self.storage.open_file(info.id)?;
        let mut dst = File::create(&path).map_err(MappingError::io(&path))?;
        std::io::copy(&mut src, &mut dst).map_err(MappingError::io(&path))?;
        let manifest = InputFileManifest {
            id: info.id,
            name: info.name.clone(),
            created: iso(info.created_ms),
            is_public: info.is_public,
            is_encrypted: info.is_encrypted,
            is_sliced: false,
            tags: info.tags.clone(),
            max_age_days: if info.is_permanent {
                None
            } else {
                Some(TEMPORARY_FILE_DAYS)
            },
            size_bytes: info.size_bytes,
        };
        write_manifest(&dir.join(format!("{name}.manifest")), &manifest)
    }
}

/// The row filter of a table mapping: `where_column` and `where_values` go together.
/// An empty `where_column` means no filter, as in the original runner.
fn where_filter(t: &InputTable, i: usize) -> Result<Option<WhereFilter>, MappingError> {
    let column = t.where_column.as_ref().filter(|c| !c.trim().is_empty());
    match (column, t.where_values.is_empty()) {
        (Some(column), false) => Ok(Some(WhereFilter {
            column: column.clone(),
            values: t.where_values.clone(),
            operator: t.where_operator.unwrap_or_default(),
        })),
        (None, true) => Ok(None),
        (Some(_), true) => Err(table_error(
            i,
            "where_values",
            "where_column needs where_values".into(),
        )),
        (None, false) => Err(table_error(
            i,
            "where_column",
            "where_values need a where_column".into(),
        )),
    }
}

fn table_manifest(
    id: &TableId,
    info: &TableInfo,
    columns: Option<Vec<String>>,
) -> InputTableManifest {
    let columns = columns.unwrap_or_else(|| info.columns.clone());
    let column_metadata = columns
        .iter()
        .map(|c| {
            let entries = info.column_metadata.get(c).map(Vec::as_slice);
            let json = entries.unwrap_or_default().iter().map(metadata_json);
            (c.clone(), json.collect())
        })
        .collect();
    let described = info.metadata.iter().find(|m| m.key == "KBC.description");
    let description = info
        .description
        .clone()
        .or_else(|| described.map(|m| m.value.clone()))
        .filter(|d| !d.is_empty());
    InputTableManifest {
        id: id.to_string(),
        uri: format!("berth://storage/tables/{id}"),
        name: id.table().to_owned(),
        description,
        primary_key: info.primary_key.clone(),
        columns,
        created: iso(info.created_ms),
        last_change_date: iso(info.last_change_ms),
        last_import_date: iso(info.last_import_ms),
        metadata: info.metadata.iter().map(metadata_json).collect(),
        column_metadata,
        schema: None,
    }
}

/// The current format's `schema` of `columns`: the type from `KBC.datatype.basetype`
/// (else `STRING`, as every column here holds text), with its length and default,
/// `nullable` from `KBC.datatype.nullable`, the primary key and `KBC.description`.
fn schema(info: &TableInfo, columns: &[String]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| {
            let entries = info.column_metadata.get(c).map(Vec::as_slice);
            let get = |k: &str| {
                let found = entries.unwrap_or_default().iter().find(|m| m.key == k);
                found.map(|m| m.value.clone())
            };
            let mut base =
                json!({"type": get("KBC.datatype.basetype").unwrap_or_else(|| "STRING".into())});
            for (key, field) in [
                ("KBC.datatype.length", "length"),
                ("KBC.datatype.default", "default"),
            ] {
                if let Some(v) = get(key) {
                    base[field] = Value::String(v);
                }
            }
            let nullable = !matches!(
                get("KBC.datatype.nullable").as_deref(),
                Some("0" | "" | "false")
            );
            let mut col = json!({
                "name": c,
                "data_type": {"base": base},
                "nullable": nullable,
                "primary_key": info.primary_key.contains(c),
            });
            if let Some(d) = get("KBC.description") {
                col["description"] = Value::String(d);
            }
            col
        })
        .collect()
}

/// The storage query of a file mapping, and the key (its tag filter, sorted) an adaptive
/// mapping's bookkeeping is filed under.
fn file_query(f: &InputFile) -> Result<(FileQuery, Vec<TagFilter>), String> {
    let source_tags = f
        .source
        .as_ref()
        .map(|s| s.tags.clone())
        .unwrap_or_default();
    if f.tags.is_empty() && source_tags.is_empty() && f.file_ids.is_empty() {
        if f.query.is_some() {
            return Err(
                "query (a search of Keboola's file index) is not supported by berth: \
                        give tags, source.tags or file_ids"
                    .into(),
            );
        }
        return Err("give tags, source.tags or file_ids".into());
    }
    if !f.tags.is_empty() && !source_tags.is_empty() {
        return Err("use either tags or source.tags, not both".into());
    }
    let mut query = FileQuery {
        tags_all: f.tags.clone(),
        ids: f.file_ids.clone(),
        limit: Some(f.limit.unwrap_or(DEFAULT_FILE_LIMIT)),
        ..Default::default()
    };
    for t in &source_tags {
        match t.match_ {
            TagMatch::Include => query.tags_all.push(t.name.clone()),
            TagMatch::Exclude => query.exclude.push(t.name.clone()),
        }
    }
    let mut key: Vec<TagFilter> = if source_tags.is_empty() {
        let include = |t: &String| TagFilter {
            name: t.clone(),
            match_: TagMatch::Include,
        };
        f.tags.iter().map(include).collect()
    } else {
        source_tags
    };
    key.sort();
    Ok((query, key))
}

fn metadata_json(m: &Metadata) -> Value {
    json!({
        "id": m.id.to_string(),
        "key": m.key,
        "value": m.value,
        "provider": m.provider,
        "timestamp": iso(m.timestamp_ms),
    })
}

fn write_manifest<T: serde::Serialize>(path: &Path, manifest: &T) -> Result<(), MappingError> {
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| MappingError::Io {
        path: path.to_owned(),
        source: e.into(),
    })?;
    std::fs::write(path, bytes).map_err(MappingError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Changes, CsvSource, MetadataEntry, Provenance, SqliteStorage, TableLoad};

    /// A store with `in.c-a.t` (`id,v`, two rows), its description in metadata and a
    /// type on `v`, and a data folder.
    fn store() -> (tempfile::TempDir, SqliteStorage, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let store = SqliteStorage::open(&d.path().join("storage")).unwrap();
        let csv = d.path().join("t.csv");
        std::fs::write(&csv, "id,v\n1,x\n2,y\n").unwrap();
        let mut load = TableLoad::new(
            "in.c-a.t".parse().unwrap(),
            CsvSource::file(&csv),
            Provenance {
                component: "acme.loader".into(),
                ..Provenance::default()
            },
        );
        let entry = |k: &str, v: &str| MetadataEntry {
            key: k.into(),
            value: v.into(),
        };
        load.metadata = vec![entry("KBC.description", "the t table")];
        load.column_metadata
            .insert("v".into(), vec![entry("KBC.datatype.basetype", "INTEGER")]);
        store
            .apply(&Changes {
                tables: vec![load],
                ..Changes::default()
            })
            .unwrap();
        let data = d.path().join("data");
        std::fs::create_dir_all(data.join("in/tables")).unwrap();
        std::fs::create_dir_all(data.join("in/files")).unwrap();
        (d, store, data)
    }

    fn mapping(tables: Value) -> InputMapping {
        serde_json::from_value(json!({ "tables": tables })).unwrap()
    }

    #[test]
    fn manifests_carry_uri_description_and_metadata_of_every_selected_column() {
        let (_d, store, data) = store();
        let m = mapping(json!([{"source": "in.c-a.t", "destination": "t.csv"}]));
        stage_inputs(&store, &m, &data, &InputState::default(), 0).unwrap();
        let text = std::fs::read_to_string(data.join("in/tables/t.csv.manifest")).unwrap();
        let manifest: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(manifest["uri"], "berth://storage/tables/in.c-a.t");
        assert_eq!(manifest["description"], "the t table");
        assert_eq!(manifest["column_metadata"]["id"], json!([]));
        assert_eq!(
            manifest["column_metadata"]["v"][0]["key"],
            "KBC.datatype.basetype"
        );
        let m =
            mapping(json!([{"source": "in.c-a.t", "destination": "id.csv", "columns": ["id"]}]));
        stage_inputs(&store, &m, &data, &InputState::default(), 0).unwrap();
        let text = std::fs::read_to_string(data.join("in/tables/id.csv.manifest")).unwrap();
        let manifest: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(manifest["column_metadata"], json!({"id": []}));
    }

    #[test]
    fn with_native_types_manifests_carry_a_schema() {
        let (_d, store, data) = store();
        let m = mapping(json!([{"source": "in.c-a.t", "destination": "t.csv"}]));
        stage_typed_inputs(&store, &m, &data, &InputState::default(), 0, true).unwrap();
        let text = std::fs::read_to_string(data.join("in/tables/t.csv.manifest")).unwrap();
        let manifest: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            manifest["schema"],
            json!([
                {"name": "id", "data_type": {"base": {"type": "STRING"}}, "nullable": true,
                 "primary_key": false},
                {"name": "v", "data_type": {"base": {"type": "INTEGER"}}, "nullable": true,
                 "primary_key": false}
            ])
        );
        let m = mapping(json!([{"source": "in.c-a.t", "destination": "u.csv"}]));
        stage_inputs(&store, &m, &data, &InputState::default(), 0).unwrap();
        let text = std::fs::read_to_string(data.join("in/tables/u.csv.manifest")).unwrap();
        assert!(!text.contains("schema"), "{text}");
    }

    #[test]
    fn an_empty_where_column_means_no_filter() {
        let (_d, store, data) = store();
        let m = mapping(json!([{"source": "in.c-a.t", "destination": "t.csv",
                                "where_column": "", "where_values": []}]));
        let report = stage_inputs(&store, &m, &data, &InputState::default(), 0).unwrap();
        assert_eq!(report.tables[0].1, 2);
        let csv = std::fs::read_to_string(data.join("in/tables/t.csv")).unwrap();
        assert_eq!(csv, "id,v\n1,x\n2,y\n");
    }

    #[test]
    fn the_originals_unset_values_filter_nothing() {
        let (_d, store, data) = store();
        // What Keboola's forms save for "not set": no filter, and no clash between them.
        let m = mapping(json!([
            {"source": "in.c-a.t", "destination": "a.csv", "days": 0, "changed_since": ""},
            {"source": "in.c-a.t", "destination": "b.csv", "days": null, "changed_since": null},
            {"source": "in.c-a.t", "destination": "c.csv", "days": 0, "changed_since": "-1 day"},
            {"source": "in.c-a.t", "destination": "d.csv", "where_column": "v",
             "where_values": ["y"], "where_operator": ""},
        ]));
        let report = stage_inputs(&store, &m, &data, &InputState::default(), 0).unwrap();
        let rows: Vec<u64> = report.tables.iter().map(|t| t.1).collect();
        assert_eq!(rows, [2, 2, 2, 1]);
        let csv = std::fs::read_to_string(data.join("in/tables/d.csv")).unwrap();
        assert_eq!(csv, "id,v\n2,y\n");
        // Values without a column are refused, as there.
        let m =
            mapping(json!([{"source": "in.c-a.t", "where_column": " ", "where_values": ["y"]}]));
        let e = stage_inputs(&store, &m, &data, &InputState::default(), 0).unwrap_err();
        assert!(
            e.to_string().contains("where_values need a where_column"),
            "{e}"
        );
    }

    #[test]
    fn processed_tags_name_the_files_a_mapping_brought() {
        let (d, store, data) = store();
        let path = d.path().join("f.txt");
        std::fs::write(&path, "x").unwrap();
        let upload = |tags: &[&str]| crate::storage::FileUpload {
            path: path.clone(),
            name: "f.txt".into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            is_permanent: true,
            is_public: false,
            is_encrypted: false,
        };
        let report = store
            .apply(&Changes {
                files: vec![upload(&["in"]), upload(&["other"])],
                ..Changes::default()
            })
            .unwrap();
        let m: InputMapping = serde_json::from_value(json!({"files": [
            {"tags": ["in"], "processed_tags": ["done", "seen"]},
            {"tags": ["other"]}
        ]}))
        .unwrap();
        let staged = stage_inputs(&store, &m, &data, &InputState::default(), 0).unwrap();
        let first = report.files[0].id;
        assert_eq!(
            staged.processed_tags,
            vec![(first, vec!["done".to_owned(), "seen".to_owned()])]
        );
    }

    #[test]
    fn files_changed_since_a_relative_time_are_those_created_since() {
        let (d, store, data) = store();
        let path = d.path().join("f.txt");
        std::fs::write(&path, "x").unwrap();
        let report = store
            .apply(&Changes {
                files: vec![crate::storage::FileUpload {
                    path,
                    name: "f.txt".into(),
                    tags: vec!["in".into()],
                    is_permanent: true,
                    is_public: false,
                    is_encrypted: false,
                }],
                ..Changes::default()
            })
            .unwrap();
        let created = report.files[0].created_ms;
        let m = |since: &str| -> InputMapping {
            serde_json::from_value(json!({"files": [{"tags": ["in"], "changed_since": since}]}))
                .unwrap()
        };
        let day = 86_400_000;
        let found = |since: &str, now: i64| {
            let dir = tempfile::tempdir().unwrap();
            for sub in ["in/tables", "in/files"] {
                std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            }
            let r = stage_inputs(&store, &m(since), dir.path(), &InputState::default(), now);
            r.map(|r| r.files.len())
        };
        assert_eq!(found("-7 days", created + day).unwrap(), 1);
        assert_eq!(found("-7 days", created + 8 * day).unwrap(), 0);
        assert_eq!(found("1 day ago", created).unwrap(), 1);
        assert_eq!(found("2999-01-01", created).unwrap(), 0);
        let e = found("soon", created).unwrap_err().to_string();
        assert!(
            e.contains("storage.input.files[0]: changed_since: \"soon\" is not a time"),
            "{e}"
        );
        drop(data);
    }

    #[test]
    fn a_file_query_alone_is_refused_by_name() {
        let f: InputFile = serde_json::from_value(json!({"query": "tags:x"})).unwrap();
        let e = file_query(&f).unwrap_err();
        assert!(
            e.starts_with("query (a search of Keboola's file index) is not supported"),
            "{e}"
        );
    }
}
