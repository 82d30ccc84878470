//! Output mapping (contract §4, §6): what a component wrote to `/data/out`, turned into the
//! table loads and file uploads its job will commit.
//!
//! Everything that lands in `out/tables` and `out/files` is taken, not only what is mapped.
//! Nothing outside the data folder is ever read: a symlink anywhere in `out/` is refused, as
//! are special files. What is taken is moved into the job's staging directory, so it
//! survives the removal of the row's data folder until the job commits.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use super::MappingError;
use crate::contract::mapping::{FileSettings, KeyValue, OutputMapping, TableSettings};
use crate::storage::{
    CsvSource, FileUpload, MetadataEntry, Provenance, TableId, TableLoad, WhereFilter,
};

/// Who is writing: for destinations, system tags and provenance.
#[derive(Debug, Clone)]
pub struct OutputContext<'a> {
    pub component_id: &'a str,
    pub config_id: Option<&'a str>,
    pub row_id: Option<&'a str>,
    pub run_id: &'a str,
    /// The component asks for `in.c-<component>-<config>` as its default bucket.
    pub component_default_bucket: bool,
}

/// One table load, and whether it is applied even when the job fails.
#[derive(Debug, Clone)]
pub struct StagedTable {
    pub load: TableLoad,
    pub write_always: bool,
}

/// Everything one image run wrote, ready to commit.
#[derive(Debug, Default)]
pub struct StagedOutputs {
    pub tables: Vec<StagedTable>,
    pub files: Vec<FileUpload>,
}

