//! `cargo xtask test`: build the `xlb` binary and every test binary, run
//! each test binary on its own (so one that fails or crashes does not stop
//! the others), and end with one line that says what failed.
//!
//! Arguments before `--` select what to build, as for `cargo test` (`-p
//! lb-user`, `--test golden`); arguments after it go to every test binary
//! (a name filter, `--nocapture`, `--test-threads 1`).
//!
//! When the fuzz corpora's test binary is among them (the whole suite, or
//! `--test fuzz_corpus`), each fuzz target then runs for
//! [`fuzz::TEST_SECONDS`] and counts like a test binary (`fuzz <target>`):
//! a regression no corpus file catches can still fail.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{cargo, fuzz};

/// The test binary that replays the fuzz corpora.
const FUZZ_CORPUS: &str = "xlb-tests --test fuzz_corpus";

/// One test binary cargo built.
struct TestBinary {
    /// `lb-user (lib)`, `xlb-tests --test golden`, ...
    name: String,
    executable: PathBuf,
    /// The package's directory: cargo runs tests from there.
    dir: PathBuf,
}

/// What one test binary did.
struct Outcome {
    name: String,
    passed: u64,
    failed_tests: Vec<String>,
    /// `None` when the binary ran to its own verdict; else why it did not
    /// count as passing (exit status, or a signal).
    error: Option<String>,
}

pub fn run(args: &[String]) -> Result<bool> {
    let (cargo_args, harness_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let xlb = build_xlb()?;
    let binaries = build_tests(cargo_args)?;
    if binaries.is_empty() {
        bail!("cargo built no test binaries for {cargo_args:?}");
    }
    let mut outcomes = Vec::with_capacity(binaries.len());
    for b in &binaries {
        outcomes.push(run_one(b, harness_args, &xlb)?);
    }
    let binaries_run = outcomes.len();
    if binaries.iter().any(|b| b.name == FUZZ_CORPUS) {
        outcomes.extend(run_fuzz()?);
    }
    let what_ran = match outcomes.len() - binaries_run {
        0 => plural(binaries_run, "test binary", "test binaries"),
        n => format!(
            "{} and {}",
            plural(binaries_run, "test binary", "test binaries"),
            plural(n, "fuzz target", "fuzz targets")
        ),
    };
    let passed: u64 = outcomes.iter().map(|o| o.passed).sum();
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.error.is_some() || !o.failed_tests.is_empty())
        .collect();
    println!();
    if failed.is_empty() {
        println!("xtask test: all {what_ran} passed ({passed} tests)");
        return Ok(true);
    }
    let what: Vec<String> = failed
        .iter()
        .map(|o| {
            let mut parts = o.failed_tests.clone();
            if let Some(e) = &o.error
                && o.failed_tests.is_empty()
            {
                parts.push(e.clone());
            }
            format!("{} ({})", o.name, parts.join(", "))
        })
        .collect();
    println!(
        "xtask test: FAILED: {} of {what_ran} ({passed} tests passed): {}",
        failed.len(),
        what.join("; ")
    );
    Ok(false)
}

/// Builds the fuzz targets once and runs each for a few seconds, new
/// inputs kept out of the committed corpus.
fn run_fuzz() -> Result<Vec<Outcome>> {
    let targets = fuzz::targets()?;
    let outcome = |target: &str, error: Option<String>| Outcome {
        name: format!("fuzz {target}"),
        passed: 0,
        failed_tests: Vec::new(),
        error,
    };
    println!(
        "     Fuzzing {} targets, {} s each",
        targets.len(),
        fuzz::TEST_SECONDS
    );
    if let Err(e) = fuzz::build() {
        return Ok(targets
            .iter()
            .map(|t| outcome(t, Some(format!("not built: {e:#}"))))
            .collect());
    }
    let mut out = Vec::with_capacity(targets.len());
    for t in &targets {
        let r = fuzz::run(t, fuzz::TEST_SECONDS, true)?;
        let verdict = if r.finding.is_some() { "FINDING" } else { "ok" };
        println!(
            "fuzz {t}: {verdict}, {} runs ({}/s), {} new inputs",
            r.execs, r.execs_per_s, r.corpus_files
        );
        fuzz::report(&r);
        out.push(outcome(
            t,
            r.finding.map(|f| match f.artifacts.first() {
                Some(a) => format!("finding {}", a.display()),
                None => "the fuzzer failed".to_owned(),
            }),
        ));
    }
    Ok(out)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Builds the `xlb` binary the end-to-end tests run; returns its path.
fn build_xlb() -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--bin",
        "xlb",
        "--message-format=json-render-diagnostics",
    ]);
    let mut found = None;
    for msg in cargo_messages(cmd)? {
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "xlb"
            && let Some(exe) = msg["executable"].as_str()
        {
            found = Some(PathBuf::from(exe));
        }
    }
    found.context("cargo built no xlb executable")
}

