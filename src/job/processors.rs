//! Processors (contract §12): images that run before and after the component, on the same
//! data folder, in one chain per row: before… → component → after….
//!
//! Each processor is a known component (`berth component add`), resolved when the job file
//! was read; its image is pulled with the component's, before anything runs. It gets its own
//! `config.json` (its `parameters`, its own image parameters, no storage), its own limits and
//! container, its own `KBC_COMPONENTID`, and never the state.
//!
//! Between two images the data folder moves as in the original runner: the next image gets
//! a fresh directory whose `in/` is what the last one left in `out/` (without its
//! `state.json`), with an empty `out/` and `/tmp`; whatever an image did not write to `out/`
//! is gone. Input mapping fills the first image's `in/`, output mapping reads the last
//! image's `out/`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::JobError;
use super::workdir::{ImageDir, JobDir};
use crate::confined::{self, Kind};
use crate::contract::job::{Processor, Runtime};
use crate::contract::result::Position;
use crate::contract::validate::check_parameters;
use crate::contract::{Configuration, JobFile, config_file};
use crate::image::PulledImage;
use crate::mapping::MappingError;
use crate::mapping::keep::MAX_DEPTH;

/// A processor's image, pulled and unpacked for the job.
#[derive(Debug)]
pub(super) struct ProcessorImage {
    pub image: PulledImage,
    pub rootfs: PathBuf,
}

/// The processors' images a job runs, by reference.
pub(super) type ProcessorImages = BTreeMap<String, ProcessorImage>;

/// One image of a row's chain, and the job as that image sees it.
#[derive(Debug)]
pub(super) struct Stage<'a> {
    pub position: Position,
    /// The job itself for the component (with the row's `runtime` when it has its own);
    /// for a processor, the job with the processor as its component and the processor's
    /// parameters as its configuration.
    pub job: Cow<'a, JobFile>,
    pub image: &'a PulledImage,
    pub rootfs: &'a Path,
    /// Where this image's configuration sits in the row's (`processors.after[0].`; empty
    /// for the component): what an error about its parameters names.
    pub at: String,
}

impl<'a> Stage<'a> {
    pub fn is_main(&self) -> bool {
        self.position == Position::Main
    }

    /// The component id of this image.
    pub fn id(&self) -> &str {
        &self.job.component.id
    }

    /// The configuration this image runs: the row's for the component, the processor's own.
    pub fn config<'s>(&'s self, row: &'s Configuration) -> &'s Configuration {
        match self.position {
            Position::Main => row,
            Position::Before | Position::After => &self.job.configuration,
        }
    }
}

/// The images of every processor of `rows`, once each, by reference: what the job pulls
/// before anything runs. A synchronous action runs no processors.
pub(super) fn wanted(
    job: &JobFile,
    rows: &[(Option<String>, Configuration)],
    action: bool,
) -> Result<Vec<(String, String)>, JobError> {
    let mut wanted: Vec<(String, String)> = Vec::new();
    if action {
        return Ok(wanted);
    }
    // A row that names another tag of the component in its own `runtime`.
    for (_, config) in rows {
        let Some(row_job) = job.with_row_runtime(config) else {
            continue;
        };
        let reference = row_job.image_reference();
        if reference != job.image_reference() && !wanted.iter().any(|(_, r)| *r == reference) {
            wanted.push((job.component.id.clone(), reference));
        }
    }
    for (_, config) in rows {
        for (_, _, p) in listed(config) {
            let pjob = processor_job(job, p)?;
            // A processor's parameters answer to its own schema, as the component's do.
            if let Some(schema) = &pjob.component.configuration_schema {
                check_parameters(&pjob.component.id, schema, &p.parameters)?;
            }
            let reference = pjob.image_reference();
            if !wanted.iter().any(|(_, r)| *r == reference) {
                wanted.push((pjob.component.id.clone(), reference));
            }
        }
    }
    Ok(wanted)
}

