//! The report: `report.md`, `summary.json`, plots, and `RESULTS.md`.
//!
//! Every number in a table is the median over repetitions with the min–max
//! range; every ratio is the median of per-pair ratios (rep k of coreline over
//! rep k of the baseline). Errors are always shown, never filtered.

use crate::machine::Machine;
use crate::scenario::{Kind, ServerKind};
use crate::stats::{Spread, Verdict, paired_difference, paired_ratio};
use crate::suite::{RunSummary, ScenarioResult};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// One headline target of issue 3 and how the run fared.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is compared.
    pub name: String,
    /// The goal, e.g. `≥ 1.3×`.
    pub goal: String,
    /// Median and range of the paired ratio.
    pub measured: Option<Spread>,
    /// `met`, `missed` or `not measured`.
    pub status: String,
    /// Why it was not measured, or where it came from.
    pub note: String,
    /// Unit of `measured` and the goal (`×` for ratios).
    pub unit: &'static str,
}

/// Median CPU stall (percent) above which the report warns that the machine was busy.
const NOISY_STALL_PCT: f64 = 5.0;

fn num(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The cells every per-point table of coreline's runs shares: achieved
/// rate, p50, p90, p99, p99.9, max (median and range over repetitions),
/// errors, generator lag and CPU stall.
fn coreline_run_cells(r: &ScenarioResult, point: &str) -> Option<String> {
    let runs: Vec<&RunSummary> = r
        .runs
        .iter()
        .filter(|x| x.point == point)
        .map(|x| &x.summary)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let val =
        |f: fn(&RunSummary) -> f64| spread(Spread::of(&r.values(point, ServerKind::Coreline, f)));
    let cells = [
        val(|s| s.achieved_rate),
        val(|s| s.p50_us),
        val(|s| s.p90_us),
        val(|s| s.p99_us),
        val(|s| s.p999_us),
        val(|s| s.max_us),
        errors_cell(&runs),
        val(|s| s.lag_p99_us),
        val(|s| s.cpu_stall_pct),
    ];
    Some(cells.join(" | "))
}

fn spread(s: Option<Spread>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s.n == 1 => num(s.median),
        Some(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
    }
}

fn ratio(s: Option<Spread>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s.n == 1 => format!("{:.2}×", s.median),
        Some(s) => format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max),
    }
}

/// A measured value with its interquartile range and full range, for the
/// targets table.
fn ratio_iqr(s: Option<Spread>, unit: &str) -> String {
    let sep = if unit == "×" { "" } else { " " };
    match s {
        None => "—".into(),
        Some(s) if s.n == 1 => format!("{:.2}{sep}{unit} (n=1)", s.median),
        Some(s) => format!(
            "{:.2}{sep}{unit} (IQR {:.2}–{:.2}, range {:.2}–{:.2}, n={})",
            s.median, s.q1, s.q3, s.min, s.max, s.n
        ),
    }
}

/// The status of a target: `met` / `missed` only when the interquartile range
/// of the paired ratios lies on one side of the goal, else `inconclusive`
/// (issue 10: a single run's p99 on a shared VM is mostly host stalls).
fn target(
    name: &str,
    goal_ratio: f64,
    at_least: bool,
    measured: Option<Spread>,
    note: String,
) -> Target {
    target_in(name, goal_ratio, "×", at_least, measured, note)
}

fn target_in(
    name: &str,
    goal_ratio: f64,
    unit: &'static str,
    at_least: bool,
    measured: Option<Spread>,
    note: String,
) -> Target {
    let sep = if unit == "×" { "" } else { " " };
    let goal = format!(
        "{} {goal_ratio}{sep}{unit}",
        if at_least { "≥" } else { "≤" }
    );
    let status = match measured {
        None => "not measured".to_owned(),
        Some(s) => match s.verdict(goal_ratio, at_least) {
            Verdict::Inconclusive if s.n < 3 => "inconclusive (fewer than 3 pairs)".to_owned(),
            Verdict::Inconclusive => "inconclusive (IQR crosses the goal)".to_owned(),
            v => v.label().to_owned(),
        },
    };
    Target {
        name: name.into(),
        goal,
        measured,
        status,
        note,
        unit,
    }
}

fn scenario_note(r: Option<&ScenarioResult>, what: &str) -> String {
    match r {
        None => format!("no {what} scenario ran"),
        Some(r) => match &r.error {
            Some(e) => format!("{what} scenario failed: {e}"),
            None => format!("scenario `{}`, paired per repetition", r.scenario.name),
        },
    }
}

/// Values of `metric` per repetition at the first point of `r`.
fn first_point(
    r: Option<&ScenarioResult>,
    server: ServerKind,
    metric: fn(&RunSummary) -> f64,
) -> Vec<f64> {
    r.and_then(|r| r.points.first().map(|(p, _)| r.values(p, server, metric)))
        .unwrap_or_default()
}

