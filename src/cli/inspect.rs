//! `berth inspect`: one stored image, for a human or (`--json`) for a script.

use std::process::ExitCode;

use berth::image::{Images, Inspection, Origin};
use berth::util::{ago, human_bytes, unix_now};

use super::print;

/// Prints what the store holds of `image`; an image not stored is the user's to pull.
pub fn inspect(images: &Images, image: &str, json: bool) -> anyhow::Result<ExitCode> {
    let found = match images.inspect(image) {
        Ok(found) => found,
        Err(e) => {
            print::err(format!("berth: {}", berth::util::chain(&e)));
            return Ok(ExitCode::from(e.class().exit_status()));
        }
    };
    if json {
        print::out(serde_json::to_string_pretty(&found)?);
    } else {
        print::lines(text(&found));
    }
    Ok(ExitCode::SUCCESS)
}

/// The inspection as aligned `key: value` lines, lists indented below their key.
fn text(i: &Inspection) -> Vec<String> {
    let c = &i.config;
    let words = |v: &Option<Vec<String>>| match v {
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
        None => "(not set)".to_owned(),
    };
    let or_unset = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not set)".to_owned());
    let mut out = vec![
        format!("reference:   {}", i.reference),
        format!("digest:      {}", i.digest),
        format!("manifest:    {}", i.manifest),
        format!("platform:    {}/{}", i.platform.os, i.platform.architecture),
        format!("config:      {}", i.config_digest),
        format!("entrypoint:  {}", words(&c.entrypoint)),
        format!("cmd:         {}", words(&c.cmd)),
        format!("user:        {}", or_unset(&c.user)),
        format!("workdir:     {}", or_unset(&c.workdir)),
        format!("env:         {}", c.env.len()),
    ];
    out.extend(c.env.iter().map(|e| format!("  {e}")));
    out.push(format!("labels:      {}", c.labels.len()));
    out.extend(c.labels.iter().map(|(k, v)| format!("  {k}={v}")));
    out.push(format!(
        "layers:      {} ({})",
        i.layers.len(),
        human_bytes(i.size)
    ));
    out.extend(
        i.layers
            .iter()
            .map(|l| format!("  {}  {:>10}  {}", l.digest, human_bytes(l.size), l.size)),
    );
    out.push(format!("pulled as:   {}", i.pulled_as.len()));
    let now = unix_now();
    out.extend(i.pulled_as.iter().flat_map(|o| origin(o, now)));
    out
}

/// Where one reference came from, and what accepted it there.
fn origin(o: &Origin, now: u64) -> Vec<String> {
    let from = o.registry.as_deref().unwrap_or("a layout or an archive");
    let accepted = match &o.accepted {
        Some(a) => format!(
            "policy {}, scope {:?}, requirements {}",
            a.policy.as_ref().map_or_else(
                || "none (every image accepted)".to_owned(),
                |p| p.display().to_string()
            ),
            a.scope,
            a.requirements
        ),
        None => "checked at every load (a layout or an archive), or recorded before berth kept it"
            .to_owned(),
    };
    vec![
        format!("  {}", o.reference),
        format!("    from:      {from}"),
        format!(
            "    pulled:    {}, last used {}",
            ago(o.pulled_at, now),
            ago(o.last_used, now)
        ),
        format!("    accepted:  {accepted}"),
    ]
}
