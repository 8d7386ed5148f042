//! The fuzz targets of `tests/fuzz` (cargo-fuzz, libFuzzer, nightly):
//! `cargo xtask fuzz` runs each for minutes on its committed corpus, adds
//! what it finds to the corpus and minimizes it; `cargo xtask test` runs
//! each for seconds, on a scratch copy, so that a regression fails CI.
//!
//! Built with cargo fuzz's defaults: AddressSanitizer (httparse, the
//! health checks' HTTP parser, has SIMD `unsafe`), debug assertions and
//! overflow checks on. The sanitizer flags reach only the host crates:
//! `lb-user/build.rs` builds the XDP program through aya-build, which
//! gives that cargo its own `CARGO_ENCODED_RUSTFLAGS` (it wins over
//! `RUSTFLAGS`), and cargo fuzz's `--target` keeps them off build scripts.

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

/// The cargo-fuzz `cargo xtask setup` installs.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds each target runs in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 20;

/// Longest one input may take before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_S: u64 = 10;

pub fn fuzz_dir() -> PathBuf {
    workspace_root().join("tests/fuzz")
}

/// The targets: the files of `tests/fuzz/fuzz_targets`.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "rs")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// `cargo +nightly fuzz <subcommand> --fuzz-dir tests/fuzz`.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    // lb-user's build.rs stamps the commit into the build unless this is
    // set: without it every commit would rebuild lb-user (minutes, with
    // one codegen unit) for a fuzz target that never reads it.
    cmd.env("XLB_GIT_COMMIT", "fuzz");
    cmd.current_dir(workspace_root())
        .args(["+nightly", "fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir());
    cmd
}

/// Builds every target once.
pub fn build() -> Result<()> {
    let st = cargo_fuzz("build")
        .status()
        .context("running cargo +nightly fuzz build")?;
    if !st.success() {
        bail!("cargo +nightly fuzz build failed ({st})");
    }
    Ok(())
}

/// What one run of a target did.
pub struct Run {
    pub target: String,
    /// Inputs run, and per second, as libFuzzer counted them.
    pub execs: u64,
    pub execs_per_s: u64,
    /// Files in the corpus it wrote to, after the run.
    pub corpus_files: usize,
    /// `None`: no finding. Else what libFuzzer said, and the inputs it
    /// saved.
    pub finding: Option<Finding>,
}

pub struct Finding {
    pub summary: Vec<String>,
    pub artifacts: Vec<PathBuf>,
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Runs `target` for `seconds`. `scratch`: new inputs go to a scratch
/// directory and the committed corpus is only read; else they go to the
/// committed corpus. The fuzzer's output goes to a log under the fuzz
/// target directory; a finding keeps its last lines.
pub fn run(target: &str, seconds: u64, scratch: bool) -> Result<Run> {
    let fuzz = fuzz_dir();
    let corpus = fuzz.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let artifacts = fuzz.join("artifacts").join(target);
    let before = files(&artifacts);
    let logs = fuzz.join("target/xtask");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{target}.log"));
    let mut cmd = cargo_fuzz("run");
    cmd.arg(target);
    let grows = if scratch {
        let dir = logs.join("corpus").join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        cmd.arg(&dir).arg(&corpus);
        dir
    } else {
        cmd.arg(&corpus);
        corpus.clone()
    };
    cmd.arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg("-print_final_stats=1");
    let dict = fuzz.join("dicts").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let st = cmd
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .status()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let lines: Vec<String> = BufReader::new(File::open(&log)?)
        .lines()
        .map_while(Result::ok)
        .collect();
    let stat = |name: &str| {
        lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let new: Vec<PathBuf> = files(&artifacts)
        .into_iter()
        .filter(|a| !before.contains(a))
        .collect();
    let finding = (!st.success() || !new.is_empty()).then(|| Finding {
        summary: lines
            .iter()
            .skip(lines.len().saturating_sub(40))
            .cloned()
            .chain([format!("(exit: {st}; the whole log: {})", log.display())])
            .collect(),
        artifacts: new,
    });
    Ok(Run {
        target: target.to_owned(),
        execs: stat("number_of_executed_units"),
        execs_per_s: stat("average_exec_per_sec"),
        corpus_files: files(&grows).len(),
        finding,
    })
}

/// Inputs of a corpus named `finding-*`: what a fuzzer once found, kept
/// whatever their coverage.
const FINDING_PREFIX: &str = "finding-";

/// Minimizes the committed corpus of `target` (`cargo fuzz cmin`): the
/// fewest inputs that reach every edge the corpus reaches (set cover, hit
/// counts not told apart), which keeps a corpus at a few hundred files.
/// The `finding-*` inputs stay.
pub fn cmin(target: &str) -> Result<()> {
    let fuzz = fuzz_dir();
    let corpus = fuzz.join("corpus").join(target);
    let logs = fuzz.join("target/xtask");
    let kept = logs.join("findings").join(target);
    let _ = std::fs::remove_dir_all(&kept);
    std::fs::create_dir_all(&kept)?;
    let findings: Vec<PathBuf> = files(&corpus)
        .into_iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(FINDING_PREFIX))
        })
        .collect();
    for f in &findings {
        std::fs::copy(f, kept.join(f.file_name().expect("a file")))?;
    }
    let log = File::create(logs.join(format!("{target}.cmin.log")))?;
    let st = cargo_fuzz("cmin")
        .arg(target)
        .args(["--", "-set_cover_merge=1", "-use_counters=0"])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .status()
        .context("running cargo fuzz cmin")?;
    for f in files(&kept) {
        std::fs::copy(&f, corpus.join(f.file_name().expect("a file")))?;
    }
    if !st.success() {
        bail!(
            "cargo fuzz cmin {target} failed ({st}); see {}",
            logs.join(format!("{target}.cmin.log")).display()
        );
    }
    Ok(())
}

