//! Output mapping (contract §4, §6): what a component wrote to `/data/out`, turned into the
//! table loads and file uploads its job will commit.
//!
//! Everything that lands in `out/tables` and `out/files` is taken, not only what is mapped.
//! Nothing outside the data folder is ever read: `out/` is the container's, so it is walked
//! from directory handles ([`confined`]) and no link is followed — a symlink anywhere in
//! `out/` (`out/tables` itself included) is refused, as are FIFOs, sockets and devices.
//! What is taken is moved (renamed from handle to handle) into the job's staging
//! directory, so it survives the removal of the row's data folder until the job commits;
//! storage then reads it by path, which is safe there: the staging directory is berth's own,
//! outside `/data`, and what arrived in it is checked again.

use std::collections::{BTreeMap, BTreeSet, HashMap, btree_map};
use std::fs;
use std::path::{Path, PathBuf};

use super::MappingError;
use crate::confined::{self, ConfinedError, Kind};
use crate::contract::mapping::{
    DeleteWhere, FileSettings, KeyValue, Operator, OutputMapping, SchemaColumn, TableSettings,
};
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
    /// Tags for input files the row processed (`processed_tags`), for
    /// [`Changes::file_tags`](crate::storage::Changes); applied only when the job succeeds.
    pub file_tags: Vec<(u64, Vec<String>)>,
}

/// The largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Reads `out` (the data folder's `out/`), applies `mapping`, and moves what it takes into
/// `staging`. `failed`: the job failed, so only `write_always` tables are wanted and a
/// mapped table the component did not write is no error.
///
/// The data folder (`out`'s parent) is trusted; `out` and everything in it is not.
pub fn collect_outputs(
    out: &Path,
    mapping: &OutputMapping,
    ctx: &OutputContext<'_>,
    staging: &Path,
    failed: bool,
) -> Result<StagedOutputs, MappingError> {
    let out = open_out(out)?;
    let default_bucket = default_bucket(mapping, ctx)?;
    let mut stager = Stager {
        root: staging,
        dirs: BTreeMap::new(),
    };
    let tables = collect_tables(
        out.as_ref(),
        mapping,
        ctx,
        default_bucket.as_deref(),
        &mut stager,
        failed,
    )?;
    if failed {
        return Ok(StagedOutputs {
            tables,
            ..StagedOutputs::default()
        });
    }
    let files = collect_files(out.as_ref(), mapping, ctx, &mut stager)?;
    Ok(StagedOutputs {
        tables,
        files,
        file_tags: Vec::new(),
    })
}

/// Opens `out` beneath the data folder; `None` when the component removed it.
fn open_out(out: &Path) -> Result<Option<confined::Dir>, MappingError> {
    optional(super::open_beneath_parent(out))
}