/// Computes the headline targets from the results.
pub fn targets(results: &[ScenarioResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let by_name = |name: &str| results.iter().find(|r| r.scenario.name == name);
    let cap = results.iter().find(|r| r.scenario.kind == Kind::Capacity);
    let why_cap = scenario_note(cap, "capacity");
    let rate = |s: &RunSummary| s.achieved_rate;
    let core_cap = first_point(cap, ServerKind::Coreline, rate);
    for (server, goal) in [
        (ServerKind::Axum, 1.3),
        (ServerKind::Actix, 1.2),
        (ServerKind::Floor, 0.9),
    ] {
        out.push(target(
            &format!("saturation capacity: coreline ÷ {}", server.name()),
            goal,
            true,
            paired_ratio(&core_cap, &first_point(cap, server, rate)),
            why_cap.clone(),
        ));
    }
    let slo = results.iter().find(|r| r.scenario.kind == Kind::Slo);
    let slo_rates = |server: ServerKind| -> Vec<f64> {
        let mut v: Vec<(usize, f64)> = slo
            .map(|r| {
                r.slo
                    .iter()
                    .filter(|s| s.server == server)
                    .map(|s| (s.rep, if s.verified { s.max_rate } else { f64::NAN }))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|x| x.1).collect()
    };
    let why_slo = scenario_note(slo, "slo");
    let core = slo_rates(ServerKind::Coreline);
    for (server, goal) in [(ServerKind::Axum, 1.3), (ServerKind::Actix, 1.2)] {
        out.push(target(
            &format!("max rate holding p99 ≤ 1 ms: coreline ÷ {}", server.name()),
            goal,
            true,
            paired_ratio(&core, &slo_rates(server)),
            why_slo.clone(),
        ));
    }
    let head = results.iter().find(|r| r.scenario.headline);
    let why_head = scenario_note(head, "headline");
    let p99 = |s: &RunSummary| s.p99_us;
    let core_p99 = first_point(head, ServerKind::Coreline, p99);
    out.push(target(
        "p99 at 50% of axum's max rate: coreline ÷ axum",
        0.7,
        false,
        paired_ratio(&core_p99, &first_point(head, ServerKind::Axum, p99)),
        why_head.clone(),
    ));
    out.push(target(
        "p99 at the same rate: coreline ÷ floor",
        1.3,
        false,
        paired_ratio(&core_p99, &first_point(head, ServerKind::Floor, p99)),
        why_head,
    ));
    for (name, what) in [
        ("many_connections", "1,000 connections"),
        ("ten_thousand_connections", "10,000 connections"),
    ] {
        let r = by_name(name);
        if r.is_none() && name == "ten_thousand_connections" {
            continue;
        }
        out.push(target(
            &format!("p99 with {what} at 50% of axum's max rate: coreline ÷ axum"),
            1.0,
            false,
            paired_ratio(
                &first_point(r, ServerKind::Coreline, p99),
                &first_point(r, ServerKind::Axum, p99),
            ),
            scenario_note(r, name),
        ));
    }
    out.push(checkpoint_target(results));
    if let Some(r) = results.iter().find(|r| r.scenario.kind == Kind::ModelSwap) {
        out.push(model_swap_target(r));
    }
    for r in results.iter().filter(|r| r.skipped.is_none()) {
        if let Some(goal) = r.scenario.goal_p50_us {
            out.push(target_in(
                &format!("p50: {}", r.scenario.title),
                goal,
                "µs",
                false,
                Spread::of(&first_point(Some(r), ServerKind::Coreline, |s| s.p50_us)),
                match &r.error {
                    Some(e) => format!("scenario `{}` failed: {e}", r.scenario.name),
                    None => format!(
                        "scenario `{}`, one value per repetition{}",
                        r.scenario.name,
                        if crate::suite::shared_core_note(&r.scenario).is_some() {
                            "; server and generator share a core"
                        } else {
                            ""
                        }
                    ),
                },
            ));
        }
    }
    if let Some(r) = results.iter().find(|r| r.scenario.kind == Kind::Forwarding) {
        let (owner, other) = forward_p50s(r);
        out.push(target_in(
            "p50 added by a cross-shard forward (other port − owner port)",
            FORWARD_P50_GOAL_US,
            "µs",
            false,
            paired_difference(&other, &owner),
            scenario_note(Some(r), "forwarding"),
        ));
    }
    // A verdict from a disturbed machine is not a verdict.
    let stalls: Vec<f64> = results
        .iter()
        .flat_map(|r| r.runs.iter().map(|x| x.summary.cpu_stall_pct))
        .collect();
    if Spread::of(&stalls).is_some_and(|s| s.median > NOISY_STALL_PCT) {
        for t in &mut out {
            if t.measured.is_some() && !t.status.starts_with("inconclusive") {
                t.status = format!("{} (inconclusive: machine busy)", t.status);
            }
        }
    }
    out
}

/// Issue 10: what a forward may add to p50, microseconds.
const FORWARD_P50_GOAL_US: f64 = 15.0;

/// p50 per repetition at the `owner` and `other` points of a forwarding run.
fn forward_p50s(r: &ScenarioResult) -> (Vec<f64>, Vec<f64>) {
    let p50 = |p: &str| r.values(p, ServerKind::Coreline, |s| s.p50_us);
    (p50("owner"), p50("other"))
}

/// The forwarding scenario: the rate table plus the paired differences.
fn forwarding_table(md: &mut String, r: &ScenarioResult) {
    rate_table(md, r);
    let diff = |m: fn(&RunSummary) -> f64| {
        paired_difference(
            &r.values("other", ServerKind::Coreline, m),
            &r.values("owner", ServerKind::Coreline, m),
        )
    };
    let _ = writeln!(
        md,
        "\nAdded by forwarding (other − owner, paired per repetition): p50 **{}**, p99 {} (goal: ≤ {FORWARD_P50_GOAL_US} µs at p50).",
        ratio_iqr(diff(|s| s.p50_us), "µs"),
        ratio_iqr(diff(|s| s.p99_us), "µs"),
    );
}

/// Issue 9: serving p99 while the model is swapped ÷ steady p99.
const SWAP_P99_RATIO_GOAL: f64 = 1.2;

/// p99 per repetition at the `swapping` and `steady` points.
fn swap_p99s(r: &ScenarioResult) -> (Vec<f64>, Vec<f64>) {
    let p99 = |p: &str| r.values(p, ServerKind::Coreline, |s| s.p99_us);
    (p99("swapping"), p99("steady"))
}

/// Serving errors (every run) and failed swaps of a model_swap scenario.
fn swap_errors(r: &ScenarioResult) -> (u64, u64) {
    (
        r.runs.iter().map(|x| x.summary.errors).sum(),
        r.swaps.iter().map(|x| x.stats.failures).sum(),
    )
}

/// The p99 ratio against its goal; any serving error or failed swap misses
/// it whatever the ratio (the goal is a swap nobody notices).
fn model_swap_target(r: &ScenarioResult) -> Target {
    let (swapping, steady) = swap_p99s(r);
    let mut t = target(
        "serving p99 while the model is swapped every interval ÷ steady p99",
        SWAP_P99_RATIO_GOAL,
        false,
        paired_ratio(&swapping, &steady),
        match &r.error {
            Some(e) => format!("model_swap scenario failed: {e}"),
            None => format!(
                "scenario `{}`, {} swaps, paired per repetition",
                r.scenario.name,
                r.swaps.iter().map(|x| x.stats.swaps).sum::<u64>()
            ),
        },
    );
    let (errors, failed) = swap_errors(r);
    if errors + failed > 0 {
        t.status = format!("missed ({errors} serving errors, {failed} failed swaps)");
    }
    t
}

/// A model_swap scenario: both points, the paired p99 ratio with its
/// verdict, and what the swaps did.
fn model_swap_table(md: &mut String, r: &ScenarioResult) {
    if let Some(sw) = &r.scenario.swap {
        let _ = writeln!(
            md,
            "Point `swapping`: `PUT /models/{}` every {} ms on the admin port, alternating {} (the config serves the first), from just before the warm-up to the end of the load; `steady`: no swaps. Interleaved steady, swapping per repetition with the same seed.
",
            sw.step,
            sw.interval_ms,
            sw.models
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(" and "),
        );
    }
    point_table(md, r);
    let (swapping, steady) = swap_p99s(r);
    let per: Vec<String> = swapping
        .iter()
        .zip(&steady)
        .map(|(a, b)| format!("{:.2}×", a / b))
        .collect();
    let t = model_swap_target(r);
    let (errors, failed) = swap_errors(r);
    let _ = writeln!(
        md,
        "
p99 swapping ÷ steady: **{}** (per repetition: {}); goal {}: **{}**. Serving errors (both points): {errors}; failed swaps: {failed}.
",
        ratio_iqr(paired_ratio(&swapping, &steady), "×"),
        per.join(", "),
        t.goal,
        t.status,
    );
    md.push_str(
        "| rep | swaps done | failed | PUT p50 ms | PUT max ms | first failure |
|---|---|---|---|---|---|
",
    );
    for s in &r.swaps {
        let put = Spread::of(&s.stats.put_ms);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            s.rep + 1,
            s.stats.swaps,
            s.stats.failures,
            put.map_or("—".into(), |p| num(p.median)),
            put.map_or("—".into(), |p| num(p.max)),
            s.stats.first_failure.as_deref().unwrap_or("—"),
        );
    }
}

/// One row per point (label first) for coreline-only scenarios whose points
/// are variants at one rate.
fn point_table(md: &mut String, r: &ScenarioResult) {
    md.push_str("| point | rate | achieved/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | gen lag p99 µs | cpu stall % |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (point, rate) in &r.points {
        let Some(cells) = coreline_run_cells(r, point) else {
            continue;
        };
        let _ = writeln!(
            md,
            "| {point} | {} | {cells} |",
            rate.map_or("closed".into(), |x| format!("{x:.0}")),
        );
    }
}

/// The p99 of each variant of a checkpoint scenario's pair, per repetition.
fn checkpoint_p99s(r: &ScenarioResult) -> Option<(String, String, Vec<f64>, Vec<f64>)> {
    let labels: Vec<String> = r
        .scenario
        .variants
        .iter()
        .map(|v| v.label.clone())
        .collect();
    let (with, without) = crate::ckpt::ratio_pair(&labels)?;
    let p99 = |l: &str| r.values(l, ServerKind::Coreline, |s| s.p99_us);
    Some((with.into(), without.into(), p99(with), p99(without)))
}

/// Issue 4: p99 with checkpoints ÷ p99 without, ≤ 1.10×.
fn checkpoint_target(results: &[ScenarioResult]) -> Target {
    let name = "p99 under load with 1 s checkpoints ÷ without (keyed state prefilled)";
    let Some(r) = results.iter().find(|r| r.scenario.kind == Kind::Checkpoint) else {
        return target(
            name,
            crate::ckpt::P99_RATIO_GOAL,
            false,
            None,
            "no checkpoint scenario ran".into(),
        );
    };
    let note = match &r.error {
        Some(e) => format!("checkpoint scenario failed: {e}"),
        None => format!(
            "scenario `{}`, {} keys, paired per repetition",
            r.scenario.name, r.scenario.keys
        ),
    };
    let measured = checkpoint_p99s(r).and_then(|(_, _, w, wo)| paired_ratio(&w, &wo));
    target(name, crate::ckpt::P99_RATIO_GOAL, false, measured, note)
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("—".into(), |v| v.to_string())
}

fn checkpoint_table(md: &mut String, r: &ScenarioResult) {
    let s = &r.scenario;
    let _ = writeln!(
        md,
        "{} distinct keys prefilled before every run ({} connections, {} in flight each, body `{}`), then {} req/s over random existing keys (body `{}`). Variants run interleaved with the same seed per repetition; each run checkpoints into a fresh directory. With `full_every = 10` (the default), a load spanning ≥ 10 epochs includes at least one full snapshot of every key.\n",
        s.keys,
        s.prefill.connections,
        s.prefill.pipeline,
        s.prefill.body_template,
        r.points
            .first()
            .and_then(|p| p.1)
            .map_or("—".into(), |x| format!("{x:.0}")),
        s.load.body_template,
    );
    md.push_str("| variant | config | achieved/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | gen lag p99 µs | cpu stall % |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for v in &s.variants {
        let Some(cells) = coreline_run_cells(r, &v.label) else {
            continue;
        };
        let _ = writeln!(md, "| {} | `{}` | {cells} |", v.label, v.config,);
    }
    if let Some((with, without, w, wo)) = checkpoint_p99s(r) {
        let per: Vec<String> = w
            .iter()
            .zip(&wo)
            .map(|(a, b)| format!("{:.2}×", a / b))
            .collect();
        let t = checkpoint_target(std::slice::from_ref(r));
        let _ = writeln!(
            md,
            "\np99 {with} ÷ {without}: **{}** (per repetition: {}); goal {}: **{}**.\n",
            ratio(paired_ratio(&w, &wo)),
            per.join(", "),
            t.goal,
            t.status
        );
    }
    md.push_str("Checkpoint statistics (admin `/stats`; \"start\" = after the prefill and a forced `POST /checkpoint`, \"end\" = when the load stopped):\n\n");
    md.push_str("| variant | rep | prefill s (keys/s) | forced epoch | epochs during load | committed at end | failures | last epoch (kind) | last duration ms | last bytes | last rows | dir bytes after stop |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for c in &r.checkpoint {
        let end = c.at_end.as_ref();
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} ({:.0}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.variant,
            c.rep + 1,
            c.prefill.seconds,
            c.prefill.ok as f64 / c.prefill.seconds.max(1e-9),
            opt(c.forced_epoch),
            opt(c.epochs_during_load),
            opt(end.map(|e| e.committed)),
            opt(end.map(|e| e.failures)),
            end.map_or("— (no checkpoints)".into(), |e| format!(
                "{} ({})",
                e.last_committed_epoch,
                e.last_kind.as_deref().unwrap_or("?")
            )),
            opt(end.map(|e| format!("{:.1}", e.last_duration_ms))),
            opt(end.map(|e| e.last_bytes)),
            opt(end.map(|e| e.last_rows)),
            opt(c.dir_bytes),
        );
    }
}

