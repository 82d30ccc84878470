#![no_main]
//! Job files (a component and its configuration, as an operator or a configuration author
//! writes them): parsed and validated, then everything berth derives from one before it
//! runs — the image reference, the rows' merged configurations, the configuration schema's
//! verdict, the `config.json` and environment a component gets.

use berth::contract::config_file::{RunIdentity, config_json, environment};
use berth::contract::job::JobFile;
use berth::contract::validate::check_configurations;
use berth::image::ImageRef;
use berth_fuzz::within_heap;
use libfuzzer_sys::fuzz_target;

const HEAP_LIMIT: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    within_heap(HEAP_LIMIT, "job", || {
        let Ok(job) = JobFile::parse(data) else {
            return;
        };
        let _ = ImageRef::parse(&job.image_reference());
        let _ = job.inert_keys();
        let _ = (job.main_timeout_secs(), job.action_timeout_secs());
        let Ok(rows) = job.row_configurations() else {
            return;
        };
        let _ = check_configurations(&job.component, &rows).map_err(|e| e.to_string());
        for (row, config) in &rows {
            let _ = config_json(config, &serde_json::Map::new(), "run");
            let id = RunIdentity {
                job: &job,
                config,
                run_id: "1",
                component_id: &job.component.id,
                row_id: row.as_deref(),
                debug: false,
                stack_id: None,
            };
            let _ = environment(&id);
        }
    });
});
