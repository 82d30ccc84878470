//! What every backend checks before it writes, and what it reads the same way: a change's
//! form (before a byte is copied or a lock taken), a load's source files, and how the
//! columns a load names resolve against a table's.

use std::collections::HashSet;
use std::path::Path;

use super::csv_reader::{CsvFile, check_column_names};
use super::{
    Changes, CsvProblem, CsvSource, ExportQuery, FileUpload, MAX_COLUMNS, StateKey, StorageError,
    TableId, TableLoad, WhereFilter,
};

/// Refuses what is wrong on its face before a byte is copied or a lock taken.
pub(crate) fn check_changes(changes: &Changes) -> Result<(), StorageError> {
    for load in &changes.tables {
        check_load(load)?;
    }
    for upload in &changes.files {
        check_upload(upload)?;
    }
    for (key, _) in &changes.states {
        check_state_key(key)?;
    }
    for (key, _) in &changes.state_versions {
        check_state_key(key)?;
    }
    for (id, tags) in &changes.file_tags {
        check_tags(&format!("tags added to file {id}"), tags)?;
    }
    if let Some(job) = &changes.job
        && job.id.is_empty()
    {
        return Err(StorageError::Invalid {
            what: "job record".into(),
            reason: "the job id is empty".into(),
        });
    }
    Ok(())
}

/// Checks what can be checked about a load before any file is opened.
pub(crate) fn check_load(load: &TableLoad) -> Result<(), StorageError> {
    let invalid = |reason: String| StorageError::InvalidLoad {
        table: load.destination.clone(),
        reason,
    };
    let src = &load.source;
    if src.paths.is_empty() {
        return Err(invalid("no source files".into()));
    }
    for (what, b) in [("delimiter", src.delimiter), ("enclosure", src.enclosure)] {
        if !b.is_ascii() || b == b'\n' || b == b'\r' {
            return Err(invalid(format!(
                "the {what} must be one ASCII character other than a line end, not {:?}",
                char::from(b)
            )));
        }
    }
    if src.delimiter == src.enclosure {
        return Err(invalid(
            "the delimiter and the enclosure are the same".into(),
        ));
    }
    if let Some(columns) = &src.columns {
        if columns.is_empty() {
            return Err(invalid(
                "the list of columns for headless CSV is empty".into(),
            ));
        }
        check_column_names(columns)
            .map_err(|p| invalid(format!("columns given for headless CSV: {p}")))?;
    }
    let mut seen = HashSet::new();
    for c in &load.primary_key {
        if !seen.insert(c) {
            return Err(invalid(format!("primary key column {c:?} is listed twice")));
        }
    }
    if load.provenance.component.is_empty() {
        return Err(invalid("the load names no component".into()));
    }
    Ok(())
}

pub(crate) fn check_upload(upload: &FileUpload) -> Result<(), StorageError> {
    let invalid = |reason: &str| StorageError::Invalid {
        what: format!("file name {:?} for {}", upload.name, upload.path.display()),
        reason: reason.to_owned(),
    };
    crate::util::plain_name(&upload.name).map_err(invalid)?;
    check_tags(&format!("tags of {}", upload.path.display()), &upload.tags)
}

/// Tags are never empty.
pub(crate) fn check_tags(what: &str, tags: &[String]) -> Result<(), StorageError> {
    if tags.iter().any(String::is_empty) {
        return Err(StorageError::Invalid {
            what: what.to_owned(),
            reason: "a tag cannot be empty".into(),
        });
    }
    Ok(())
}

pub(crate) fn check_state_key(key: &StateKey) -> Result<(), StorageError> {
    let reason = if key.component.is_empty() {
        "the component id is empty"
    } else if key.config.is_empty() {
        "the configuration id is empty"
    } else if key.row.as_deref() == Some("") {
        "the row id is empty"
    } else {
        return Ok(());
    };
    Err(StorageError::Invalid {
        what: format!("state key {key}"),
        reason: reason.into(),
    })
}

