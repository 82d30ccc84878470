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
    InputFile, InputFileManifest, InputMapping, InputTable, InputTableManifest, Operator, TagMatch,
};
use crate::storage::{
    ExportQuery, FileQuery, FilterOperator, Metadata, Storage, TableId, WhereFilter,
};

/// How many files a file mapping brings without an explicit `limit`.
pub const DEFAULT_FILE_LIMIT: u64 = 100;

/// What input mapping did, and the new bookkeeping for `adaptive` mappings.
#[derive(Debug, Default)]
pub struct InputReport {
    pub tables: Vec<(TableId, u64)>,
    pub files: Vec<u64>,
    pub state: InputState,
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
    let mut report = InputReport::default();
    let mut names = HashSet::new();
    for (i, t) in mapping.tables.iter().enumerate() {
        let (id, rows, import) = stage_table(storage, t, i, data, previous, now_ms, &mut names)?;
        report.tables.push((id, rows));
        if let Some(import) = import {
            report.state.tables.push(import);
        }
    }
    for (i, f) in mapping.files.iter().enumerate() {
        let (ids, import) = stage_files(storage, f, i, data, previous, &mut names)?;
        report.files.extend(ids);
        if let Some(import) = import {
            report.state.files.push(import);
        }
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn stage_table(
    storage: &dyn Storage,
    t: &InputTable,
    i: usize,
    data: &Path,
    previous: &InputState,
    now_ms: i64,
    names: &mut HashSet<String>,
) -> Result<(TableId, u64, Option<TableImport>), MappingError> {
    let field = |f: &str| format!("storage.input.tables[{i}].{f}");
    let user = |f: &str, m: String| MappingError::User(format!("{}: {m}", field(f)));
    let id: TableId = t
        .source
        .parse()
        .map_err(|e: crate::storage::StorageError| user("source", e.to_string()))?;
    let info = storage
        .table(&id)?
        .ok_or_else(|| user("source", format!("table {id} does not exist")))?;
    let name = t.destination.clone().unwrap_or_else(|| id.to_string());
    if !plain_name(&name) || name.ends_with(".manifest") {
        return Err(user("destination", format!("{name:?} is not a file name")));
    }
    if !names.insert(name.clone()) {
        return Err(user("destination", format!("{name:?} is mapped twice")));
    }
    let filter = match (&t.where_column, t.where_values.is_empty()) {
        (Some(column), false) => Some(WhereFilter {
            column: column.clone(),
            values: t.where_values.clone(),
            operator: match t.where_operator.unwrap_or_default() {
                Operator::Eq => FilterOperator::Eq,
                Operator::Ne => FilterOperator::Ne,
            },
        }),
        (None, true) => None,
        (Some(_), true) => {
            return Err(user(
                "where_values",
                "where_column needs where_values".into(),
            ));
        }
        (None, false) => {
            return Err(user(
                "where_column",
                "where_values need a where_column".into(),
            ));
        }
    };
    let mut adaptive = false;
    let changed_since_ms = match (&t.changed_since, t.days) {
        (Some(_), Some(_)) => {
            return Err(user(
                "days",
                "use either days or changed_since, not both".into(),
            ));
        }
        (None, Some(d)) => {
            Some(parse_since(&format!("-{d} days"), now_ms).map_err(|m| user("days", m))?)
        }
        (Some(s), None) if s == "adaptive" => {
            adaptive = true;
            match previous.tables.iter().find(|p| p.source == id.to_string()) {
                // Rows changed at the recorded time were exported then: start after it.
                Some(p) => Some(
                    parse_since(&p.last_import_date, now_ms)
                        .map_err(|m| user("changed_since", m))?
                        + 1,
                ),
                None => None,
            }
        }
        (Some(s), None) => Some(parse_since(s, now_ms).map_err(|m| user("changed_since", m))?),
        (None, None) => None,
    };
    let columns = (!t.columns.is_empty()).then(|| t.columns.clone());
    let query = ExportQuery {
        columns: columns.clone(),
        filter,
        changed_since_ms,
        limit: t.limit,
    };
    let path = data.join("in/tables").join(&name);
    let file = File::create(&path).map_err(MappingError::io(&path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let rows = storage.export(&id, &query, &mut out)?;
    out.flush().map_err(MappingError::io(&path))?;

    let manifest = InputTableManifest {
        id: id.to_string(),
        name: id.table().to_owned(),
        primary_key: info.primary_key.clone(),
        columns: columns.unwrap_or_else(|| info.columns.clone()),
        created: iso(info.created_ms),
        last_change_date: iso(info.last_change_ms),
        last_import_date: iso(info.last_import_ms),
        metadata: info.metadata.iter().map(metadata_json).collect(),
        column_metadata: info
            .column_metadata
            .iter()
            .map(|(c, m)| (c.clone(), m.iter().map(metadata_json).collect()))
            .collect(),
    };
    write_manifest(
        &data.join("in/tables").join(format!("{name}.manifest")),
        &manifest,
    )?;
    tracing::info!("input table {id} → in/tables/{name} ({rows} rows)");
    let import = adaptive.then(|| TableImport {
        source: id.to_string(),
        last_import_date: iso_ms(info.last_import_ms),
    });
    Ok((id, rows, import))
}

fn stage_files(
    storage: &dyn Storage,
    f: &InputFile,
    i: usize,
    data: &Path,
    previous: &InputState,
    names: &mut HashSet<String>,
) -> Result<(Vec<u64>, Option<FileImport>), MappingError> {
    let user = |m: String| MappingError::User(format!("storage.input.files[{i}]: {m}"));
    let source_tags = f
        .source
        .as_ref()
        .map(|s| s.tags.clone())
        .unwrap_or_default();
    if f.tags.is_empty() && source_tags.is_empty() && f.file_ids.is_empty() {
        return Err(user("give tags, source.tags or file_ids".into()));
    }
    if !f.tags.is_empty() && !source_tags.is_empty() {
        return Err(user("use either tags or source.tags, not both".into()));
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
    // The key an adaptive mapping's bookkeeping is filed under: its tag filter.
    let mut key: Vec<crate::contract::mapping::TagFilter> = if source_tags.is_empty() {
        f.tags
            .iter()
            .map(|t| crate::contract::mapping::TagFilter {
                name: t.clone(),
                match_: TagMatch::Include,
            })
            .collect()
    } else {
        source_tags.clone()
    };
    key.sort();
    let adaptive = match f.changed_since.as_deref() {
        None => false,
        Some("adaptive") => true,
        Some(other) => {
            return Err(user(format!(
                "changed_since {other:?}: only \"adaptive\" is supported for files"
            )));
        }
    };
    if adaptive {
        if key.is_empty() {
            return Err(user("changed_since adaptive needs tags".into()));
        }
        query.since_id = previous
            .files
            .iter()
            .find(|p| p.tags == key)
            .map(|p| p.last_import_id);
    }
    let found = storage.files(&query)?;
    let mut ids = Vec::new();
    for info in &found {
        let name = format!("{}_{}", info.id, info.name);
        if !plain_name(&name) {
            return Err(user(format!(
                "stored file {} has an unusable name",
                info.id
            )));
        }
        if !names.insert(name.clone()) {
            // Two mappings matched the same file: one copy is enough.
            continue;
        }
        let path = data.join("in/files").join(&name);
        let mut src = storage.open_file(info.id)?;
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
            max_age_days: if info.is_permanent { None } else { Some(15) },
            size_bytes: info.size_bytes,
        };
        write_manifest(
            &data.join("in/files").join(format!("{name}.manifest")),
            &manifest,
        )?;
        ids.push(info.id);
    }
    tracing::info!(
        "input files {:?}: {} files",
        key.iter().map(|t| &t.name).collect::<Vec<_>>(),
        ids.len()
    );
    let import = adaptive.then(|| {
        let last = found
            .iter()
            .map(|f| f.id)
            .max()
            .or(query.since_id)
            .unwrap_or(0);
        FileImport {
            tags: key,
            last_import_id: last,
        }
    });
    Ok((ids, import))
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