/// Reads `out` (the data folder's `out/`), applies `mapping`, and moves what it takes into
/// `staging`. `failed`: the job failed, so only `write_always` tables are wanted and a
/// mapped table the component did not write is no error.
pub fn collect_outputs(
    out: &Path,
    mapping: &OutputMapping,
    ctx: &OutputContext<'_>,
    staging: &Path,
    failed: bool,
) -> Result<StagedOutputs, MappingError> {
    let default_bucket = default_bucket(mapping, ctx)?;
    let mut staged = StagedOutputs::default();

    // Tables.
    let dir = out.join("tables");
    let (data, manifests) = scan(&dir, "out/tables")?;
    let mappings: HashMap<&str, &crate::contract::mapping::OutputTable> = mapping
        .tables
        .iter()
        .map(|t| (t.source.as_str(), t))
        .collect();
    for source in mappings.keys() {
        if !data.contains_key(*source) && !failed {
            return Err(MappingError::User(format!(
                "output table source {source:?} not found: the component did not write out/tables/{source}"
            )));
        }
    }
    for (name, kind) in &data {
        let manifest: TableSettings = match manifests.get(name) {
            Some(path) => read_manifest(path, &format!("out/tables/{name}.manifest"))?,
            None => TableSettings::default(),
        };
        let mapped = mappings.get(name.as_str()).map(|m| &m.settings);
        let settings = merge_table(manifest, mapped);
        if failed && !settings.write_always.unwrap_or(false) {
            continue;
        }
        let destination = resolve_destination(name, mapped, &settings, default_bucket.as_deref())?;
        let staged_path = stage(&dir.join(name), &staging.join("tables"), name)?;
        let paths = match kind {
            Kind::File => vec![staged_path],
            Kind::Dir => slices(&staged_path, name)?,
        };
        let columns = settings.columns.clone();
        if *kind == Kind::Dir && columns.is_none() {
            return Err(MappingError::User(format!(
                "out/tables/{name} is a sliced table: its manifest or mapping must give columns"
            )));
        }
        let source = CsvSource {
            paths,
            columns,
            delimiter: one_byte(settings.delimiter.as_deref(), b',', name, "delimiter")?,
            enclosure: one_byte(settings.enclosure.as_deref(), b'"', name, "enclosure")?,
        };
        let mut load = TableLoad::new(
            destination,
            source,
            Provenance {
                component: ctx.component_id.to_owned(),
                config: ctx.config_id.map(str::to_owned),
                row: ctx.row_id.map(str::to_owned),
            },
        );
        load.incremental = settings.incremental.unwrap_or(false);
        load.primary_key = settings.primary_key.clone().unwrap_or_default();
        load.delete_where = match (&settings.delete_where_column, &settings.delete_where_values) {
            (Some(column), Some(values)) => Some(WhereFilter {
                column: column.clone(),
                values: values.clone(),
                operator: settings.delete_where_operator.unwrap_or_default(),
            }),
            (None, None) => None,
            _ => {
                return Err(MappingError::User(format!(
                    "out/tables/{name}: delete_where_column and delete_where_values go together"
                )));
            }
        };
        load.metadata = entries(settings.metadata.as_deref().unwrap_or_default());
        load.column_metadata = settings
            .column_metadata
            .as_ref()
            .map(|m| m.iter().map(|(c, kv)| (c.clone(), entries(kv))).collect())
            .unwrap_or_default();
        load.description = settings.description.clone();
        staged.tables.push(StagedTable {
            load,
            write_always: settings.write_always.unwrap_or(false),
        });
    }
    if failed {
        return Ok(staged);
    }

    // Files.
    let dir = out.join("files");
    let (data, manifests) = scan(&dir, "out/files")?;
    let mappings: HashMap<&str, &FileSettings> = mapping
        .files
        .iter()
        .map(|f| (f.source.as_str(), &f.settings))
        .collect();
    for source in mappings.keys() {
        if !data.contains_key(*source) {
            return Err(MappingError::User(format!(
                "output file {source:?} not found: the component did not write out/files/{source}"
            )));
        }
    }
    for (name, kind) in &data {
        if *kind == Kind::Dir {
            return Err(MappingError::User(format!(
                "out/files/{name} is a directory: only files can be uploaded"
            )));
        }
        // The mapping, when there is one, replaces the manifest entirely (no merge).
        let settings = match mappings.get(name.as_str()) {
            Some(s) => (*s).clone(),
            None => match manifests.get(name) {
                Some(path) => read_manifest(path, &format!("out/files/{name}.manifest"))?,
                None => FileSettings::default(),
            },
        };
        let mut tags = settings.tags.clone();
        tags.push(format!("componentId: {}", ctx.component_id));
        if let Some(c) = ctx.config_id {
            tags.push(format!("configurationId: {c}"));
        }
        if let Some(r) = ctx.row_id {
            tags.push(format!("configurationRowId: {r}"));
        }
        tags.push(format!("runId: {}", ctx.run_id));
        let staged_path = stage(&dir.join(name), &staging.join("files"), name)?;
        staged.files.push(FileUpload {
            path: staged_path,
            name: name.clone(),
            tags,
            is_permanent: settings.is_permanent.unwrap_or(false),
            is_public: settings.is_public.unwrap_or(false),
            is_encrypted: settings.is_encrypted.unwrap_or(true),
        });
    }
    Ok(staged)
}