/// Opens one source file and finds its columns: the header's, or those the load gives
/// for headless CSV.
pub(crate) fn open_source(
    src: &CsvSource,
    path: &Path,
) -> Result<(CsvFile, Vec<String>), StorageError> {
    let mut file = CsvFile::open(path, src.delimiter, src.enclosure)?;
    let columns = match &src.columns {
        Some(columns) => {
            file.set_width(columns.len());
            columns.clone()
        }
        None => file.read_header()?,
    };
    Ok((file, columns))
}

/// Opens a slice after the first: with headers, they must all be the same.
pub(crate) fn open_slice(
    src: &CsvSource,
    path: &Path,
    csv_columns: &[String],
) -> Result<CsvFile, StorageError> {
    let (file, columns) = open_source(src, path)?;
    if src.columns.is_none() && columns != csv_columns {
        return Err(StorageError::Csv {
            path: path.to_owned(),
            line: 1,
            problem: CsvProblem::HeaderDiffers {
                first: src.paths[0].clone(),
            },
        });
    }
    Ok(file)
}

/// Positions (1-based, `c<pos>`) of `names` among `columns`; `Err` names the first missing.
pub(crate) fn positions(columns: &[String], names: &[String]) -> Result<Vec<usize>, String> {
    let index: std::collections::HashMap<&str, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i + 1))
        .collect();
    names
        .iter()
        .map(|n| index.get(n.as_str()).copied().ok_or_else(|| n.clone()))
        .collect()
}

/// The columns of the CSV that a table with `columns` lacks, in CSV order. A load may
/// add columns but never drops any: the CSV must have every column of the table.
pub(crate) fn columns_to_add(
    load: &TableLoad,
    columns: &[String],
    csv_columns: &[String],
) -> Result<Vec<String>, StorageError> {
    let present: HashSet<&str> = csv_columns.iter().map(String::as_str).collect();
    let missing: Vec<String> = columns
        .iter()
        .filter(|c| !present.contains(c.as_str()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(StorageError::MissingColumns {
            table: load.destination.clone(),
            path: load.source.paths[0].clone(),
            missing,
        });
    }
    let known: HashSet<&str> = columns.iter().map(String::as_str).collect();
    let added: Vec<String> = csv_columns
        .iter()
        .filter(|c| !known.contains(c.as_str()))
        .cloned()
        .collect();
    if columns.len() + added.len() > MAX_COLUMNS {
        return Err(StorageError::InvalidLoad {
            table: load.destination.clone(),
            reason: format!(
                "adding {} columns would give it more than {MAX_COLUMNS}",
                added.len()
            ),
        });
    }
    Ok(added)
}

/// The columns a load names, resolved to their positions (`c<pos>`).
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// The key the table has after the load.
    pub primary_key: Vec<String>,
    pub pk_positions: Vec<usize>,
    /// The key the table had, and its positions: what it keeps when its rows are not
    /// unique on the new one (see [`Plan::keep_key`]).
    before: (Vec<String>, Vec<usize>),
    /// The filter of an incremental load's `delete_where`, and its column's position.
    pub delete_where: Option<(usize, &'a WhereFilter)>,
}

/// Resolves every column `load` names against the table's `columns` (every column of the
/// CSV is one by now); `before_key` is the key the table had, `existing` whether it
/// existed before the load.
pub(crate) fn plan<'a>(
    load: &'a TableLoad,
    columns: &[String],
    before_key: &[String],
    existing: bool,
) -> Result<Plan<'a>, StorageError> {
    let invalid = |reason: String| StorageError::InvalidLoad {
        table: load.destination.clone(),
        reason,
    };
    let before_positions = positions(columns, before_key)
        .map_err(|c| invalid(format!("its primary key column {c:?} is missing")))?;
    let before = (before_key.to_vec(), before_positions);
    let (primary_key, pk_positions) = match new_key(load, before_key) {
        None => before.clone(),
        Some(key) => match positions(columns, &key) {
            Ok(p) => {
                if existing {
                    tracing::warn!(
                        "modifying the primary key of table {} from ({}) to ({})",
                        load.destination,
                        before_key.join(", "),
                        key.join(", ")
                    );
                }
                (key, p)
            }
            // As the original: a key that cannot be made is a warning; the table keeps
            // the one it has.
            Err(c) if existing => {
                tracing::warn!(
                    "cannot change the primary key of table {} to ({}): {c:?} is not a \
                     column; it keeps ({})",
                    load.destination,
                    key.join(", "),
                    before_key.join(", ")
                );
                before.clone()
            }
            Err(c) => {
                return Err(invalid(format!(
                    "primary key column {c:?} is not a column of {}",
                    load.source.paths[0].display()
                )));
            }
        },
    };
    let delete_where = match &load.delete_where {
        Some(filter) if load.incremental => {
            let pos = positions(columns, std::slice::from_ref(&filter.column))
                .map_err(|c| invalid(format!("delete_where column {c:?} is not a column")))?;
            Some((pos[0], filter))
        }
        _ => None,
    };
    if let Some(column) = load.column_metadata.keys().find(|c| !columns.contains(c)) {
        return Err(invalid(format!(
            "column_metadata names {column:?}, which is not a column"
        )));
    }
    Ok(Plan {
        primary_key,
        pk_positions,
        before,
        delete_where,
    })
}