/// What was opened, or `None` when it does not exist.
fn optional<T>(opened: Result<T, ConfinedError>) -> Result<Option<T>, MappingError> {
    match opened {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `out/tables`: every table, with its manifest and mapping merged, staged.
fn collect_tables(
    out: Option<&confined::Dir>,
    mapping: &OutputMapping,
    ctx: &OutputContext<'_>,
    default_bucket: Option<&str>,
    stager: &mut Stager<'_>,
    failed: bool,
) -> Result<Vec<StagedTable>, MappingError> {
    let listing = scan(out, "tables")?;
    if !failed {
        let sources = mapping.tables.iter().map(|t| t.source.as_str());
        listing.require(sources, "output table source")?;
    }
    let mappings: HashMap<&str, &TableSettings> = mapping
        .tables
        .iter()
        .map(|t| (t.source.as_str(), &t.settings))
        .collect();
    let mut staged = Vec::new();
    for (name, kind) in &listing.data {
        let table = Table {
            name,
            kind: *kind,
            manifest: listing.manifest(name)?,
            mapped: mappings.get(name.as_str()).copied(),
        };
        let Some((mut load, write_always)) = plan_table(table, ctx, default_bucket, failed)? else {
            continue;
        };
        let staged_path = stager.stage("tables", &listing, name, *kind)?;
        load.source.paths = match kind {
            Kind::Dir => slices(&staged_path, &listing.shown(name))?,
            _ => vec![staged_path],
        };
        staged.push(StagedTable { load, write_always });
    }
    Ok(staged)
}

/// One entry of `out/tables`, with what its manifest and the mapping say about it.
struct Table<'a> {
    name: &'a str,
    kind: Kind,
    manifest: TableSettings,
    mapped: Option<&'a TableSettings>,
}

/// The load of `table` (without its paths, known once it is staged) and whether it is
/// written even when the job fails; `None` when the job failed and it is not.
fn plan_table(
    table: Table<'_>,
    ctx: &OutputContext<'_>,
    default_bucket: Option<&str>,
    failed: bool,
) -> Result<Option<(TableLoad, bool)>, MappingError> {
    let name = table.name;
    let settings = normalize(merge_table(table.manifest, table.mapped), name)?;
    let write_always = settings.write_always.unwrap_or(false);
    if failed && !write_always {
        return Ok(None);
    }
    if table.kind == Kind::Dir && settings.columns.is_none() {
        return Err(MappingError::User(format!(
            "out/tables/{name} is a sliced table: its manifest or mapping must give columns"
        )));
    }
    let destination = resolve_destination(name, table.mapped, &settings, default_bucket)?;
    let load = table_load(name, destination, &settings, ctx)?;
    Ok(Some((load, write_always)))
}

/// The load of table `name` (without its paths, known once it is staged).
fn table_load(
    name: &str,
    destination: TableId,
    settings: &TableSettings,
    ctx: &OutputContext<'_>,
) -> Result<TableLoad, MappingError> {
    let source = CsvSource {
        paths: Vec::new(),
        columns: settings.columns.clone(),
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
    // As the original: the key a table gets is exactly this one (none removes it),
    // blanks dropped and repeats folded.
    load.primary_key = normalize_key(settings.primary_key.as_deref().unwrap_or_default(), name);
    load.exact_primary_key = true;
    load.delete_where = delete_where(settings, name)?;
    load.metadata = entries(settings.metadata.as_deref().unwrap_or_default());
    load.column_metadata = settings
        .column_metadata
        .as_ref()
        .map(|m| m.iter().map(|(c, kv)| (c.clone(), entries(kv))).collect())
        .unwrap_or_default();
    load.description = settings.description.clone();
    Ok(load)
}

/// A key's columns trimmed, blank ones dropped (with a warning) and repeats folded, as
/// the original's `PrimaryKeyHelper` does.
fn normalize_key(key: &[String], name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(key.len());
    for column in key {
        let column = column.trim();
        if column.is_empty() {
            tracing::warn!("out/tables/{name}: found an empty column name in the primary key");
        } else if !out.iter().any(|c| c == column) {
            out.push(column.to_owned());
        }
    }
    out
}

/// The rows an incremental load deletes first. As the original: a column needs values
/// (an empty list would delete nothing, or with `ne` everything); values without a
/// column filter nothing.
fn delete_where(settings: &TableSettings, name: &str) -> Result<Option<WhereFilter>, MappingError> {
    let Some(column) = &settings.delete_where_column else {
        return Ok(None);
    };
    match settings
        .delete_where_values
        .as_ref()
        .filter(|v| !v.is_empty())
    {
        Some(values) => Ok(Some(WhereFilter {
            column: column.clone(),
            values: values.clone(),
            operator: settings.delete_where_operator.unwrap_or_default(),
        })),
        None => Err(MappingError::User(format!(
            "out/tables/{name}: when delete_where_column is set, delete_where_values is \
             required"
        ))),
    }
}

/// `out/files`: every file, with its mapping or else its manifest, staged.
fn collect_files(
    out: Option<&confined::Dir>,
    mapping: &OutputMapping,
    ctx: &OutputContext<'_>,
    stager: &mut Stager<'_>,
) -> Result<Vec<FileUpload>, MappingError> {
    let listing = scan(out, "files")?;
    listing.require(
        mapping.files.iter().map(|f| f.source.as_str()),
        "output file",
    )?;
    let mappings: HashMap<&str, &FileSettings> = mapping
        .files
        .iter()
        .map(|f| (f.source.as_str(), &f.settings))
        .collect();
    let mut files = Vec::new();
    for (name, kind) in &listing.data {
        if *kind == Kind::Dir {
            return Err(MappingError::User(format!(
                "out/files/{name} is a directory: only files can be uploaded"
            )));
        }
        // The mapping, when there is one, replaces the manifest entirely (no merge).
        let settings = match mappings.get(name.as_str()) {
            Some(s) => (*s).clone(),
            None => listing.manifest(name)?,
        };
        let path = stager.stage("files", &listing, name, Kind::File)?;
        files.push(FileUpload {
            path,
            name: name.clone(),
            tags: file_tags(&settings, ctx),
            is_permanent: settings.is_permanent.unwrap_or(false),
            is_public: settings.is_public.unwrap_or(false),
            is_encrypted: settings.is_encrypted.unwrap_or(true),
        });
    }
    Ok(files)
}

/// The file's own tags, then the system tags of contract §4.
fn file_tags(settings: &FileSettings, ctx: &OutputContext<'_>) -> Vec<String> {
    let mut tags = settings.tags.clone();
    tags.push(format!("componentId: {}", ctx.component_id));
    if let Some(c) = ctx.config_id {
        tags.push(format!("configurationId: {c}"));
    }
    if let Some(r) = ctx.row_id {
        tags.push(format!("configurationRowId: {r}"));
    }
    tags.push(format!("runId: {}", ctx.run_id));
    tags
}

/// The job's staging directory, with a handle per kind of output (each created on first
/// use: most runs stage nothing, and every directory costs on the critical path).
struct Stager<'a> {
    root: &'a Path,
    dirs: BTreeMap<&'static str, confined::Dir>,
}

impl Stager<'_> {
    /// Moves the entry `name` of `from` into the staging directory `sub`, and returns its
    /// new path. What arrived is checked again: the staging directory is out of the
    /// container's reach, so what is checked there is what storage will read.
    fn stage(
        &mut self,
        sub: &'static str,
        from: &Listing,
        name: &str,
        kind: Kind,
    ) -> Result<PathBuf, MappingError> {
        let into = match self.dirs.entry(sub) {
            btree_map::Entry::Occupied(e) => e.into_mut(),
            btree_map::Entry::Vacant(e) => {
                let path = self.root.join(sub);
                fs::create_dir_all(&path).map_err(MappingError::io(&path))?;
                e.insert(confined::Dir::open(&path)?)
            }
        };
        let Some(dir) = &from.dir else {
            return Err(MappingError::User(format!(
                "{} disappeared",
                from.shown(name).display()
            )));
        };
        dir.rename_to(name, into, name)?;
        let found = into.kind_of(name)?;
        if found != kind {
            return Err(MappingError::User(format!(
                "{} changed from {kind} to {found} while it was taken",
                from.shown(name).display()
            )));
        }
        Ok(into.path().join(name))
    }
}

