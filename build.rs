//! Records the git commit and the enabled Cargo features for `coreline version`.
//!
//! The commit comes from `CORELINE_GIT_COMMIT` when set (release builds from
//! a tarball), else from `git rev-parse`, else "unknown": a build never fails
//! for want of git.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CORELINE_GIT_COMMIT");
    let commit = std::env::var("CORELINE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CORELINE_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: the HEAD file (a worktree's lives under its
    // git dir) and the branch it points to.
    let mut watch = vec!["HEAD".to_owned()];
    watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for what in watch {
        if let Some(path) = git(&["rev-parse", "--git-path", &what]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_owned))
        .map(|f| f.to_lowercase().replace('_', "-"))
        .collect();
    features.sort();
    println!("cargo:rustc-env=CORELINE_FEATURES={}", features.join(","));
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=CORELINE_PROFILE={profile}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}
