//! What a job has done so far, for its result document: every step adds to it.

use crate::contract::result::{
    Cage, ImageSummary, OutputSummary, StageSummary, TableOutput, Timings, Usage, Variable,
};
use crate::storage::ApplyReport;

/// Progress of one job, for the result document.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub image: Option<ImageSummary>,
    pub cage: Option<Cage>,
    pub timings: Timings,
    pub exit_code: Option<i32>,
    pub outputs: OutputSummary,
    /// The images that ran, in order.
    pub stages: Vec<StageSummary>,
    /// The job id had committed before: this run applied nothing.
    pub already_committed: bool,
    /// What their containers used, together.
    pub usage: Option<Usage>,
    /// The variables replaced in the configurations, with their values.
    pub variables: Vec<Variable>,
    /// What the last container wrote to stderr (its last MiB, masked), kept in datadir
    /// mode only, where it is compared.
    pub stderr: String,
}

impl Progress {
    /// Adds what a commit applied (its tables and files) to the outputs.
    pub fn record(&mut self, report: &ApplyReport) {
        for t in &report.tables {
            self.outputs.tables.push(TableOutput {
                id: t.table.to_string(),
                rows_loaded: t.rows_loaded,
                rows: t.rows,
            });
        }
        self.outputs.files.extend(report.files.iter().map(|f| f.id));
    }
}
