//! Configuration loading from TOML text (`coreline::config::parse`, then
//! `coreline::pipeline::plan`, `Plan::describe` and `RoutePlan::build`, as
//! `coreline check` and `coreline run` do), on arbitrary text.
//!
//! Checked: nothing panics; every error points into the text (line 1..=
//! lines + 1, column >= 1) and renders; a valid configuration plans and
//! builds every route or fails with such an error.
#![no_main]

use coreline::config::{ConfigError, Source, parse};
use coreline::pipeline::plan;
use libfuzzer_sys::fuzz_target;

fn check_error(text: &str, e: &ConfigError) {
    let lines = text.split('\n').count();
    assert!(
        e.line() >= 1 && e.line() <= lines + 1,
        "line {} of {lines}: {e}",
        e.line()
    );
    assert!(e.column() >= 1, "column {}: {e}", e.column());
    if let Some(quoted) = e.source_line() {
        assert_eq!(
            Some(quoted),
            text.split('\n')
                .nth(e.line() - 1)
                .map(|l| l.trim_end_matches('\r')),
            "{e}"
        );
    }
    assert!(!e.message().is_empty());
    let _ = e.to_string();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match parse(Source::new("fuzz.toml", text)) {
        Ok(config) => config,
        Err(e) => return check_error(text, &e),
    };
    match plan(config) {
        Ok(plan) => {
            let _ = plan.describe(&[0, 1]);
            for route in &plan.routes {
                let _ = route.build();
            }
        }
        Err(e) => check_error(text, &e),
    }
});