/// Moves an output into the staging directory `into` (created on first use: most runs
/// stage nothing, and every directory costs on the critical path).
fn stage(from: &Path, into: &Path, name: &str) -> Result<PathBuf, MappingError> {
    fs::create_dir_all(into).map_err(MappingError::io(into))?;
    let to = into.join(name);
    fs::rename(from, &to).map_err(MappingError::io(&to))?;
    Ok(to)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// Data entries by name, and manifests by the name of their data.
type Listing = (BTreeMap<String, Kind>, BTreeMap<String, PathBuf>);

/// Lists a directory of outputs: data entries and manifests, refusing symlinks, special
/// files and manifests without their data.
fn scan(dir: &Path, shown: &str) -> Result<Listing, MappingError> {
    let mut data = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((data, manifests)),
        Err(source) => {
            return Err(MappingError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(MappingError::io(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(MappingError::User(format!(
                "{shown}/{}: file names must be UTF-8",
                entry.file_name().to_string_lossy()
            )));
        };
        let ft = entry.file_type().map_err(MappingError::io(&entry.path()))?;
        if ft.is_symlink() {
            return Err(MappingError::User(format!(
                "{shown}/{name} is a symlink: outputs must be regular files"
            )));
        }
        if let Some(base) = name.strip_suffix(".manifest") {
            if !ft.is_file() {
                return Err(MappingError::User(format!("{shown}/{name} is not a file")));
            }
            manifests.insert(base.to_owned(), entry.path());
        } else if ft.is_file() {
            data.insert(name, Kind::File);
        } else if ft.is_dir() {
            data.insert(name, Kind::Dir);
        } else {
            return Err(MappingError::User(format!(
                "{shown}/{name} is not a regular file or directory"
            )));
        }
    }
    for base in manifests.keys() {
        if !data.contains_key(base) {
            return Err(MappingError::User(format!(
                "orphaned manifest {shown}/{base}.manifest: there is no {shown}/{base}"
            )));
        }
    }
    Ok((data, manifests))
}

/// The slices of a sliced table, in name order; only regular files.
fn slices(dir: &Path, name: &str) -> Result<Vec<PathBuf>, MappingError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(MappingError::io(dir))? {
        let entry = entry.map_err(MappingError::io(dir))?;
        let ft = entry.file_type().map_err(MappingError::io(&entry.path()))?;
        if !ft.is_file() {
            return Err(MappingError::User(format!(
                "out/tables/{name}/{}: slices must be regular files",
                entry.file_name().to_string_lossy()
            )));
        }
        out.push(entry.path());
    }
    out.sort();
    if out.is_empty() {
        return Err(MappingError::User(format!(
            "sliced table out/tables/{name} has no slices"
        )));
    }
    Ok(out)
}

fn read_manifest<T: serde::de::DeserializeOwned>(
    path: &Path,
    shown: &str,
) -> Result<T, MappingError> {
    let meta = fs::symlink_metadata(path).map_err(MappingError::io(path))?;
    if meta.len() > 16 << 20 {
        return Err(MappingError::User(format!(
            "invalid manifest {shown}: larger than 16 MB"
        )));
    }
    let bytes = fs::read(path).map_err(MappingError::io(path))?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        if at.is_empty() || at == "." {
            MappingError::User(format!("invalid manifest {shown}: {inner}"))
        } else {
            MappingError::User(format!("invalid manifest {shown}: {at}: {inner}"))
        }
    })
}

/// Mapping values win over manifest values (contract §4); metadata merges by key.
fn merge_table(manifest: TableSettings, mapping: Option<&TableSettings>) -> TableSettings {
    let Some(m) = mapping else {
        return manifest;
    };
    let pick = |a: &Option<String>, b: Option<String>| a.clone().or(b);
    TableSettings {
        destination: pick(&m.destination, manifest.destination),
        incremental: m.incremental.or(manifest.incremental),
        primary_key: m.primary_key.clone().or(manifest.primary_key),
        columns: m.columns.clone().or(manifest.columns),
        delimiter: pick(&m.delimiter, manifest.delimiter),
        enclosure: pick(&m.enclosure, manifest.enclosure),
        delete_where_column: pick(&m.delete_where_column, manifest.delete_where_column),
        delete_where_values: m
            .delete_where_values
            .clone()
            .or(manifest.delete_where_values),
        delete_where_operator: m.delete_where_operator.or(manifest.delete_where_operator),
        metadata: merge_kv(manifest.metadata, m.metadata.as_ref()),
        column_metadata: match (manifest.column_metadata, &m.column_metadata) {
            (None, None) => None,
            (a, b) => {
                let mut merged = a.unwrap_or_default();
                for (col, kv) in b.clone().unwrap_or_default() {
                    let base = merged.remove(&col);
                    merged.insert(col, merge_kv(base, Some(&kv)).unwrap_or_default());
                }
                Some(merged)
            }
        },
        write_always: m.write_always.or(manifest.write_always),
        description: pick(&m.description, manifest.description),
    }
}

