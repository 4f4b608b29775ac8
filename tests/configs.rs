//! Every example in configs/ parses, plans and describes itself.

use coreline::{config, pipeline, runtime};

#[test]
fn every_example_config_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let cfg = config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let plan = pipeline::plan(cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let cores = runtime::shard_cores(&plan).unwrap();
        let text = plan.describe(&cores);
        assert!(text.contains("route "), "{text}");
        seen += 1;
    }
    assert!(
        seen >= 2,
        "expected at least hello.toml and one richer example"
    );
}
