//! The fuzz targets' checks, run on stable in the normal suite: every seed in `fuzz/corpus/<target>/` and every
//! input a fuzzer once failed on, kept in `fuzz/regressions/<target>/`, is replayed through the same function
//! the fuzz target calls (`fuzz/src/lib.rs`). A fixed finding that comes back fails here without a fuzzer.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// Every file of `fuzz/<kind>/<target>/`, sorted; an absent folder has none.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on each seed and regression of `target`; fails naming every input that panicked.
fn replay(target: &str, min_seeds: usize, check: fn(&[u8])) {
    let seeds = files("corpus", target);
    assert!(
        seeds.len() >= min_seeds,
        "fuzz/corpus/{target} holds {} seeds, expected at least {min_seeds}",
        seeds.len()
    );
    let mut failed = Vec::new();
    for path in seeds.iter().chain(&files("regressions", target)) {
        let input = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if std::panic::catch_unwind(|| check(&input)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} fails on: {failed:#?}");
}

#[test]
fn parse_event_seeds_and_findings() {
    replay("parse_event", 20, harness::parse_event);
}

#[test]
fn verify_signature_seeds_and_findings() {
    replay("verify_signature", 10, harness::verify_signature);
}

#[test]
fn pipeline_seeds_and_findings() {
    replay("pipeline", 20, harness::pipeline);
}