/// Prints a finding: what libFuzzer said, and how to replay it.
pub fn report(run: &Run) {
    let Some(f) = &run.finding else { return };
    for line in &f.summary {
        eprintln!("    {line}");
    }
    for a in &f.artifacts {
        eprintln!(
            "    replay: XLB_GIT_COMMIT=fuzz cargo +nightly fuzz run --fuzz-dir tests/fuzz {} {}",
            run.target,
            a.display()
        );
    }
}

/// `cargo xtask fuzz`: every target (or `only`) for `minutes` each, new
/// inputs kept in the committed corpus, which is then minimized.
pub fn main(minutes: f64, only: Option<&str>) -> Result<bool> {
    let all = targets()?;
    let chosen: Vec<String> = match only {
        Some(t) if !all.iter().any(|a| a == t) => {
            bail!("no fuzz target {t:?} (targets: {})", all.join(", "))
        }
        Some(t) => vec![t.to_owned()],
        None => all,
    };
    let seconds = (minutes * 60.0).round().max(1.0) as u64;
    build()?;
    let mut failed = Vec::new();
    for t in &chosen {
        let start = Instant::now();
        let r = run(t, seconds, false)?;
        if r.finding.is_none() {
            cmin(t)?;
        }
        let kept = files(&fuzz_dir().join("corpus").join(t)).len();
        println!(
            "fuzz {t}: {} in {:.0} s, {} runs ({}/s), corpus {kept} files",
            if r.finding.is_some() { "FINDING" } else { "ok" },
            start.elapsed().as_secs_f64(),
            r.execs,
            r.execs_per_s
        );
        if r.finding.is_some() {
            report(&r);
            failed.push(t.clone());
        }
    }
    if failed.is_empty() {
        println!("xtask fuzz: no finding in {} targets", chosen.len());
        Ok(true)
    } else {
        println!("xtask fuzz: FINDINGS in {}", failed.join(", "));
        Ok(false)
    }
}