fn errors_cell(runs: &[&RunSummary]) -> String {
    let total: u64 = runs.iter().map(|r| r.errors).sum();
    if total == 0 {
        return "0".into();
    }
    let sum = |f: fn(&RunSummary) -> u64| runs.iter().map(|r| f(r)).sum::<u64>();
    let parts: Vec<String> = [
        ("non-2xx", sum(|r| r.counts.non_2xx)),
        ("timeout", sum(|r| r.counts.timeouts)),
        ("unsent", sum(|r| r.counts.unsent)),
        ("connect", sum(|r| r.counts.connect_failures)),
        ("io", sum(|r| r.counts.io_errors)),
        ("framing", sum(|r| r.counts.frame_errors)),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    format!("**{total}** ({})", parts.join(", "))
}

fn baselines_in(r: &ScenarioResult) -> Vec<ServerKind> {
    let servers: Vec<ServerKind> = r.runs.iter().map(|x| x.server).collect();
    if !servers.contains(&ServerKind::Coreline) {
        return Vec::new();
    }
    ServerKind::EVERY[1..]
        .iter()
        .copied()
        .filter(|s| servers.contains(s))
        .collect()
}

fn servers_in(r: &ScenarioResult) -> Vec<ServerKind> {
    ServerKind::EVERY
        .iter()
        .copied()
        .filter(|s| r.runs.iter().any(|x| x.server == *s))
        .collect()
}

fn rate_table(md: &mut String, r: &ScenarioResult) {
    let baselines = baselines_in(r);
    let _ = write!(
        md,
        "| rate | server | achieved/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | gen lag p99 µs | cpu stall % |"
    );
    for b in &baselines {
        let _ = write!(md, " p99 ÷ {} |", b.name());
    }
    md.push('\n');
    md.push_str(&"|---".repeat(11 + baselines.len()));
    md.push_str("|\n");
    for (point, rate) in &r.points {
        for server in servers_in(r) {
            let runs: Vec<&RunSummary> = r
                .runs
                .iter()
                .filter(|x| &x.point == point && x.server == server)
                .map(|x| &x.summary)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let v = |f: fn(&RunSummary) -> f64| Spread::of(&r.values(point, server, f));
            let _ = write!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rate.map_or("closed".into(), |x| format!("{x:.0}")),
                server.name(),
                spread(v(|s| s.achieved_rate)),
                spread(v(|s| s.p50_us)),
                spread(v(|s| s.p90_us)),
                spread(v(|s| s.p99_us)),
                spread(v(|s| s.p999_us)),
                spread(v(|s| s.max_us)),
                errors_cell(&runs),
                spread(v(|s| s.lag_p99_us)),
                spread(v(|s| s.cpu_stall_pct)),
            );
            for &b in &baselines {
                let cell = if server == ServerKind::Coreline {
                    ratio(paired_ratio(
                        &r.values(point, server, |s| s.p99_us),
                        &r.values(point, b, |s| s.p99_us),
                    ))
                } else {
                    String::new()
                };
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
    }
}

fn capacity_table(md: &mut String, r: &ScenarioResult) {
    let baselines = baselines_in(r);
    md.push_str("| server | throughput req/s | service p50 µs | service p99 µs | errors | cpu stall % | coreline ÷ server |\n|---|---|---|---|---|---|---|\n");
    let tput = |s: ServerKind| r.values("closed", s, |x| x.achieved_rate);
    for server in servers_in(r) {
        let runs: Vec<&RunSummary> = r
            .runs
            .iter()
            .filter(|x| x.server == server)
            .map(|x| &x.summary)
            .collect();
        let cell = if baselines.contains(&server) {
            ratio(paired_ratio(&tput(ServerKind::Coreline), &tput(server)))
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {cell} |",
            server.name(),
            spread(Spread::of(&tput(server))),
            spread(Spread::of(
                &r.values("closed", server, |x| x.service_p50_us)
            )),
            spread(Spread::of(
                &r.values("closed", server, |x| x.service_p99_us)
            )),
            errors_cell(&runs),
            spread(Spread::of(&r.values("closed", server, |x| x.cpu_stall_pct))),
        );
    }
}

/// Scaling: one row per shard count, with the speed-up over 1 shard.
fn scaling_table(md: &mut String, r: &ScenarioResult) {
    md.push_str("| shards | throughput req/s | ÷ 1 shard | service p50 µs | service p99 µs | errors | generator idle % | cpu stall % |\n|---|---|---|---|---|---|---|---|\n");
    let c = ServerKind::Coreline;
    let one = r.values("shards=1", c, |x| x.achieved_rate);
    for (point, _) in &r.points {
        let runs: Vec<&RunSummary> = r
            .runs
            .iter()
            .filter(|x| &x.point == point)
            .map(|x| &x.summary)
            .collect();
        let tput = r.values(point, c, |x| x.achieved_rate);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            point.trim_start_matches("shards="),
            spread(Spread::of(&tput)),
            ratio(paired_ratio(&tput, &one)),
            spread(Spread::of(&r.values(point, c, |x| x.service_p50_us))),
            spread(Spread::of(&r.values(point, c, |x| x.service_p99_us))),
            errors_cell(&runs),
            spread(Spread::of(&r.values(point, c, |x| x.generator_idle_pct))),
            spread(Spread::of(&r.values(point, c, |x| x.cpu_stall_pct))),
        );
    }
}

fn slo_table(md: &mut String, r: &ScenarioResult) {
    let baselines = baselines_in(r);
    let rates = |s: ServerKind| -> Vec<f64> {
        let mut v: Vec<_> = r.slo.iter().filter(|x| x.server == s).collect();
        v.sort_by_key(|x| x.rep);
        v.iter()
            .map(|x| if x.verified { x.max_rate } else { f64::NAN })
            .collect()
    };
    let _ = writeln!(
        md,
        "| server | max rate holding p99 ≤ {} µs, req/s | per repetition | coreline ÷ server |\n|---|---|---|---|",
        r.scenario.slo_p99_us
    );
    for server in servers_in(r) {
        let per: Vec<String> = rates(server).iter().map(|v| num(*v)).collect();
        let cell = if baselines.contains(&server) {
            ratio(paired_ratio(&rates(ServerKind::Coreline), &rates(server)))
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {cell} |",
            server.name(),
            spread(Spread::of(&rates(server))),
            per.join(", ")
        );
    }
    md.push_str("\nProbes (rate → p99 µs, ✓ pass / ✗ fail):\n\n");
    for s in &r.slo {
        let probes: Vec<String> = s
            .probes
            .iter()
            .map(|(rate, p99, errors, ok)| {
                let e = if *errors > 0 {
                    format!(", {errors} errors")
                } else {
                    String::new()
                };
                format!(
                    "{rate:.0} → {} {}{e}",
                    num(*p99),
                    if *ok { "✓" } else { "✗" }
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "- {} rep {}: {}",
            s.server.name(),
            s.rep + 1,
            probes.join("; ")
        );
    }
}

fn crosscheck_table(md: &mut String, r: &ScenarioResult) {
    md.push_str("| server | wrk req/s | generator req/s | generator ÷ wrk | generator idle % | wrk p99 µs | generator p99 µs (service) | errors (wrk / generator) |\n|---|---|---|---|---|---|---|---|\n");
    for server in servers_in(r) {
        let recs: Vec<_> = r.crosscheck.iter().filter(|c| c.server == server).collect();
        let wrk: Vec<f64> = recs.iter().map(|c| c.wrk_rps.unwrap_or(f64::NAN)).collect();
        let gen_rps: Vec<f64> = recs.iter().map(|c| c.generator_rps).collect();
        let wrk_p99: Vec<f64> = recs
            .iter()
            .map(|c| c.wrk_p99_us.unwrap_or(f64::NAN))
            .collect();
        let gen_p99: Vec<f64> = recs.iter().map(|c| c.generator_p99_us).collect();
        let wrk_err: Vec<&str> = recs
            .iter()
            .filter_map(|c| c.wrk_errors.as_deref())
            .collect();
        let gen_err: u64 = recs.iter().map(|c| c.generator_errors).sum();
        let idle: Vec<f64> = recs.iter().map(|c| c.generator_idle_pct).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {gen_err} |",
            server.name(),
            spread(Spread::of(&wrk)),
            spread(Spread::of(&gen_rps)),
            ratio(paired_ratio(&gen_rps, &wrk)),
            spread(Spread::of(&idle)),
            spread(Spread::of(&wrk_p99)),
            spread(Spread::of(&gen_p99)),
            if wrk_err.is_empty() {
                "0".to_owned()
            } else {
                wrk_err.join("; ")
            },
        );
    }
}

fn machine_section(md: &mut String, m: &Machine) {
    let versions: Vec<String> = m
        .baselines
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| CPU | {} ({} online CPUs{}{}) |",
        m.cpu,
        m.cpus,
        if m.virtualized {
            ", virtual machine"
        } else {
            ""
        },
        if m.smt_siblings_0_1 {
            ", cores 0 and 1 are SMT siblings"
        } else {
            ", cores 0 and 1 are not SMT siblings"
        }
    );
    let _ = writeln!(md, "| kernel | {} |", m.kernel);
    let _ = writeln!(
        md,
        "| load average (start → end) | {} → {} |",
        m.loadavg_start, m.loadavg_end
    );
    let _ = writeln!(md, "| rustc | {} |", m.rustc);
    let _ = writeln!(md, "| coreline | {} |", m.coreline);
    let _ = writeln!(md, "| baselines | {} |", versions.join(", "));
    let _ = writeln!(
        md,
        "| wrk | {} |",
        m.wrk.as_deref().unwrap_or("not installed")
    );
    let _ = writeln!(
        md,
        "| oha | not used: not packaged in Debian 12, and `cargo install oha` (tokio + hyper + TLS) is too heavy to build on this 2-core machine |"
    );
}

const METHOD: &str = "\
- One server at a time, freshly started for every run and pinned to core 0 (all its threads);
  the generator (one thread, epoll, raw TCP + httparse) and wrk are pinned to core 1.
- Open loop: Poisson arrivals at the offered rate; latency is measured from each request's
  *intended* send time (coordinated omission corrected), so a stalled server is charged for
  every request it delayed. One request in flight per connection: a request that comes due
  while its connection is busy waits for it (the wait is charged to the server).
- Runs are interleaved (coreline, axum, actix, floor, coreline, …); all servers of a
  repetition get the same seed (same arrival times, same bodies). Cells are median
  (min–max) over repetitions; ratios are medians of per-repetition ratios.
- Requests that time out or are never sent are errors *and* are recorded in the latency
  histogram at the age they reached (a lower bound), so dropping work never looks fast.
  Only 2xx responses otherwise enter the histograms; every error class is counted.
- \"gen lag\" is how late the generator dispatched requests (its own health): it should be
  a few µs; large values mean the generator, not the server, fell behind.
- Capacity = closed-loop throughput with 16 connections, 1 request in flight each (like wrk).
  \"axum's maximum rate\" in the targets is axum's median capacity.
- The SLO search bisects between the last passing and first failing rate of the sweep;
  a probe passes if p99 ≤ the objective and there are no errors.
- \"generator idle\" (cross-check) is the share of the run the generator spent polling with
  nothing to do: high means the server set the pace, so the generator was not the bottleneck.
- \"cpu stall\" is the share of each run's time in which some task waited for a CPU (Linux PSI);
  it should be near 0, otherwise other processes disturbed the run. A run above
  `--max-stall` (default 10%) is repeated (`--retries`) and the least disturbed attempt kept.
- Lost requests (timeouts, unsent, I/O errors) are counted from the warm-up on as well.
- `.hgrm` files are HdrHistogram percentile distributions in microseconds.";

/// Renders the report body (shared by report.md and RESULTS.md).
pub fn render(
    machine: &Machine,
    results: &[ScenarioResult],
    targets: &[Target],
    command: &str,
    started: &str,
    minutes: f64,
    images: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Command: `{command}` — started {started}, took {minutes:.1} min.\n"
    );
    let stalls: Vec<f64> = results
        .iter()
        .flat_map(|r| r.runs.iter().map(|x| x.summary.cpu_stall_pct))
        .collect();
    if let Some(stall) = Spread::of(&stalls)
        && stall.median > NOISY_STALL_PCT
    {
        let _ = writeln!(
            md,
            "> **Warning: the machine was busy.** Some task waited for a CPU during {:.0}% (median; max {:.0}%) of each run's time (Linux PSI `cpu some`; near 0 when only the server and the generator run). Other processes competed with the server or the generator, so latencies are inflated and ratios noisy: re-run on a quiet machine before trusting them.\n",
            stall.median, stall.max
        );
    }
    md.push_str(
        "## Headline targets (issues 3 and 10: 1 coreline shard vs 1-worker baselines, hello workload; issue 4: checkpoints under load; issue 9: model swaps, replicated upserts)\n\nA target is met or missed only when the interquartile range of its paired ratios lies on one side of the goal; otherwise it is inconclusive.\n\n",
    );
    md.push_str("| target | goal | measured: median of paired ratios (interquartile range, range) | status | source |\n|---|---|---|---|---|\n");
    for t in targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | **{}** | {} |",
            t.name,
            t.goal,
            ratio_iqr(t.measured, t.unit),
            t.status,
            t.note
        );
    }
    md.push_str("\n## Machine\n\n");
    machine_section(&mut md, machine);
    md.push_str("\n## Method\n\n");
    md.push_str(METHOD);
    md.push('\n');
    for kind_first in [true, false] {
        for r in results {
            let is_cross = r.scenario.kind == Kind::Crosscheck;
            if is_cross != kind_first {
                continue;
            }
            let s = &r.scenario;
            let _ = writeln!(md, "\n## {} — `{}`\n", s.title, s.name);
            let _ = writeln!(
                md,
                "{} connections, {:?} arrivals, {} s measured after {} s warm-up, {} repetition(s), body `{}`{}; {:.0} s wall.\n",
                s.load.connections,
                s.load.arrival,
                s.duration,
                s.warmup,
                s.repeats,
                s.load.body_template,
                s.load
                    .key_field
                    .as_deref()
                    .map_or(String::new(), |k| format!(
                        ", ports chosen by hash of `{k}`"
                    )),
                r.seconds
            );
            if let Some(e) = &r.error {
                let _ = writeln!(md, "**FAILED:** {}\n", e.replace('\n', "<br>"));
            }
            if let Some(why) = &r.skipped {
                let _ = writeln!(md, "**Not run here** ({why}).");
                continue;
            }
            if let Some(note) = crate::suite::shared_core_note(s) {
                let _ = writeln!(md, "Note: {note}.\n");
            }
            match s.kind {
                Kind::Capacity => capacity_table(&mut md, r),
                Kind::Scaling => scaling_table(&mut md, r),
                Kind::Forwarding => forwarding_table(&mut md, r),
                Kind::Sweep | Kind::Fixed | Kind::Model => rate_table(&mut md, r),
                Kind::Slo => slo_table(&mut md, r),
                Kind::Crosscheck => crosscheck_table(&mut md, r),
                Kind::Checkpoint => checkpoint_table(&mut md, r),
                Kind::ModelSwap => model_swap_table(&mut md, r),
            }
            if images {
                match s.kind {
                    Kind::Sweep => {
                        let _ =
                            writeln!(md, "\n![p99 vs offered rate](p99_vs_rate_{}.svg)", s.name);
                    }
                    Kind::Fixed | Kind::Checkpoint | Kind::Forwarding | Kind::ModelSwap => {
                        let _ = writeln!(md, "\n![percentile spectrum](spectrum_{}.svg)", s.name);
                    }
                    _ => {}
                }
            }
        }
    }
    md
}