/// `cargo test --no-run` with `cargo_args`: every test binary it built.
fn build_tests(cargo_args: &[String]) -> Result<Vec<TestBinary>> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .args(cargo_args);
    let mut out = Vec::new();
    for msg in cargo_messages(cmd)? {
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let package = msg["package_id"]
            .as_str()
            .and_then(package_name)
            .unwrap_or("?");
        let target = msg["target"]["name"].as_str().unwrap_or("?");
        let kind = msg["target"]["kind"][0].as_str().unwrap_or("?");
        let name = match kind {
            "test" => format!("{package} --test {target}"),
            "bin" => format!("{package} --bin {target}"),
            _ => format!("{package} ({kind})"),
        };
        let dir = msg["manifest_path"]
            .as_str()
            .and_then(|m| PathBuf::from(m).parent().map(PathBuf::from))
            .unwrap_or_default();
        out.push(TestBinary {
            name,
            executable: PathBuf::from(exe),
            dir,
        });
    }
    Ok(out)
}

/// The package name in a cargo package id (`path+file:///x/lb-user#0.1.0`
/// or `path+file:///x/tests#xlb-tests@0.1.0`).
fn package_name(id: &str) -> Option<&str> {
    let (path, rest) = id.rsplit_once('#')?;
    match rest.split_once('@') {
        Some((name, _)) => Some(name),
        None => path.rsplit('/').next(),
    }
}

/// Runs `cmd` (a cargo command with a JSON message format), passing its
/// stderr through; returns its messages. Fails if cargo fails.
fn cargo_messages(mut cmd: Command) -> Result<Vec<Value>> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Runs one test binary, its output passed through as it comes, and reads
/// its verdict from the harness's own lines.
fn run_one(b: &TestBinary, harness_args: &[String], xlb: &PathBuf) -> Result<Outcome> {
    println!("     Running {} ({})", b.name, b.executable.display());
    let mut child = Command::new(&b.executable)
        .args(harness_args)
        .current_dir(&b.dir)
        .env("XLB_EXE", xlb)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", b.executable.display()))?;
    let stdout = child.stdout.take().context("test binary stdout")?;
    let mut outcome = Outcome {
        name: b.name.clone(),
        passed: 0,
        failed_tests: Vec::new(),
        error: None,
    };
    let mut verdict = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        if let Some(test) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            outcome.failed_tests.push(test.to_owned());
        }
        if let Some(result) = line.strip_prefix("test result: ") {
            verdict = true;
            outcome.passed += count(result, "passed");
        }
    }
    let status = child.wait().context("waiting for a test binary")?;
    if !status.success() {
        outcome.error = Some(match status.code() {
            Some(c) => format!("exit status {c}"),
            None => format!("killed: {status}"),
        });
    } else if !verdict {
        outcome.error = Some("no test result printed".into());
    }
    Ok(outcome)
}

/// `N` out of `ok. N passed; 0 failed; ...` for `what` = "passed".
fn count(result: &str, what: &str) -> u64 {
    result
        .split([';', '.'])
        .filter_map(|part| part.trim().strip_suffix(what))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_names_and_counts() {
        assert_eq!(
            package_name("path+file:///w/tests#xlb-tests@0.1.0"),
            Some("xlb-tests")
        );
        assert_eq!(
            package_name("path+file:///w/lb-user#0.1.0"),
            Some("lb-user")
        );
        let r = "ok. 13 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.60s";
        assert_eq!(count(r, "passed"), 13);
        assert_eq!(count(r, "failed"), 1);
    }
}