/// The component's stage in a row: with the row's own `runtime` (its timeout, and the
/// image of its tag, pulled with the processors') when it has one, as in the original.
fn main_stage<'a>(
    job: &'a JobFile,
    config: &Configuration,
    main: (&'a PulledImage, &'a Path),
    images: &'a ProcessorImages,
) -> Result<Stage<'a>, JobError> {
    let stage = |job, image, rootfs| Stage {
        position: Position::Main,
        job,
        image,
        rootfs,
        at: String::new(),
    };
    let Some(row_job) = job.with_row_runtime(config) else {
        return Ok(stage(Cow::Borrowed(job), main.0, main.1));
    };
    let reference = row_job.image_reference();
    if reference == job.image_reference() {
        return Ok(stage(Cow::Owned(row_job), main.0, main.1));
    }
    let Some(pulled) = images.get(&reference) else {
        return Err(JobError::Contract(format!(
            "the image {reference} of a row of component {} was not pulled",
            job.component.id
        )));
    };
    Ok(stage(Cow::Owned(row_job), &pulled.image, &pulled.rootfs))
}

/// The chain of one row: its before-processors, the component, its after-processors.
pub(super) fn chain<'a>(
    job: &'a JobFile,
    config: &Configuration,
    main: (&'a PulledImage, &'a Path),
    images: &'a ProcessorImages,
    action: bool,
) -> Result<Vec<Stage<'a>>, JobError> {
    let component = main_stage(job, config, main, images)?;
    if action {
        // A synchronous action runs the component alone, as in the original.
        return Ok(vec![component]);
    }
    let mut before = Vec::new();
    let mut after = Vec::new();
    for (position, n, p) in listed(config) {
        let pjob = processor_job(job, p)?;
        let reference = pjob.image_reference();
        let Some(pulled) = images.get(&reference) else {
            return Err(JobError::Contract(format!(
                "the image {reference} of processor {} was not pulled",
                pjob.component.id
            )));
        };
        let stage = Stage {
            position,
            job: Cow::Owned(pjob),
            image: &pulled.image,
            rootfs: &pulled.rootfs,
            at: format!("processors.{}[{n}].", list_name(position)),
        };
        match position {
            Position::Before => before.push(stage),
            Position::Main | Position::After => after.push(stage),
        }
    }
    Ok(before
        .into_iter()
        .chain(std::iter::once(component))
        .chain(after)
        .collect())
}

/// The processors of a configuration, in the order they run, each with its place in its
/// list.
fn listed(config: &Configuration) -> Vec<(Position, usize, &Processor)> {
    let Some(p) = &config.processors else {
        return Vec::new();
    };
    let before = p
        .before
        .iter()
        .enumerate()
        .map(|(n, x)| (Position::Before, n, x));
    let after = p
        .after
        .iter()
        .enumerate()
        .map(|(n, x)| (Position::After, n, x));
    before.chain(after).collect()
}

/// The key of a processor's list in a configuration.
fn list_name(position: Position) -> &'static str {
    match position {
        Position::Before => "before",
        Position::Main | Position::After => "after",
    }
}

/// The job a processor runs as: its known component (its image at the definition's tag),
/// its parameters as the whole configuration, and the job's configuration id.
fn processor_job(job: &JobFile, p: &Processor) -> Result<JobFile, JobError> {
    let id = &p.definition.component;
    let Some(component) = job.processor_components.get(id) else {
        return Err(JobError::Contract(format!(
            "processor {id} is not a known component (add it with `berth component add FILE`)"
        )));
    };
    if component.user_namespace != job.component.user_namespace {
        // The job's images are unpacked for, and run with, one set of ids.
        return Err(JobError::Contract(format!(
            "processor {id} asks for user_namespace {:?}, the component {} for {:?}: the \
             images of a job share their ids",
            component.user_namespace, job.component.id, job.component.user_namespace
        )));
    }
    let runtime = (p.definition.tag.clone()).map(|tag| Runtime {
        image_tag: Some(tag),
        ..Runtime::default()
    });
    Ok(JobFile {
        component: component.clone(),
        config_id: Some(config_file::config_id(job)),
        configuration: Configuration {
            parameters: p.parameters.clone(),
            runtime,
            ..Configuration::default()
        },
        rows: Vec::new(),
        row_ids: Vec::new(),
        processor_components: BTreeMap::new(),
        ..job.clone()
    })
}

/// Gives image `to` of the job a data folder whose `in/` is what image `from` (component
/// `id`) left in `out/`, and removes image `from`'s directories. Its container must be gone.
pub(super) fn pass_on(
    jobdir: &JobDir,
    (from, id): (usize, &str),
    data: &Path,
    to: usize,
) -> Result<ImageDir, JobError> {
    let next = jobdir.image_dir(to).map_err(JobError::Workdir)?;
    move_out_to_in(data, &next.data, id)?;
    jobdir.remove_image(from).map_err(JobError::Workdir)?;
    Ok(next)
}

