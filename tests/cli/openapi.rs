//! `clerk-sync openapi`: prints the committed contract, and needs no configuration to do so.

use super::run;

/// The committed document, as an application generates its types from it.
pub fn committed() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn the_openapi_command_prints_the_committed_document_without_any_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A configuration `serve` would refuse (an unknown key, an unknown backend) does not matter here.
    let vars = [("DATABASE_URL", "mysql://nowhere"), ("CLERK_SYNC_NO_SUCH__KEY", "1")];
    let (code, stdout, stderr) = run(dir.path(), &["openapi"], &vars);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stdout == committed(),
        "openapi.json at the repository root differs from `clerk-sync openapi`; regenerate it with\n    \
         cargo run -- openapi > openapi.json\nand commit it (the API changed: check the README still says what it \
         does)"
    );
}