fn plots(out: &Path, results: &[ScenarioResult]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in results.iter().filter(|r| r.skipped.is_none()) {
        let s = &r.scenario;
        let servers = servers_in(r);
        let outcome = match s.kind {
            Kind::Sweep => {
                let series: Vec<_> = servers
                    .iter()
                    .map(|&sv| {
                        let pts = r
                            .points
                            .iter()
                            .filter_map(|(p, rate)| {
                                Some((
                                    rate.as_ref().copied()?,
                                    Spread::of(&r.values(p, sv, |x| x.p99_us))?.median,
                                ))
                            })
                            .collect();
                        (sv, pts)
                    })
                    .collect();
                crate::plot::p99_vs_rate(
                    &out.join(format!("p99_vs_rate_{}.svg", s.name)),
                    &s.title,
                    &series,
                )
            }
            Kind::Checkpoint | Kind::ModelSwap => {
                let series: Vec<_> = r
                    .points
                    .iter()
                    .filter_map(|(label, _)| {
                        let mut runs: Vec<_> =
                            r.runs.iter().filter(|x| &x.point == label).collect();
                        runs.sort_by(|a, b| a.summary.p99_us.total_cmp(&b.summary.p99_us));
                        runs.get(runs.len() / 2)
                            .map(|x| (label.clone(), x.spectrum.clone()))
                    })
                    .collect();
                crate::plot::spectrum_labeled(
                    &out.join(format!("spectrum_{}.svg", s.name)),
                    &s.title,
                    &series,
                )
            }
            Kind::Fixed => {
                let point = r.points.first().map(|p| p.0.clone()).unwrap_or_default();
                let series: Vec<_> = servers
                    .iter()
                    .filter_map(|&sv| {
                        // The repetition with the median p99 represents the server.
                        let mut runs: Vec<_> = r
                            .runs
                            .iter()
                            .filter(|x| x.server == sv && x.point == point)
                            .collect();
                        runs.sort_by(|a, b| a.summary.p99_us.total_cmp(&b.summary.p99_us));
                        runs.get(runs.len() / 2).map(|x| (sv, x.spectrum.clone()))
                    })
                    .collect();
                crate::plot::spectrum(
                    &out.join(format!("spectrum_{}.svg", s.name)),
                    &s.title,
                    &series,
                )
            }
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            problems.push(format!("plot for {}: {e:#}", s.name));
        }
    }
    problems
}