/// The state files an image may leave in `out/`: never passed on.
const STATE_FILES: [&str; 2] = ["state.json", "state.yml"];

/// `from/out` becomes `to/in`, without the state the image (component `id`) left, with the
/// folders of contract §1 there. An `out` that is not a directory (the image replaced it)
/// passes nothing on; one holding anything but regular files and directories is refused.
fn move_out_to_in(from: &Path, to: &Path, id: &str) -> Result<(), JobError> {
    let confined = |e| JobError::Mapping(MappingError::Confined(e));
    let data = confined::Dir::open(from).map_err(confined)?;
    // Not followed: a link the image left must not take berth elsewhere on the host.
    match data.kind_of("out") {
        Ok(Kind::Dir) => {}
        Err(e) if !e.is_not_found() => return Err(confined(e)),
        Ok(_) | Err(_) => {
            tracing::warn!("the image left no out/ folder: the next one gets an empty in/");
            return Ok(());
        }
    }
    check_passable(&data.open_dir("out").map_err(confined)?, id, 0)?;
    let (out, into) = (from.join("out"), to.join("in"));
    let moved = crate::util::remove_tree(&into).and_then(|()| fs::rename(&out, &into));
    moved.map_err(JobError::Workdir)?;
    // Only the component's state is read, right after it ran; nobody else's is passed on.
    for state in STATE_FILES {
        crate::util::remove_tree(&into.join(state)).map_err(JobError::Workdir)?;
    }
    for sub in ["tables", "files", "user"] {
        let path = into.join(sub);
        if fs::symlink_metadata(&path).is_err() {
            fs::create_dir(&path).map_err(JobError::Workdir)?;
        }
    }
    Ok(())
}

