//! Keeps the figures the README and `docs/` quote equal to committed
//! benchmark output. A document marks each quoted block:
//!
//! - `<!-- BEGIN generated: NAME -->` … `<!-- END generated -->`: the table
//!   NAME made from `docs/bench` (see [`crate::tables`]);
//! - `<!-- BEGIN file: PATH -->` … `<!-- END file -->`: the file PATH
//!   (relative to the workspace), verbatim in a `text` code block.
//!
//! `cnm-bench --docs ROOT` rewrites the blocks; `--docs ROOT --check` only
//! reports the ones that differ (a test runs it).

use std::path::{Path, PathBuf};

use crate::tables::Run;

/// The documents that may quote benchmark output.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![root.join("README.md")];
    if let Ok(rd) = std::fs::read_dir(root.join("docs")) {
        let mut more: Vec<PathBuf> =
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "md")).collect();
        more.sort();
        docs.extend(more);
    }
    docs
}

/// What a marked block must hold.
fn wanted(root: &Path, run: &Run, marker: &str) -> Result<String, String> {
    if let Some(name) = marker.strip_prefix("generated: ") {
        let name = name.split_whitespace().next().unwrap_or("");
        return run.table(name).ok_or_else(|| format!("no generated table {name:?}"));
    }
    if let Some(path) = marker.strip_prefix("file: ") {
        let path = root.join(path.trim());
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(format!("```text\n{}```\n", text));
    }
    Err(format!("unknown marker {marker:?}"))
}

/// Rewrites one document's blocks; returns it and the markers that differed.
fn process(root: &Path, run: &Run, text: &str) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut differ = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<!-- BEGIN ") {
        let head_end = rest[start..].find("-->\n").ok_or("a BEGIN marker without -->")? + start + 4;
        let marker = rest[start + "<!-- BEGIN ".len()..head_end - 4].trim().to_string();
        let end_tag = if marker.starts_with("file:") { "<!-- END file -->" } else { "<!-- END generated -->" };
        let end = rest[head_end..].find(end_tag).ok_or_else(|| format!("{marker}: no {end_tag}"))? + head_end;
        let want = wanted(root, run, &marker)?;
        if rest[head_end..end] != want {
            differ.push(marker);
        }
        out.push_str(&rest[..head_end]);
        out.push_str(&want);
        rest = &rest[end..];
    }
    out.push_str(rest);
    Ok((out, differ))
}

/// Checks (or, with `write`, rewrites) every document under `root`;
/// returns `document: marker` for each block that differed.
pub fn sync(root: &Path, write: bool) -> Result<Vec<String>, String> {
    let run = Run::load(&root.join("docs/bench"))?;
    let mut differ = Vec::new();
    for doc in documents(root) {
        let text = std::fs::read_to_string(&doc).map_err(|e| format!("{}: {e}", doc.display()))?;
        let (new, d) = process(root, &run, &text).map_err(|e| format!("{}: {e}", doc.display()))?;
        if write && new != text {
            std::fs::write(&doc, new).map_err(|e| format!("{}: {e}", doc.display()))?;
        }
        differ.extend(d.into_iter().map(|m| format!("{}: {m}", doc.display())));
    }
    Ok(differ)
}