/// Everything summary.json holds.
#[derive(Serialize)]
struct Summary<'a> {
    started: &'a str,
    command: &'a str,
    quick: bool,
    machine: &'a Machine,
    targets: &'a [Target],
    scenarios: &'a [ScenarioResult],
}

/// Writes report.md, summary.json and the plots into `out`, and RESULTS.md
/// into `results_md`. Returns problems that did not stop the report.
#[allow(clippy::too_many_arguments)]
pub fn write(
    out: &Path,
    results_md: &Path,
    machine: &Machine,
    results: &[ScenarioResult],
    command: &str,
    started: &str,
    minutes: f64,
    quick: bool,
) -> Result<Vec<String>> {
    let targets = targets(results);
    let problems = plots(out, results);
    let mut report = format!("# coreline latency report — {started}\n\n");
    report.push_str(&render(
        machine, results, &targets, command, started, minutes, true,
    ));
    report.push_str("\n## Files\n\n- `summary.json`: every run, every number above.\n- `<scenario>/<server>-<point>-rep<k>.hgrm`: corrected latency distribution of each run (µs).\n- `logs/<server>.log`: server output.\n");
    for p in &problems {
        let _ = writeln!(report, "- problem: {p}");
    }
    std::fs::write(out.join("report.md"), &report).context("writing report.md")?;
    let summary = Summary {
        started,
        command,
        quick,
        machine,
        targets: &targets,
        scenarios: results,
    };
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )
    .context("writing summary.json")?;
    let dir_name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut latest = String::from("# Latest latency-suite results\n\n");
    let _ = writeln!(
        latest,
        "Written by `coreline-bench suite` (do not edit by hand). Full report, `.hgrm` files and plots: `latency-tests/reports/{dir_name}/` (not committed).\n"
    );
    latest.push_str(&render(
        machine, results, &targets, command, started, minutes, false,
    ));
    std::fs::write(results_md, latest).context("writing RESULTS.md")?;
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_the_interquartile_range_with_the_goal() {
        let s = |m: f64| {
            Some(Spread {
                median: m,
                q1: m,
                q3: m,
                min: m,
                max: m,
                n: 3,
            })
        };
        let wide = Spread::of(&[1.0, 1.2, 1.35, 1.5, 1.6]);
        assert_eq!(
            target("x", 1.3, true, wide, String::new()).status,
            "inconclusive (IQR crosses the goal)"
        );
        assert_eq!(
            target("x", 1.3, true, Spread::of(&[2.0, 2.0]), String::new()).status,
            "inconclusive (fewer than 3 pairs)"
        );
        assert_eq!(target("x", 1.3, true, s(1.31), String::new()).status, "met");
        assert_eq!(
            target("x", 1.3, true, s(1.29), String::new()).status,
            "missed"
        );
        assert_eq!(
            target("x", 0.7, false, s(0.69), String::new()).status,
            "met"
        );
        assert_eq!(
            target("x", 0.7, false, None, String::new()).status,
            "not measured"
        );
    }

    fn ckpt_result(p99s: &[(f64, f64, f64)]) -> ScenarioResult {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/70_checkpoint.toml"),
        )
        .unwrap();
        let scenario = crate::scenario::Scenario::parse(&text, "70", true).unwrap();
        let run = |label: &str, rep: usize, p99: f64, stall: f64| crate::suite::RunRecord {
            server: ServerKind::Coreline,
            rep,
            point: label.into(),
            target_rate: Some(20000.0),
            summary: RunSummary {
                offered_rate: 20000.0,
                achieved_rate: 20000.0,
                p50_us: 100.0,
                p90_us: 200.0,
                p99_us: p99,
                p999_us: p99,
                max_us: p99,
                mean_us: 100.0,
                service_p50_us: 90.0,
                service_p99_us: p99,
                lag_p99_us: 5.0,
                lag_max_us: 9.0,
                generator_idle_pct: 50.0,
                errors: 0,
                cpu_stall_pct: stall,
                counts: Default::default(),
            },
            hgrm: String::new(),
            attempt: 0,
            spectrum: Vec::new(),
        };
        let mut runs = Vec::new();
        for (rep, &(stall, with, without)) in p99s.iter().enumerate() {
            runs.push(run("ckpt", rep, with, stall));
            runs.push(run("nockpt", rep, without, stall));
        }
        ScenarioResult {
            scenario,
            points: vec![
                ("ckpt".into(), Some(20000.0)),
                ("nockpt".into(), Some(20000.0)),
            ],
            runs,
            slo: Vec::new(),
            crosscheck: Vec::new(),
            checkpoint: Vec::new(),
            swaps: Vec::new(),
            error: None,
            skipped: None,
            seconds: 1.0,
        }
    }

    #[test]
    fn checkpoint_target_is_the_median_paired_p99_ratio() {
        let r = ckpt_result(&[
            (0.0, 105.0, 100.0),
            (0.0, 103.0, 100.0),
            (0.0, 108.0, 100.0),
            (0.0, 300.0, 100.0),
            (0.0, 104.0, 100.0),
        ]);
        let t = checkpoint_target(std::slice::from_ref(&r));
        let m = t.measured.unwrap();
        assert!((m.median - 1.05).abs() < 1e-9, "{m:?}");
        assert_eq!((t.status.as_str(), t.goal.as_str()), ("met", "≤ 1.1×"));
        let r = ckpt_result(&[
            (0.0, 120.0, 100.0),
            (0.0, 130.0, 100.0),
            (0.0, 125.0, 100.0),
        ]);
        assert_eq!(checkpoint_target(&[r]).status, "missed");
        // One bad pair out of three straddles the goal: no verdict.
        let r = ckpt_result(&[(0.0, 120.0, 100.0), (0.0, 130.0, 100.0), (0.0, 90.0, 100.0)]);
        assert_eq!(
            checkpoint_target(&[r]).status,
            "inconclusive (IQR crosses the goal)"
        );
        assert_eq!(checkpoint_target(&[]).status, "not measured");
        // A busy machine makes it inconclusive, like every other verdict.
        let r = ckpt_result(&[
            (20.0, 105.0, 100.0),
            (20.0, 101.0, 100.0),
            (20.0, 103.0, 100.0),
        ]);
        let all = targets(std::slice::from_ref(&r));
        let t = all.iter().find(|t| t.name.contains("checkpoints")).unwrap();
        assert_eq!(t.status, "met (inconclusive: machine busy)");
        let mut md = String::new();
        checkpoint_table(&mut md, &r);
        assert!(md.contains("p99 ckpt ÷ nockpt: **1.03×"), "{md}");
    }

    #[test]
    fn cells_show_median_and_range() {
        assert_eq!(spread(Spread::of(&[10.0, 30.0, 20.0])), "20.0 (10.0–30.0)");
        assert_eq!(spread(Spread::of(&[1234.4])), "1234");
        assert_eq!(ratio(Spread::of(&[0.5, 0.7, 0.6])), "0.60× (0.50–0.70)");
    }
}