/// A directory of outputs (`out/tables` or `out/files`): its data entries by name, and the
/// names of the data that have a manifest.
struct Listing {
    /// `None` when the directory does not exist.
    dir: Option<confined::Dir>,
    sub: &'static str,
    data: BTreeMap<String, Kind>,
    manifests: BTreeSet<String>,
}

impl Listing {
    /// How `name` is shown in errors: `out/tables/name`.
    fn shown(&self, name: &str) -> PathBuf {
        Path::new("out").join(self.sub).join(name)
    }

    /// The manifest of `name`, or the defaults when it has none.
    fn manifest<T: serde::de::DeserializeOwned + Default>(
        &self,
        name: &str,
    ) -> Result<T, MappingError> {
        match &self.dir {
            Some(dir) if self.manifests.contains(name) => {
                read_manifest(dir, &format!("{name}.manifest"))
            }
            _ => Ok(T::default()),
        }
    }

    /// Every mapped source must have been written.
    fn require<'s>(
        &self,
        sources: impl Iterator<Item = &'s str>,
        what: &str,
    ) -> Result<(), MappingError> {
        for source in sources {
            if !self.data.contains_key(source) {
                return Err(MappingError::User(format!(
                    "{what} {source:?} not found: the component did not write {}",
                    self.shown(source).display()
                )));
            }
        }
        Ok(())
    }
}

/// Lists `out/<sub>`: data entries and manifests, refusing symlinks, special files, names
/// that are not UTF-8 and manifests without their data.
fn scan(out: Option<&confined::Dir>, sub: &'static str) -> Result<Listing, MappingError> {
    let mut listing = Listing {
        dir: None,
        sub,
        data: BTreeMap::new(),
        manifests: BTreeSet::new(),
    };
    let Some(dir) = out
        .map(|out| optional(out.open_dir(sub)))
        .transpose()?
        .flatten()
    else {
        return Ok(listing);
    };
    for entry in dir.entries()? {
        let shown = dir.shown(&entry.name);
        if ignored(&entry, sub) {
            tracing::info!("ignoring {} (as the original runner does)", shown.display());
            continue;
        }
        let Some(name) = entry.name.to_str() else {
            return Err(ConfinedError::BadName {
                path: shown,
                reason: "file names must be UTF-8",
            }
            .into());
        };
        match (entry.kind, name.strip_suffix(".manifest")) {
            (Kind::File, Some(base)) => {
                listing.manifests.insert(base.to_owned());
            }
            (Kind::Dir, Some(_)) => {
                return Err(MappingError::User(format!(
                    "{} is not a file",
                    shown.display()
                )));
            }
            (Kind::File | Kind::Dir, None) => {
                listing.data.insert(name.to_owned(), entry.kind);
            }
            (kind, _) => return Err(ConfinedError::NotRegular { path: shown, kind }.into()),
        }
    }
    if let Some(base) = listing
        .manifests
        .iter()
        .find(|b| !listing.data.contains_key(*b))
    {
        return Err(MappingError::User(format!(
            "orphaned manifest {}: there is no {}",
            dir.shown(format!("{base}.manifest")).display(),
            dir.shown(base).display()
        )));
    }
    listing.dir = Some(dir);
    Ok(listing)
}

/// What the original's listing (Symfony's Finder) leaves out of `out/tables` and
/// `out/files`, and of a sliced table's folder (`sub` ""): hidden entries (`.gitkeep`, an
/// editor's swap file), and folders where only files are read.
fn ignored(entry: &confined::Entry, sub: &str) -> bool {
    entry.name.as_encoded_bytes().starts_with(b".") || (entry.kind == Kind::Dir && sub != "tables")
}

/// The slices of a sliced table, staged at `staged` (berth's own, checked to be a
/// directory), in name order; only regular files (hidden ones and folders are ignored, as
/// there).
fn slices(staged: &Path, shown: &Path) -> Result<Vec<PathBuf>, MappingError> {
    let dir = confined::Dir::open(staged)?;
    let mut paths = Vec::new();
    for entry in dir.entries()? {
        if ignored(&entry, "") {
            continue;
        }
        if entry.kind != Kind::File {
            return Err(MappingError::User(format!(
                "{}/{}: slices must be regular files",
                shown.display(),
                entry.name.to_string_lossy()
            )));
        }
        paths.push(staged.join(&entry.name));
    }
    if paths.is_empty() {
        return Err(MappingError::User(format!(
            "sliced table {} has no slices",
            shown.display()
        )));
    }
    Ok(paths)
}