fn merge_kv(base: Option<Vec<KeyValue>>, over: Option<&Vec<KeyValue>>) -> Option<Vec<KeyValue>> {
    match (base, over) {
        (None, None) => None,
        (b, o) => {
            let mut out = b.unwrap_or_default();
            for kv in o.cloned().unwrap_or_default() {
                out.retain(|x| x.key != kv.key);
                out.push(kv);
            }
            Some(out)
        }
    }
}

fn entries(kv: &[KeyValue]) -> Vec<MetadataEntry> {
    kv.iter()
        .map(|k| MetadataEntry {
            key: k.key.clone(),
            value: k.value.clone(),
        })
        .collect()
}

fn one_byte(value: Option<&str>, default: u8, name: &str, what: &str) -> Result<u8, MappingError> {
    match value {
        None => Ok(default),
        Some(v) if v.len() == 1 && v.is_ascii() => Ok(v.as_bytes()[0]),
        Some(v) => Err(MappingError::User(format!(
            "out/tables/{name}: {what} {v:?} must be a single ASCII character"
        ))),
    }
}

/// The default bucket (contract §6): the mapping's, else the component's own when it asks
/// for one.
fn default_bucket(
    mapping: &OutputMapping,
    ctx: &OutputContext<'_>,
) -> Result<Option<String>, MappingError> {
    if let Some(b) = &mapping.default_bucket {
        let probe = format!("{b}.x");
        probe
            .parse::<TableId>()
            .map_err(|e| MappingError::User(format!("storage.output.default_bucket {b:?}: {e}")))?;
        return Ok(Some(b.clone()));
    }
    if !ctx.component_default_bucket {
        return Ok(None);
    }
    let config = ctx.config_id.ok_or_else(|| {
        MappingError::User(
            "the component writes to a default bucket, which needs a config_id".to_owned(),
        )
    })?;
    let sanitized: String = ctx
        .component_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Ok(Some(format!("in.c-{sanitized}-{config}")))
}