/// Refuses what component `id` left in `dir` (its `out/`, `depth` levels down) that is not
/// a regular file or a directory. A link would make the next image read where it points
/// (`in/tables/t.csv` → `/data/config.json`: the next image's own secrets, written to
/// storage as a table); a FIFO blocks whoever reads it.
fn check_passable(dir: &confined::Dir, id: &str, depth: usize) -> Result<(), JobError> {
    let refuse = |path: &Path, what: &str| {
        JobError::Mapping(MappingError::User(format!(
            "{id} left {}, {what}: only regular files and directories pass to the next image",
            path.display()
        )))
    };
    let confined = |e| JobError::Mapping(MappingError::Confined(e));
    for entry in dir.entries().map_err(confined)? {
        let shown = dir.shown(&entry.name);
        match entry.kind {
            // Removed, not passed on, whatever they are.
            _ if depth == 0 && STATE_FILES.iter().any(|s| entry.name == *s) => {}
            Kind::File => {}
            Kind::Dir if depth >= MAX_DEPTH => {
                return Err(refuse(
                    &shown,
                    &format!("nested deeper than {MAX_DEPTH} directories"),
                ));
            }
            Kind::Dir => {
                let sub = dir.open_dir(&entry.name).map_err(confined)?;
                check_passable(&sub, id, depth + 1)?;
            }
            kind => return Err(refuse(&shown, &kind.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_becomes_in_without_the_state_and_with_the_contract_folders() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("a"), d.path().join("b"));
        for dir in ["out/tables", "in/tables"] {
            fs::create_dir_all(from.join(dir)).unwrap();
            fs::create_dir_all(to.join(dir)).unwrap();
        }
        fs::write(from.join("out/tables/t.csv"), "a\n1\n").unwrap();
        fs::write(from.join("out/tables/t.csv.manifest"), "{}").unwrap();
        fs::write(from.join("out/state.json"), "{}").unwrap();
        fs::write(from.join("out/usage.json"), "[]").unwrap();
        fs::write(to.join("in/tables/old.csv"), "x").unwrap();
        move_out_to_in(&from, &to, "acme.p").unwrap();
        assert_eq!(
            fs::read_to_string(to.join("in/tables/t.csv")).unwrap(),
            "a\n1\n"
        );
        assert!(to.join("in/tables/t.csv.manifest").is_file());
        assert!(to.join("in/usage.json").is_file());
        assert!(!to.join("in/state.json").exists());
        assert!(!to.join("in/tables/old.csv").exists());
        assert!(to.join("in/files").is_dir() && to.join("in/user").is_dir());
        assert!(!from.join("out").exists());
    }

    #[test]
    fn an_out_replaced_by_a_link_passes_nothing_on() {
        let d = tempfile::tempdir().unwrap();
        let (from, to, elsewhere) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        for dir in [&from, &elsewhere, &to.join("in/tables")] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::write(elsewhere.join("state.json"), "keep").unwrap();
        std::os::unix::fs::symlink(&elsewhere, from.join("out")).unwrap();
        move_out_to_in(&from, &to, "acme.p").unwrap();
        assert_eq!(
            fs::read_to_string(elsewhere.join("state.json")).unwrap(),
            "keep"
        );
        assert!(to.join("in/tables").is_dir());
        assert!(!to.join("in").is_symlink());
    }

    #[test]
    fn links_fifos_and_devices_in_out_are_refused_naming_them() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(from.join("out/tables/deep")).unwrap();
        fs::create_dir_all(to.join("in")).unwrap();
        let link = from.join("out/tables/deep/t.csv");
        std::os::unix::fs::symlink("/data/config.json", &link).unwrap();
        let e = move_out_to_in(&from, &to, "acme.p").unwrap_err();
        assert_eq!(e.class(), crate::contract::ErrorClass::User);
        assert_eq!(
            e.to_string(),
            "acme.p left out/tables/deep/t.csv, a symlink: only regular files and \
             directories pass to the next image"
        );
        assert!(
            from.join("out").is_dir() && !to.join("in/tables").exists(),
            "moved"
        );
        fs::remove_file(&link).unwrap();
        let fifo = from.join("out/pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = move_out_to_in(&from, &to, "acme.p")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("acme.p left out/pipe, a FIFO: "), "{e}");
        // State files are dropped whatever they are, never looked into.
        fs::remove_file(&fifo).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", from.join("out/state.json")).unwrap();
        fs::create_dir_all(from.join("out/state.yml/x")).unwrap();
        move_out_to_in(&from, &to, "acme.p").unwrap();
        assert!(to.join("in/tables/deep").is_dir());
        assert!(fs::symlink_metadata(to.join("in/state.json")).is_err());
        assert!(fs::symlink_metadata(to.join("in/state.yml")).is_err());
    }

    fn job(text: &str) -> JobFile {
        let mut j = JobFile::parse(text.as_bytes()).unwrap();
        for id in ["p.one", "p.two"] {
            let c = crate::contract::Component::parse(
                format!(r#"{{"id": "{id}", "image": "r/{id}:1", "memory": "64m"}}"#).as_bytes(),
            )
            .unwrap();
            j.processor_components.insert(id.to_owned(), c);
        }
        j
    }

    #[test]
    fn processors_run_as_their_own_component_with_their_parameters() {
        let j = job(r#"{"component": {"id": "acme.main", "image": "r/main:1"},
                "configuration": {"parameters": {"x": 1}, "processors": {
                  "before": [{"definition": {"component": "p.one"}, "parameters": {"a": 1}}],
                  "after": [{"definition": {"component": "p.two", "tag": "2"}},
                            {"definition": {"component": "p.one"}, "parameters": {"a": 2}}]}}}"#);
        let rows = j.row_configurations().unwrap();
        let wanted = wanted(&j, &rows, false).unwrap();
        let refs: Vec<&str> = wanted.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(refs, ["r/p.one:1", "r/p.two:2"], "each image once");
        assert!(super::wanted(&j, &rows, true).unwrap().is_empty());
        let p = &j.configuration.processors.as_ref().unwrap().after[0];
        let pjob = processor_job(&j, p).unwrap();
        assert_eq!(pjob.component.memory.to_string(), "64m");
        assert_eq!(pjob.main_timeout_secs(), 3600);
        assert_eq!(pjob.config_id, Some(config_file::config_id(&j)));
        let before = &j.configuration.processors.as_ref().unwrap().before[0];
        let pjob = processor_job(&j, before).unwrap();
        assert_eq!(pjob.configuration.parameters["a"], 1);
        assert!(pjob.configuration.storage.is_none());

        let unknown = job(r#"{"component": {"id": "acme.main", "image": "r/main:1"},
                "configuration": {"processors": {"after": [{"definition": {"component": "p.x"}}]}}}"#);
        let rows = unknown.row_configurations().unwrap();
        let e = super::wanted(&unknown, &rows, false).unwrap_err();
        assert!(
            e.to_string()
                .contains("processor p.x is not a known component"),
            "{e}"
        );
    }
}
