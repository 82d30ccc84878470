//! `berth storage …` and `berth state …`: the operator's view of the project store
//! (`<home>/storage`, or the shared one `--storage`/`--files` name).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use berth::contract::ErrorClass;
use berth::contract::result::EXIT_INTERRUPTED;
use berth::job::Settings;

use super::print;
use berth::storage::{
    Changes, CsvSource, ExportQuery, FileQuery, FileUpload, Provenance, StateKey, Storage,
    StorageError, TableId, TableLoad,
};

/// Who the store records as the writer of what an operator imports.
const OPERATOR: &str = "berth-cli";

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// List tables: id, rows, primary key, last change, columns
    Tables {
        /// Print JSON (everything storage knows, metadata included) instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Load CSV into a table, creating it if needed
    ///
    /// The CSV has a header row, `,` between fields and `"` around fields that need it
    /// (doubled inside). A malformed file is refused with its line, and nothing is loaded.
    /// Without --incremental the table's rows are replaced; a load may add columns but
    /// must have all the table's existing ones.
    #[command(after_help = "Examples:\n  \
        berth storage import in.c-main.orders orders.csv --primary-key id\n  \
        berth storage import in.c-main.orders new.csv.gz --incremental\n  \
        berth storage import in.c-main.events part1.csv part2.csv --columns ts,kind,value")]
    Import(ImportArgs),
    /// Write a table as CSV, with a header row
    Export {
        /// stage.bucket.table, e.g. in.c-main.orders
        table: String,
        /// Write here instead of stdout (atomically: the file appears only when complete)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List stored files, newest first
    Files {
        /// Only files with this tag; repeat to require several
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Store a file and print its new id
    Upload {
        file: PathBuf,
        /// Tag the file; repeat for several
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// The stored name [default: the file's own name]
        #[arg(long)]
        name: Option<String>,
    },
    /// Write a stored file's content
    Download {
        /// The file's id, as `berth storage files` lists it
        id: u64,
        /// Write here instead of stdout (atomically: the file appears only when complete)
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// stage.bucket.table, e.g. in.c-main.orders
    pub table: String,
    /// The CSV file, or the slices of one table in order; a name ending in .gz is gunzipped
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Primary key columns: rows with the same key replace each other (the last wins)
    #[arg(long, value_delimiter = ',', value_name = "COLUMN,...")]
    pub primary_key: Vec<String>,
    /// Add the rows to the table (upsert with a primary key) instead of replacing them
    #[arg(long)]
    pub incremental: bool,
    /// The files have no header row; these are their columns
    #[arg(long, value_delimiter = ',', value_name = "COLUMN,...")]
    pub columns: Option<Vec<String>>,
    /// The field delimiter
    #[arg(long, default_value_t = ',')]
    pub delimiter: char,
    /// The quote character around fields
    #[arg(long, default_value_t = '"')]
    pub enclosure: char,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the state a configuration (or one of its rows) left for its next run, as JSON
    ///
    /// This is what the component finds in /data/in/state.json. With --all, also what berth
    /// keeps beside it for adaptive input mappings: {"component": ..., "storage": ...}.
    Show {
        /// The component id, e.g. keboola.ex-db-mysql
        component: String,
        /// The configuration id
        config: String,
        /// The row id, for the state of one row
        row: Option<String>,
        /// Print the whole stored record, berth's bookkeeping included
        #[arg(long)]
        all: bool,
    },
}

pub fn storage(settings: &Settings, command: StorageCommand) -> anyhow::Result<ExitCode> {
    Ok(match run_storage(settings, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    })
}

pub fn state(settings: &Settings, command: StateCommand) -> anyhow::Result<ExitCode> {
    let StateCommand::Show {
        component,
        config,
        row,
        all,
    } = command;
    let key = StateKey {
        component,
        config,
        row,
    };
    let shown = open(settings).and_then(|s| s.state(&key));
    Ok(match shown {
        Ok(Some(value)) => {
            let shown = if all {
                value
            } else {
                berth::job::component_state(Some(value))
            };
            print::out(serde_json::to_string_pretty(&shown)?);
            ExitCode::SUCCESS
        }
        Ok(None) => {
            print::err(format!("berth: no state is stored for {key}"));
            ExitCode::from(ErrorClass::User.exit_status())
        }
        Err(e) => fail(&e),
    })
}

/// Exit 1 when the input is wrong (the message names the file, line or table), 3 when
/// berth or the store failed, 130 when the operator interrupted it (nothing was written).
pub(super) fn fail(e: &StorageError) -> ExitCode {
    if let StorageError::Output { source, .. } = e
        && source.kind() == io::ErrorKind::BrokenPipe
    {
        // `berth storage export t | head` is not an error.
        return ExitCode::SUCCESS;
    }
    print::err(format!("berth: {}", berth::util::chain(e)));
    if let StorageError::Interrupted(_) = e {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    let class = if e.is_user_error() {
        ErrorClass::User
    } else {
        ErrorClass::Internal
    };
    ExitCode::from(class.exit_status())
}

pub(super) fn open(settings: &Settings) -> Result<Box<dyn Storage>, StorageError> {
    berth::storage::open(&settings.store)
}

fn run_storage(settings: &Settings, command: StorageCommand) -> Result<(), StorageError> {
    let store = open(settings)?;
    let store = store.as_ref();
    match command {
        StorageCommand::Tables { json } => tables(store, json),
        StorageCommand::Import(args) => import(store, args),
        StorageCommand::Export { table, output } => {
            let id: TableId = table.parse()?;
            if store.table(&id)?.is_none() {
                return Err(StorageError::NoSuchTable(id));
            }
            write_output(output.as_deref(), |out| {
                store.export(&id, &ExportQuery::default(), out).map(drop)
            })
        }
        StorageCommand::Files { tags, json } => files(store, tags, json),
        StorageCommand::Upload { file, tags, name } => {
            let name = match name {
                Some(n) => n,
                None => file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            let changes = Changes {
                files: vec![FileUpload {
                    path: file,
                    name,
                    tags,
                    is_permanent: true,
                    is_public: false,
                    is_encrypted: false,
                }],
                ..Changes::default()
            };
            let report = store.apply(&changes)?;
            print::lines(report.files.iter().map(|f| f.id));
            Ok(())
        }
        StorageCommand::Download { id, output } => {
            let mut content = store.open_file(id)?;
            write_output(output.as_deref(), |out| {
                io::copy(&mut content, out)
                    .map(drop)
                    .map_err(|source| StorageError::Io {
                        path: PathBuf::from(format!("file {id}")),
                        source,
                    })
            })
        }
    }
}

fn import(store: &dyn Storage, args: ImportArgs) -> Result<(), StorageError> {
    let destination: TableId = args.table.parse()?;
    let byte = |what: &str, c: char| {
        u8::try_from(c)
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| StorageError::Invalid {
                what: format!("{what} {c:?}"),
                reason: "it must be one ASCII character".into(),
            })
    };
    let source = CsvSource {
        paths: args.files,
        columns: args.columns,
        delimiter: byte("delimiter", args.delimiter)?,
        enclosure: byte("enclosure", args.enclosure)?,
    };
    let mut load = TableLoad::new(
        destination,
        source,
        Provenance {
            component: OPERATOR.into(),
            config: None,
            row: None,
        },
    );
    load.incremental = args.incremental;
    load.primary_key = args.primary_key;
    let report = store.apply(&Changes {
        tables: vec![load],
        ..Changes::default()
    })?;
    print::lines(report.tables.iter().map(|t| {
        let what = if t.created { "created" } else { "loaded" };
        let mut line = format!("{} {what}: {} rows loaded", t.table, t.rows_loaded);
        if t.rows_deleted > 0 {
            line.push_str(&format!(", {} deleted", t.rows_deleted));
        }
        if !t.columns_added.is_empty() {
            line.push_str(&format!(", columns added: {}", t.columns_added.join(", ")));
        }
        line + &format!("; {} rows now", t.rows)
    }));
    Ok(())
}

fn tables(store: &dyn Storage, json: bool) -> Result<(), StorageError> {
    let tables = store.tables()?;
    if json {
        print::out(to_json(&tables));
        return Ok(());
    }
    let width = tables
        .iter()
        .map(|t| t.id.to_string().len())
        .max()
        .unwrap_or(5)
        .max(5);
    let header = format!(
        "{:<width$}  {:>10}  {:<16}  {:<20}  COLUMNS",
        "TABLE", "ROWS", "PRIMARY KEY", "LAST CHANGE (UTC)"
    );
    let rows = tables.iter().map(|t| {
        format!(
            "{:<width$}  {:>10}  {:<16}  {:<20}  {}",
            t.id.to_string(),
            t.rows,
            t.primary_key.join(","),
            utc(t.last_change_ms),
            t.columns.join(",")
        )
    });
    print::lines(std::iter::once(header).chain(rows));
    Ok(())
}

fn files(store: &dyn Storage, tags: Vec<String>, json: bool) -> Result<(), StorageError> {
    let files = store.files(&FileQuery {
        tags_all: tags,
        ..FileQuery::default()
    })?;
    if json {
        print::out(to_json(&files));
        return Ok(());
    }
    let width = files.iter().map(|f| f.name.len()).max().unwrap_or(4).max(4);
    let header = format!(
        "{:>8}  {:<width$}  {:>10}  {:<20}  TAGS",
        "ID", "NAME", "SIZE", "CREATED (UTC)"
    );
    let rows = files.iter().map(|f| {
        format!(
            "{:>8}  {:<width$}  {:>10}  {:<20}  {}",
            f.id,
            f.name,
            berth::util::human_bytes(f.size_bytes),
            utc(f.created_ms),
            f.tags.join(", ")
        )
    });
    print::lines(std::iter::once(header).chain(rows));
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Runs `write` into stdout, or into a temporary file beside `path` that replaces `path`
/// only when `write` succeeded: an interrupted export leaves no half file behind. (Not
/// fsynced: this is a copy for the operator, the store still has the original.)
fn write_output(
    path: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let Some(path) = path else {
        let mut out = io::stdout().lock();
        write(&mut out)?;
        return out.flush().map_err(|source| StorageError::Io {
            path: PathBuf::from("stdout"),
            source,
        });
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.unwrap_or_default(),
        berth::util::random_hex(4)
    ));
    let io_err = |source| StorageError::Io {
        path: path.to_owned(),
        source,
    };
    let result = File::create(&tmp).map_err(io_err).and_then(|file| {
        let mut out = io::BufWriter::with_capacity(berth::util::IO_BUFFER, file);
        write(&mut out)?;
        out.into_inner()
            .map(drop)
            .map_err(|e| io_err(e.into_error()))
    });
    match result.and_then(|()| fs::rename(&tmp, path).map_err(io_err)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// `2026-05-01 12:34:56` for unix milliseconds, UTC.
pub(super) fn utc(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_767_225_599_999), "2025-12-31 23:59:59");
    }
}