impl Plan<'_> {
    /// Whether the load changes the table's key.
    pub(crate) fn changes_key(&self) -> bool {
        self.primary_key != self.before.0
    }

    /// Gives up the new key for the one the table had: its rows are not unique on the
    /// new one (warned about as the original warns, and the load goes on).
    pub(crate) fn keep_key(&mut self, table: &TableId) {
        tracing::warn!(
            "cannot change the primary key of table {table} to ({}): its rows are not unique \
             on it; it keeps ({})",
            self.primary_key.join(", "),
            self.before.0.join(", ")
        );
        (self.primary_key, self.pk_positions) = self.before.clone();
    }
}

/// The key a load asks for when it differs from the table's `before` key (as a set of
/// columns, as the original compares them); `None` when it keeps the table's.
fn new_key(load: &TableLoad, before: &[String]) -> Option<Vec<String>> {
    if load.primary_key.is_empty() && !load.exact_primary_key {
        return None;
    }
    let same = load.primary_key.len() == before.len()
        && load.primary_key.iter().all(|c| before.contains(c));
    (!same).then(|| load.primary_key.clone())
}

/// Tables that a set of changes writes, each once, in a fixed order (their ids sorted):
/// the order in which a shared backend locks them, so that two commits never wait for
/// each other in a cycle.
pub(crate) fn tables_in_lock_order(changes: &Changes) -> Vec<&TableId> {
    let mut ids: Vec<&TableId> = changes.tables.iter().map(|l| &l.destination).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The names of the columns to export, in export order, and their positions among the
/// table's `columns`.
pub(crate) fn select_columns(
    id: &TableId,
    columns: &[String],
    query: &ExportQuery,
) -> Result<(Vec<String>, Vec<usize>), StorageError> {
    let names = match &query.columns {
        Some(c) if !c.is_empty() => c.clone(),
        _ => columns.to_vec(),
    };
    let selected = positions(columns, &names).map_err(|c| no_such_column(id, c))?;
    let mut seen = HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(StorageError::Invalid {
            what: format!("export of {id}"),
            reason: format!("column {dup:?} is selected twice"),
        });
    }
    Ok((names, selected))
}

pub(crate) fn no_such_column(id: &TableId, column: String) -> StorageError {
    StorageError::NoSuchColumn {
        table: id.clone(),
        column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_name_the_first_missing_column() {
        let columns: Vec<String> = ["id", "v", "w"].map(String::from).to_vec();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(positions(&columns, &names(&["w", "id"])), Ok(vec![3, 1]));
        assert_eq!(
            positions(&columns, &names(&["v", "x", "y"])),
            Err("x".to_owned())
        );
    }
}