/// Reads and parses the manifest `name` of `dir`, naming it as the component sees it.
fn read_manifest<T: serde::de::DeserializeOwned>(
    dir: &confined::Dir,
    name: &str,
) -> Result<T, MappingError> {
    let shown = dir.shown(name);
    let bytes = match dir.read_to_end(name, MAX_MANIFEST_BYTES) {
        Ok(b) => b,
        Err(ConfinedError::TooLarge { .. }) => {
            return Err(MappingError::User(format!(
                "invalid manifest {}: larger than 16 MB",
                shown.display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    parse_manifest(&bytes, &shown)
}

/// Parses the manifest `bytes`, shown as `shown` in errors.
fn parse_manifest<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    shown: &Path,
) -> Result<T, MappingError> {
    let shown = shown.display();
    let de = &mut serde_json::Deserializer::from_slice(bytes);
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

/// Mapping values win over manifest values (contract §4), as the original runner merges
/// them: a mapping value that is empty or equal to its default (`incremental: false`,
/// `delimiter: ","`, …) leaves the manifest's in force, but a `primary_key` the mapping
/// sets wins even when empty (`[]`: no key); metadata merges by key and the schema by
/// column name.
fn merge_table(manifest: TableSettings, mapping: Option<&TableSettings>) -> TableSettings {
    let Some(m) = mapping.cloned() else {
        return manifest;
    };
    let text = |v: Option<String>, default: &str| v.filter(|s| !s.is_empty() && s != default);
    let list = |v: Option<Vec<String>>| v.filter(|l| !l.is_empty());
    let yes = |v: Option<bool>| v.filter(|b| *b);
    TableSettings {
        destination: text(m.destination, "").or(manifest.destination),
        incremental: yes(m.incremental).or(manifest.incremental),
        primary_key: m.primary_key.or(manifest.primary_key),
        columns: list(m.columns).or(manifest.columns),
        delimiter: text(m.delimiter, ",").or(manifest.delimiter),
        enclosure: text(m.enclosure, "\"").or(manifest.enclosure),
        delete_where_column: text(m.delete_where_column, "").or(manifest.delete_where_column),
        delete_where_values: list(m.delete_where_values).or(manifest.delete_where_values),
        delete_where_operator: m
            .delete_where_operator
            .filter(|o| *o != Operator::Eq)
            .or(manifest.delete_where_operator),
        metadata: merge_kv(manifest.metadata, m.metadata.as_ref()),
        column_metadata: merge_column_kv(manifest.column_metadata, m.column_metadata),
        write_always: yes(m.write_always).or(manifest.write_always),
        description: text(m.description, "").or(manifest.description),
        manifest_type: m.manifest_type.or(manifest.manifest_type),
        has_header: yes(m.has_header).or(manifest.has_header),
        schema: merge_schema(manifest.schema, m.schema),
        table_metadata: match (manifest.table_metadata, m.table_metadata) {
            (None, None) => None,
            (a, b) => Some(a.into_iter().chain(b).flatten().collect()),
        },
        tags: list(m.tags).or(manifest.tags),
        distribution_key: list(m.distribution_key).or(manifest.distribution_key),
        delete_where: m
            .delete_where
            .filter(|l| !l.is_empty())
            .or(manifest.delete_where),
        unload_strategy: text(m.unload_strategy, "").or(manifest.unload_strategy),
        deduplication_strategy: text(m.deduplication_strategy, "")
            .or(manifest.deduplication_strategy),
    }
}

fn merge_column_kv(
    base: Option<BTreeMap<String, Vec<KeyValue>>>,
    over: Option<BTreeMap<String, Vec<KeyValue>>>,
) -> Option<BTreeMap<String, Vec<KeyValue>>> {
    if base.is_none() && over.is_none() {
        return None;
    }
    let mut merged = base.unwrap_or_default();
    for (col, kv) in over.unwrap_or_default() {
        let before = merged.remove(&col);
        merged.insert(col, merge_kv(before, Some(&kv)).unwrap_or_default());
    }
    Some(merged)
}

/// The mapping's schema columns replace the manifest's of the same name; new ones follow.
fn merge_schema(
    base: Option<Vec<SchemaColumn>>,
    over: Option<Vec<SchemaColumn>>,
) -> Option<Vec<SchemaColumn>> {
    let Some(over) = over.filter(|o| !o.is_empty()) else {
        return base;
    };
    let mut merged = base.unwrap_or_default();
    for col in over {
        match merged.iter_mut().find(|c| c.name == col.name) {
            Some(existing) => *existing = col,
            None => merged.push(col),
        }
    }
    Some(merged)
}

/// Turns the current manifest format into the settings a load reads: `schema` gives the
/// columns (when the CSV has no header), the primary key and the columns' metadata (types
/// as `KBC.datatype.*`), `table_metadata` the table's metadata, and the list form of
/// `delete_where` the filter. An empty `delete_where_column` means no filter.
fn normalize(mut s: TableSettings, name: &str) -> Result<TableSettings, MappingError> {
    if s.delete_where_column.as_deref() == Some("") {
        s.delete_where_column = None;
        s.delete_where_values = None;
    }
    if s.has_header == Some(true) {
        s.columns = None;
    }
    if let Some(schema) = s.schema.take().filter(|c| !c.is_empty()) {
        if s.has_header != Some(true) && s.columns.is_none() {
            s.columns = Some(schema.iter().map(|c| c.name.clone()).collect());
        }
        let key: Vec<String> = schema
            .iter()
            .filter(|c| c.primary_key == Some(true))
            .map(|c| c.name.clone())
            .collect();
        if s.primary_key.as_ref().is_none_or(Vec::is_empty) && !key.is_empty() {
            s.primary_key = Some(key);
        }
        let typed: BTreeMap<String, Vec<KeyValue>> = schema
            .iter()
            .map(|c| (c.name.clone(), schema_metadata(c)))
            .filter(|(_, kv)| !kv.is_empty())
            .collect();
        s.column_metadata = merge_column_kv(Some(typed), s.column_metadata.take());
    }
    if let Some(table) = s.table_metadata.take() {
        let kv: Vec<KeyValue> = table
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect();
        s.metadata = merge_kv(s.metadata.take(), Some(&kv));
    }
    if let Some(rules) = s.delete_where.take().filter(|r| !r.is_empty()) {
        if s.delete_where_column.is_some() {
            return Err(MappingError::User(format!(
                "out/tables/{name}: use delete_where or delete_where_column, not both"
            )));
        }
        let (column, values, operator) = delete_where_rule(&rules, name)?;
        s.delete_where_column = Some(column);
        s.delete_where_values = Some(values);
        s.delete_where_operator = operator;
    }
    Ok(s)
}

/// The one rule of the list form of `delete_where` berth can apply: one filter on a set
/// of values. Time ranges and values read from a workspace or another table need a
/// backend that berth does not have.
fn delete_where_rule(
    rules: &[DeleteWhere],
    name: &str,
) -> Result<(String, Vec<String>, Option<Operator>), MappingError> {
    let unsupported = |what: &str| {
        MappingError::User(format!(
            "out/tables/{name}: delete_where: {what} is not supported by berth (one rule with \
             one where_filters entry with values_from_set is)"
        ))
    };
    let [rule] = rules else {
        return Err(unsupported("more than one rule"));
    };
    if rule.changed_since.is_some() || rule.changed_until.is_some() {
        return Err(unsupported("changed_since/changed_until"));
    }
    let [filter] = rule.where_filters.as_slice() else {
        return Err(unsupported("a rule without exactly one filter"));
    };
    let Some(values) = &filter.values_from_set else {
        return Err(unsupported("values_from_workspace/values_from_storage"));
    };
    Ok((filter.column.clone(), values.clone(), filter.operator))
}

/// A schema column's types and description as the column metadata Keboola's Storage
/// keeps for untyped tables (`KBC.datatype.basetype`, `.type`, `.length`, `.default`,
/// `.nullable`, `KBC.description`), then the column's own metadata.
fn schema_metadata(c: &SchemaColumn) -> Vec<KeyValue> {
    let mut kv = Vec::new();
    let mut put = |key: &str, value: String| {
        kv.retain(|e: &KeyValue| e.key != key);
        kv.push(KeyValue {
            key: key.to_owned(),
            value,
        });
    };
    if let Some(types) = &c.data_type {
        let base = types.get("base");
        if let Some(native) = types.iter().find(|(b, _)| *b != "base").map(|(_, t)| t) {
            put("KBC.datatype.type", native.type_.clone());
        }
        if let Some(t) = base.or_else(|| types.values().next()) {
            if base.is_some() {
                put("KBC.datatype.basetype", t.type_.clone());
            }
            if let Some(l) = &t.length {
                put("KBC.datatype.length", l.clone());
            }
            if let Some(d) = &t.default {
                put("KBC.datatype.default", d.clone());
            }
        }
    }
    if c.data_type.is_some() || c.nullable.is_some() {
        let nullable = c.nullable.unwrap_or(true);
        put(
            "KBC.datatype.nullable",
            if nullable { "1" } else { "0" }.to_owned(),
        );
    }
    if let Some(d) = c.description.as_ref().filter(|d| !d.is_empty()) {
        put("KBC.description", d.clone());
    }
    for (k, v) in c.metadata.iter().flatten() {
        put(k, v.clone());
    }
    kv
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
    if let Some(d) = mapping
        .and_then(|m| m.destination.as_deref())
        .filter(|d| !d.is_empty())
    {
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

/// The fuzz target `output_manifest` (fuzz/): what berth makes of `bytes` written as the
/// manifest of `out/tables/<name>` (a file, then a sliced table whose mapping repeats the
/// manifest) and of `out/files/<name>` — the steps of
/// [`collect_outputs`] between reading a manifest and staging its data, touching no file.
/// The loads and tags made, or the errors, as text.
#[cfg(feature = "fuzzing")]
pub fn fuzz_manifest(name: &str, bytes: &[u8]) -> Vec<String> {
    let ctx = OutputContext {
        component_id: "fuzz.component",
        config_id: Some("1"),
        row_id: Some("r1"),
        run_id: "1",
        component_default_bucket: true,
    };
    let shown = Path::new("out/tables").join(format!("{name}.manifest"));
    let mut made = Vec::new();
    match parse_manifest::<TableSettings>(bytes, &shown) {
        Ok(manifest) => {
            for (kind, mapped) in [(Kind::File, None), (Kind::Dir, Some(&manifest))] {
                let table = Table {
                    name,
                    kind,
                    manifest: manifest.clone(),
                    mapped,
                };
                made.push(match plan_table(table, &ctx, Some("in.c-fuzz"), false) {
                    Ok(planned) => format!("{planned:?}"),
                    Err(e) => e.to_string(),
                });
            }
        }
        Err(e) => made.push(e.to_string()),
    }
    let shown = Path::new("out/files").join(format!("{name}.manifest"));
    match parse_manifest::<FileSettings>(bytes, &shown) {
        Ok(settings) => made.push(file_tags(&settings, &ctx).join(",")),
        Err(e) => made.push(e.to_string()),
    }
    made
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

    /// A host directory outside the data folder with a canary table and file in it.
    fn host_canary() -> tempfile::TempDir {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("x.csv"), "a\n1\n").unwrap();
        fs::write(host.path().join("x.csv.manifest"), r#"{"columns": ["a"]}"#).unwrap();
        host
    }

    fn assert_untouched(host: &tempfile::TempDir, staging: &Path) {
        assert_eq!(fs::read(host.path().join("x.csv")).unwrap(), b"a\n1\n");
        assert!(host.path().join("x.csv.manifest").exists());
        let staged: Vec<_> = ["tables", "files"]
            .iter()
            .flat_map(|s| fs::read_dir(staging.join(s)).into_iter().flatten())
            .collect();
        assert!(staged.is_empty(), "staged from the host: {staged:?}");
    }

    #[test]
    fn symlinked_out_directories_take_nothing_from_the_host() {
        let m = mapping(json!({"default_bucket": "in.c-x"}));
        for (link, shown) in [
            ("tables", "out/tables"),
            ("files", "out/files"),
            ("", "out"),
        ] {
            let (_d, out, staging) = setup();
            let host = host_canary();
            let at = if link.is_empty() {
                out.clone()
            } else {
                out.join(link)
            };
            fs::remove_dir_all(&at).unwrap();
            std::os::unix::fs::symlink(host.path(), &at).unwrap();
            for failed in [false, true] {
                let r = collect_outputs(&out, &m, &ctx(), &staging, failed);
                if failed && link == "files" {
                    // A failed job takes no files: out/files is not even looked at.
                    assert!(r.unwrap().tables.is_empty());
                    continue;
                }
                let e = err(r);
                assert!(e.starts_with(&format!("{shown} is a symlink")), "{e}");
                assert_untouched(&host, &staging);
            }
        }
    }

    #[test]
    fn out_directories_of_the_wrong_kind_are_the_components_fault() {
        let m = mapping(json!({"default_bucket": "in.c-x"}));
        for (at, expected) in [
            ("tables", "out/tables is a regular file, not a directory"),
            ("files", "out/files is a regular file, not a directory"),
            ("", "out is a regular file, not a directory"),
        ] {
            let (_d, out, staging) = setup();
            let path = if at.is_empty() {
                out.clone()
            } else {
                out.join(at)
            };
            fs::remove_dir_all(&path).unwrap();
            fs::write(&path, "not a directory").unwrap();
            assert_eq!(
                err(collect_outputs(&out, &m, &ctx(), &staging, false)),
                expected
            );
        }
        // No out/ at all: nothing was written.
        let (_d, out, staging) = setup();
        fs::remove_dir_all(&out).unwrap();
        let staged = collect_outputs(&out, &m, &ctx(), &staging, false).unwrap();
        assert!(staged.tables.is_empty() && staged.files.is_empty());
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let m = mapping(json!({"default_bucket": "in.c-x"}));
        for at in [
            "tables/x.csv",
            "tables/sliced/part0",
            "files/f",
            "tables/x.csv.manifest",
        ] {
            let (_d, out, staging) = setup();
            if at.starts_with("tables/sliced/") {
                fs::create_dir(out.join("tables/sliced")).unwrap();
                fs::write(out.join("tables/sliced.manifest"), r#"{"columns": ["a"]}"#).unwrap();
            }
            if at.ends_with(".manifest") {
                fs::write(out.join("tables/x.csv"), "a\n").unwrap();
            }
            nix::unistd::mkfifo(
                &out.join(at),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let (o, s, mm) = (out.clone(), staging.clone(), m.clone());
            std::thread::spawn(move || {
                let r = collect_outputs(&o, &mm, &ctx(), &s, false).map(|_| ());
                tx.send(r.map_err(|e| {
                    (
                        e.class() == crate::contract::ErrorClass::User,
                        e.to_string(),
                    )
                }))
                .unwrap();
            });
            let r = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("a FIFO blocked berth");
            let (user, e) = r.unwrap_err();
            assert!(user, "{e}");
            let expected = if at.starts_with("tables/sliced/") {
                format!("out/{at}: slices must be regular files")
            } else {
                format!("out/{at} is a FIFO")
            };
            assert!(e.starts_with(&expected), "{at}: {e}");
        }
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

    #[test]
    fn hidden_entries_and_folders_in_out_files_are_ignored_as_there() {
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/t.csv"), "a\n1\n").unwrap();
        fs::write(out.join("tables/.gitkeep"), "").unwrap();
        fs::write(out.join("tables/.t.csv.swp"), "junk").unwrap();
        fs::create_dir(out.join("tables/.cache")).unwrap();
        fs::create_dir(out.join("tables/s")).unwrap();
        fs::write(out.join("tables/s/part1"), "1\n").unwrap();
        fs::write(out.join("tables/s/.DS_Store"), "junk").unwrap();
        fs::create_dir(out.join("tables/s/nested")).unwrap();
        fs::write(out.join("tables/s.manifest"), r#"{"columns": ["a"]}"#).unwrap();
        fs::write(out.join("files/f.txt"), "x").unwrap();
        fs::write(out.join("files/.hidden"), "x").unwrap();
        fs::create_dir(out.join("files/folder")).unwrap();
        fs::write(out.join("files/folder/inner.txt"), "x").unwrap();
        let m = mapping(json!({"default_bucket": "in.c-x"}));
        let staged = collect_outputs(&out, &m, &ctx(), &staging, false).unwrap();
        let tables: Vec<String> = staged
            .tables
            .iter()
            .map(|t| t.load.destination.to_string())
            .collect();
        assert_eq!(tables, ["in.c-x.s", "in.c-x.t"]);
        let slices: Vec<String> = (staged.tables[0].load.source.paths.iter())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(slices, ["part1"]);
        let files: Vec<&str> = staged.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(files, ["f.txt"]);
    }

    #[test]
    fn a_delete_where_column_needs_values_and_values_alone_filter_nothing() {
        let (_d, out, staging) = setup();
        fs::write(out.join("tables/t.csv"), "a\n1\n").unwrap();
        let m = |t: serde_json::Value| {
            let mut t = t;
            t["source"] = json!("t.csv");
            t["destination"] = json!("in.c-x.t");
            t["incremental"] = json!(true);
            mapping(json!({ "tables": [t] }))
        };
        for t in [
            json!({"delete_where_column": "a"}),
            json!({"delete_where_column": "a", "delete_where_values": []}),
        ] {
            let e = err(collect_outputs(&out, &m(t), &ctx(), &staging, false));
            assert_eq!(
                e,
                "out/tables/t.csv: when delete_where_column is set, delete_where_values is \
                 required"
            );
        }
        let t = json!({"delete_where_values": ["1"], "primary_key": [" a ", "", "a"]});
        let staged = collect_outputs(&out, &m(t), &ctx(), &staging, false).unwrap();
        let load = &staged.tables[0].load;
        assert_eq!(load.delete_where, None);
        assert_eq!(load.primary_key, ["a"]);
    }
}

#[cfg(test)]
mod conformance_tests {
    //! What `keboola.component` and the output-mapping library write (issue 7), loaded as
    //! the original runner loads it.

    use super::*;
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

    /// Writes `t.csv` with `manifest` and collects it with `mapping`.
    fn collect(
        manifest: &serde_json::Value,
        mapping: serde_json::Value,
    ) -> Result<TableLoad, MappingError> {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir_all(out.join("tables")).unwrap();
        fs::write(out.join("tables/t.csv"), "1,2\n").unwrap();
        fs::write(out.join("tables/t.csv.manifest"), manifest.to_string()).unwrap();
        let mapping: OutputMapping = serde_json::from_value(mapping).unwrap();
        let staged = collect_outputs(&out, &mapping, &ctx(), &d.path().join("s"), false)?;
        Ok(staged.tables.into_iter().next().unwrap().load)
    }

    fn meta(entries: &[MetadataEntry]) -> Vec<(&str, &str)> {
        entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn the_current_manifest_format_maps_schema_onto_columns_key_and_metadata() {
        // As keboola.component 1.11 writes it when KBC_STACKID is unset.
        let manifest = json!({
            "destination": "out.c-x.t", "incremental": true, "write_always": false,
            "delimiter": ",", "enclosure": "\"", "manifest_type": "out", "has_header": false,
            "table_metadata": {"KBC.description": "orders", "rows": 2},
            "schema": [
                {"name": "id", "data_type": {"base": {"type": "INTEGER"}},
                 "nullable": false, "primary_key": true},
                {"name": "amount",
                 "data_type": {"base": {"type": "NUMERIC", "length": "12,2"},
                               "snowflake": {"type": "NUMBER", "default": 0}},
                 "nullable": true, "description": "in EUR",
                 "metadata": {"unit": "EUR", "precise": true}}
            ]
        });
        let load = collect(&manifest, json!({})).unwrap();
        assert_eq!(load.destination.to_string(), "out.c-x.t");
        assert_eq!(
            load.source.columns,
            Some(vec!["id".to_owned(), "amount".to_owned()])
        );
        assert_eq!(load.primary_key, vec!["id"]);
        assert!(load.incremental);
        assert_eq!(
            meta(&load.metadata),
            vec![("KBC.description", "orders"), ("rows", "2")]
        );
        assert_eq!(
            meta(&load.column_metadata["id"]),
            vec![
                ("KBC.datatype.basetype", "INTEGER"),
                ("KBC.datatype.nullable", "0")
            ]
        );
        assert_eq!(
            meta(&load.column_metadata["amount"]),
            vec![
                ("KBC.datatype.type", "NUMBER"),
                ("KBC.datatype.basetype", "NUMERIC"),
                ("KBC.datatype.length", "12,2"),
                ("KBC.datatype.nullable", "1"),
                ("KBC.description", "in EUR"),
                ("precise", "1"),
                ("unit", "EUR"),
            ]
        );
    }

    #[test]
    fn a_schema_with_a_header_reads_the_header_and_other_keys_are_accepted() {
        let manifest = json!({
            "manifest_type": "out", "has_header": true, "destination": "out.c-x.t",
            "schema": [{"name": "a", "primary_key": true}, {"name": "b"}],
            "tags": ["staging"], "distribution_key": ["a"], "description": "d",
            "unload_strategy": "direct-grant", "deduplication_strategy": "insert"
        });
        let load = collect(&manifest, json!({})).unwrap();
        assert_eq!(load.source.columns, None);
        assert_eq!(load.primary_key, vec!["a"]);
        assert_eq!(load.description.as_deref(), Some("d"));
    }

    #[test]
    fn metadata_values_are_any_scalar_kept_as_storage_keeps_them() {
        let manifest = json!({
            "destination": "out.c-x.t", "columns": ["id", "v"],
            "metadata": [{"key": "n", "value": 7}, {"key": "f", "value": 1.5},
                         {"key": "none", "value": null}],
            "column_metadata": {"id": [{"key": "KBC.datatype.nullable", "value": false},
                                       {"key": "KBC.datatype.length", "value": 10}],
                                "v": [{"key": "KBC.datatype.nullable", "value": true}]}
        });
        let load = collect(&manifest, json!({})).unwrap();
        assert_eq!(
            meta(&load.metadata),
            vec![("n", "7"), ("f", "1.5"), ("none", "")]
        );
        assert_eq!(
            meta(&load.column_metadata["id"]),
            vec![
                ("KBC.datatype.nullable", "0"),
                ("KBC.datatype.length", "10")
            ]
        );
        assert_eq!(
            meta(&load.column_metadata["v"]),
            vec![("KBC.datatype.nullable", "1")]
        );
        let bad = json!({"destination": "out.c-x.t", "metadata": [{"key": "k", "value": [1]}]});
        let e = collect(&bad, json!({})).unwrap_err().to_string();
        assert!(
            e.contains("metadata[0].value") && e.contains("string, number, boolean"),
            "{e}"
        );
    }

    #[test]
    fn a_mapping_value_equal_to_its_default_leaves_the_manifest_in_force() {
        let manifest = json!({
            "destination": "out.c-x.t", "columns": ["id", "v"], "incremental": true,
            "primary_key": ["id"], "delimiter": ",", "write_always": true,
            "delete_where_column": "v", "delete_where_values": ["1"],
            "delete_where_operator": "ne"
        });
        let mapping = json!({"tables": [{
            "source": "t.csv", "destination": "out.c-x.t", "incremental": false,
            "primary_key": [], "delimiter": ",", "enclosure": "\"", "write_always": false,
            "delete_where_operator": "eq", "description": ""
        }]});
        let load = collect(&manifest, mapping).unwrap();
        assert!(
            load.incremental,
            "incremental: false in the mapping replaced an append"
        );
        // But a key the mapping sets wins, `[]` too (as the original's merge): no key.
        assert!(load.primary_key.is_empty(), "{:?}", load.primary_key);
        assert!(load.exact_primary_key);
        let filter = load.delete_where.unwrap();
        assert_eq!(filter.operator, Operator::Ne);
        // A value that is not the default still wins.
        let mapping = json!({"tables": [{"source": "t.csv", "destination": "out.c-y.t",
                                         "primary_key": ["v"], "delimiter": ";"}]});
        let load = collect(&manifest, mapping).unwrap();
        assert_eq!(load.destination.to_string(), "out.c-y.t");
        assert_eq!(
            (load.primary_key, load.source.delimiter),
            (vec!["v".to_owned()], b';')
        );
    }

    #[test]
    fn an_empty_delete_where_column_means_no_filter() {
        let manifest = json!({"destination": "out.c-x.t", "columns": ["a", "b"],
                              "incremental": true, "delete_where_column": "",
                              "delete_where_values": []});
        assert_eq!(collect(&manifest, json!({})).unwrap().delete_where, None);
        let manifest = json!({"destination": "out.c-x.t", "columns": ["a", "b"],
                              "delete_where_column": ""});
        assert_eq!(collect(&manifest, json!({})).unwrap().delete_where, None);
    }

    #[test]
    fn delete_where_in_list_form() {
        let rule = |filters: serde_json::Value| {
            json!({"destination": "out.c-x.t", "columns": ["a", "b"], "incremental": true,
                   "delete_where": [{"where_filters": filters}]})
        };
        let load = collect(
            &rule(json!([{"column": "a", "operator": "ne", "values_from_set": ["1", "2"]}])),
            json!({}),
        )
        .unwrap();
        let f = load.delete_where.unwrap();
        assert_eq!((f.column.as_str(), f.operator), ("a", Operator::Ne));
        assert_eq!(f.values, vec!["1", "2"]);
        let e = collect(
            &rule(json!([{"column": "a", "values_from_storage": {"bucket_id": "in.c-a", "table": "t"}}])),
            json!({}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("out/tables/t.csv: delete_where: values_from_workspace/values_from_storage is not supported"),
            "{e}"
        );
        let both = json!({"destination": "out.c-x.t", "columns": ["a"],
                          "delete_where_column": "a", "delete_where_values": ["1"],
                          "delete_where": [{"where_filters": [{"column": "a", "values_from_set": ["1"]}]}]});
        let e = collect(&both, json!({})).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn unknown_manifest_keys_are_still_errors() {
        let e = collect(
            &json!({"destination": "out.c-x.t", "schema": [{"name": "a", "nulable": true}]}),
            json!({}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("invalid manifest") && e.contains("nulable"),
            "{e}"
        );
    }
}