/// Where an output table goes (contract §6).
fn resolve_destination(
    name: &str,
    mapping: Option<&TableSettings>,
    settings: &TableSettings,
    default_bucket: Option<&str>,
) -> Result<TableId, MappingError> {
    if let Some(d) = mapping.and_then(|m| m.destination.as_deref()) {
        return d.parse().map_err(|e| {
            MappingError::User(format!(
                "out/tables/{name}: mapping destination {d:?} must be a full table id: {e}"
            ))
        });
    }
    let candidate = match &settings.destination {
        Some(d) => d.clone(),
        None => name
            .strip_suffix(".csv.gz")
            .or_else(|| name.strip_suffix(".csv"))
            .unwrap_or(name)
            .to_owned(),
    };
    if candidate.matches('.').count() == 2 {
        return candidate.parse().map_err(|e| {
            MappingError::User(format!("out/tables/{name}: destination {candidate:?}: {e}"))
        });
    }
    match default_bucket {
        Some(bucket) => format!("{bucket}.{candidate}").parse().map_err(|e| {
            MappingError::User(format!(
                "out/tables/{name}: destination {bucket}.{candidate}: {e}"
            ))
        }),
        None => Err(MappingError::User(format!(
            "out/tables/{name}: no destination: give a full table id (stage.bucket.table) in the \
             mapping or the manifest, or a storage.output.default_bucket"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::mapping::{OutputFile, OutputTable};
    use serde_json::json;

    fn ctx() -> OutputContext<'static> {
        OutputContext {
            component_id: "acme.writer",
            config_id: Some("42"),
            row_id: None,
            run_id: "r1",
            component_default_bucket: false,
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir_all(out.join("tables")).unwrap();
        fs::create_dir_all(out.join("files")).unwrap();
        let staging = d.path().join("staging");
        (d, out, staging)
    }

    fn mapping(v: serde_json::Value) -> OutputMapping {
        serde_json::from_value(v).unwrap()
    }

    fn err(r: Result<StagedOutputs, MappingError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.class(), crate::contract::ErrorClass::User, "{e}");
        e.to_string()
    }

    #[test]
    fn destinations_resolve_per_the_contract() {
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/out.c-main.full.csv"), "a\n1\n").unwrap();
        fs::write(out.join("tables/short.csv"), "a\n1\n").unwrap();
        fs::write(out.join("tables/manifested.csv"), "a\n1\n").unwrap();
        fs::write(
            out.join("tables/manifested.csv.manifest"),
            r#"{"destination": "out.c-m.from-manifest"}"#,
        )
        .unwrap();
        fs::write(out.join("tables/mapped.csv"), "a\n1\n").unwrap();
        fs::write(
            out.join("tables/mapped.csv.manifest"),
            r#"{"destination": "out.c-m.loses", "incremental": true}"#,
        )
        .unwrap();
        let m = mapping(json!({
            "default_bucket": "out.c-default",
            "tables": [{"source": "mapped.csv", "destination": "out.c-m.wins", "primary_key": ["a"]}]
        }));
        let staged = collect_outputs(&out, &m, &ctx(), &staging, false).unwrap();
        let dest: BTreeMap<String, &TableLoad> = staged
            .tables
            .iter()
            .map(|t| (t.load.destination.to_string(), &t.load))
            .collect();
        assert_eq!(
            dest.keys().cloned().collect::<Vec<_>>(),
            vec![
                "out.c-default.short",
                "out.c-m.from-manifest",
                "out.c-m.wins",
                "out.c-main.full"
            ]
        );
        let mapped = dest["out.c-m.wins"];
        assert!(
            mapped.incremental,
            "manifest settings the mapping does not set stay"
        );
        assert_eq!(mapped.primary_key, vec!["a"]);
        assert!(
            mapped.source.paths[0].starts_with(&staging),
            "not moved to staging"
        );
        assert!(!out.join("tables/mapped.csv").exists());
    }

    #[test]
    fn component_default_bucket() {
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/t.csv"), "a\n1\n").unwrap();
        let mut c = ctx();
        c.component_default_bucket = true;
        let staged = collect_outputs(&out, &OutputMapping::default(), &c, &staging, false).unwrap();
        assert_eq!(
            staged.tables[0].load.destination.to_string(),
            "in.c-acme-writer-42.t"
        );
    }

    #[test]
    fn unresolvable_destination_names_the_file() {
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/odd.csv"), "a\n1\n").unwrap();
        let e = err(collect_outputs(
            &out,
            &OutputMapping::default(),
            &ctx(),
            &staging,
            false,
        ));
        assert!(
            e.contains("out/tables/odd.csv") && e.contains("no destination"),
            "{e}"
        );
        let m = mapping(json!({"tables": [{"source": "odd.csv", "destination": "not-full"}]}));
        let e = err(collect_outputs(&out, &m, &ctx(), &staging, false));
        assert!(e.contains("must be a full table id"), "{e}");
    }

    #[test]
    fn orphans_missing_sources_bad_manifests_and_symlinks() {
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/lonely.csv.manifest"), "{}").unwrap();
        let e = err(collect_outputs(
            &out,
            &OutputMapping::default(),
            &ctx(),
            &staging,
            false,
        ));
        assert!(
            e.contains("orphaned manifest out/tables/lonely.csv.manifest"),
            "{e}"
        );

        let (_d, out, staging) = setup();
        let m = mapping(json!({"tables": [{"source": "never.csv", "destination": "out.c-a.b"}]}));
        let e = err(collect_outputs(&out, &m, &ctx(), &staging, false));
        assert!(e.contains("never.csv") && e.contains("not found"), "{e}");
        // ...but a failed job does not care.
        assert!(collect_outputs(&out, &m, &ctx(), &staging, true).is_ok());

        let (_d, out, staging) = setup();
        fs::write(out.join("tables/t.csv"), "a\n").unwrap();
        fs::write(
            out.join("tables/t.csv.manifest"),
            r#"{"incremental": "yes"}"#,
        )
        .unwrap();
        let e = err(collect_outputs(
            &out,
            &mapping(json!({"default_bucket": "in.c-x"})),
            &ctx(),
            &staging,
            false,
        ));
        assert!(
            e.contains("invalid manifest out/tables/t.csv.manifest: incremental"),
            "{e}"
        );
        fs::write(out.join("tables/t.csv.manifest"), r#"{"destnation": "x"}"#).unwrap();
        let e = err(collect_outputs(
            &out,
            &mapping(json!({"default_bucket": "in.c-x"})),
            &ctx(),
            &staging,
            false,
        ));
        assert!(e.contains("destnation"), "{e}");

        let (_d, out, staging) = setup();
        std::os::unix::fs::symlink("/etc/passwd", out.join("tables/passwd.csv")).unwrap();
        let e = err(collect_outputs(
            &out,
            &mapping(json!({"default_bucket": "in.c-x"})),
            &ctx(),
            &staging,
            false,
        ));
        assert!(e.contains("out/tables/passwd.csv is a symlink"), "{e}");
        let (_d, out, staging) = setup();
        std::os::unix::fs::symlink("/etc/passwd", out.join("files/passwd")).unwrap();
        let e = err(collect_outputs(
            &out,
            &OutputMapping::default(),
            &ctx(),
            &staging,
            false,
        ));
        assert!(e.contains("out/files/passwd is a symlink"), "{e}");
    }

    #[test]
    fn sliced_tables_need_columns_and_reject_nested_links() {
        let (_d, out, staging) = setup();
        fs::create_dir(out.join("tables/sliced")).unwrap();
        fs::write(out.join("tables/sliced/part1.csv"), "1,2\n").unwrap();
        fs::write(out.join("tables/sliced/part0.csv.gz"), "").unwrap();
        let m = mapping(json!({"default_bucket": "in.c-x"}));
        let e = err(collect_outputs(&out, &m, &ctx(), &staging, false));
        assert!(e.contains("sliced table") && e.contains("columns"), "{e}");
        fs::write(
            out.join("tables/sliced.manifest"),
            r#"{"columns": ["a", "b"]}"#,
        )
        .unwrap();
        // The first failed attempt moved the directory already; rebuild the output.
        let (_d2, out2, staging2) = setup();
        fs::create_dir(out2.join("tables/sliced")).unwrap();
        fs::write(out2.join("tables/sliced/part1.csv"), "1,2\n").unwrap();
        fs::write(out2.join("tables/sliced/part0.csv.gz"), "").unwrap();
        fs::write(
            out2.join("tables/sliced.manifest"),
            r#"{"columns": ["a", "b"]}"#,
        )
        .unwrap();
        let staged = collect_outputs(&out2, &m, &ctx(), &staging2, false).unwrap();
        let src = &staged.tables[0].load.source;
        assert_eq!(
            src.columns.as_deref(),
            Some(&["a".to_owned(), "b".to_owned()][..])
        );
        let names: Vec<_> = src
            .paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["part0.csv.gz", "part1.csv"]);

        let (_d, out, staging) = setup();
        fs::create_dir(out.join("tables/sliced")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("tables/sliced/evil")).unwrap();
        fs::write(out.join("tables/sliced.manifest"), r#"{"columns": ["a"]}"#).unwrap();
        let e = err(collect_outputs(&out, &m, &ctx(), &staging, false));
        assert!(e.contains("slices must be regular files"), "{e}");
    }

    #[test]
    fn files_get_system_tags_and_mapping_replaces_manifest() {
        let (_d, out, staging) = setup();
        fs::write(out.join("files/report.pdf"), "pdf").unwrap();
        fs::write(
            out.join("files/report.pdf.manifest"),
            r#"{"tags": ["from-manifest"], "is_permanent": true}"#,
        )
        .unwrap();
        fs::write(out.join("files/mapped.txt"), "txt").unwrap();
        fs::write(
            out.join("files/mapped.txt.manifest"),
            r#"{"tags": ["ignored"]}"#,
        )
        .unwrap();
        let m = OutputMapping {
            files: vec![OutputFile {
                source: "mapped.txt".into(),
                settings: FileSettings {
                    tags: vec!["from-mapping".into()],
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        let mut c = ctx();
        c.row_id = Some("row-1");
        let staged = collect_outputs(&out, &m, &c, &staging, false).unwrap();
        let by: BTreeMap<_, _> = staged.files.iter().map(|f| (f.name.as_str(), f)).collect();
        assert_eq!(
            by["report.pdf"].tags,
            vec![
                "from-manifest",
                "componentId: acme.writer",
                "configurationId: 42",
                "configurationRowId: row-1",
                "runId: r1"
            ]
        );
        assert!(by["report.pdf"].is_permanent);
        assert_eq!(by["mapped.txt"].tags[0], "from-mapping");
        assert!(!by["mapped.txt"].tags.contains(&"ignored".to_owned()));
        let m = OutputMapping {
            files: vec![OutputFile {
                source: "gone.txt".into(),
                settings: FileSettings::default(),
            }],
            ..Default::default()
        };
        let (_d, out, staging) = setup();
        let e = err(collect_outputs(&out, &m, &c, &staging, false));
        assert!(e.contains("gone.txt") && e.contains("not found"), "{e}");
    }

    #[test]
    fn failed_jobs_keep_only_write_always_tables_and_no_files() {
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/log.csv"), "a\n1\n").unwrap();
        fs::write(out.join("tables/data.csv"), "a\n1\n").unwrap();
        fs::write(out.join("files/f"), "x").unwrap();
        let m = OutputMapping {
            default_bucket: Some("out.c-x".into()),
            tables: vec![OutputTable {
                source: "log.csv".into(),
                settings: TableSettings {
                    write_always: Some(true),
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        let staged = collect_outputs(&out, &m, &ctx(), &staging, true).unwrap();
        assert_eq!(staged.tables.len(), 1);
        assert_eq!(staged.tables[0].load.destination.to_string(), "out.c-x.log");
        assert!(staged.files.is_empty());
    }

    #[test]
    fn delimiters_and_delete_where() {
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/t.csv"), "a;b\n").unwrap();
        fs::write(
            out.join("tables/t.csv.manifest"),
            r#"{"delimiter": ";", "enclosure": "'", "incremental": true,
                "delete_where_column": "a", "delete_where_values": ["1"], "delete_where_operator": "ne"}"#,
        )
        .unwrap();
        let staged = collect_outputs(
            &out,
            &mapping(json!({"default_bucket": "in.c-x"})),
            &ctx(),
            &staging,
            false,
        )
        .unwrap();
        let l = &staged.tables[0].load;
        assert_eq!((l.source.delimiter, l.source.enclosure), (b';', b'\''));
        let w = l.delete_where.as_ref().unwrap();
        assert_eq!(
            (w.column.as_str(), w.operator),
            ("a", crate::storage::FilterOperator::Ne)
        );
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/t.csv"), "a\n").unwrap();
        fs::write(out.join("tables/t.csv.manifest"), r#"{"delimiter": ";;"}"#).unwrap();
        let e = err(collect_outputs(
            &out,
            &mapping(json!({"default_bucket": "in.c-x"})),
            &ctx(),
            &staging,
            false,
        ));
        assert!(e.contains("single ASCII character"), "{e}");
    }
}
