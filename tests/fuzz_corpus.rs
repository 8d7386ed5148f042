//! The fuzz corpora as regression tests (stable toolchain, no root): every
//! file of `fuzz/corpus/<target>/` and every seed goes through its target's
//! checks (`tests/fuzz-checks`), as libFuzzer would run it. A failure names
//! the file; replay it under the fuzzer with
//! `cargo +nightly fuzz run --fuzz-dir tests/fuzz <target> <file>`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use xlb_fuzz_checks::{TARGETS, seeds::seeds};

/// Bounds that keep a corpus reviewable (`cargo fuzz cmin` shrinks one).
const MAX_FILES: usize = 400;
const MAX_BYTES: u64 = 1024 * 1024;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on `input`; the panic message if it panics.
fn run(check: xlb_fuzz_checks::Check, input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| check(input))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

#[test]
fn the_targets_are_the_fuzz_crates_and_each_calls_its_check() {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    listed.sort();
    assert_eq!(found, listed, "fuzz_targets/ and xlb_fuzz_checks::TARGETS");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in listed {
        let src = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        assert!(
            src.contains(&format!("xlb_fuzz_checks::{name}(data)")),
            "fuzz_targets/{name}.rs does not call xlb_fuzz_checks::{name}"
        );
        assert!(
            manifest.contains(&format!(
                "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
            )),
            "tests/fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}

#[test]
fn every_target_has_a_small_corpus() {
    for (target, _) in TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "corpus/{target} is empty");
        let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
        assert!(
            files.len() < MAX_FILES && bytes < MAX_BYTES,
            "corpus/{target}: {} files, {bytes} bytes; minimize it with \
             `cargo +nightly fuzz cmin --fuzz-dir tests/fuzz {target}`",
            files.len()
        );
    }
}

#[test]
fn every_corpus_file_passes_its_targets_checks() {
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        let files = corpus(target);
        for f in &files {
            if let Err(why) = run(check, &std::fs::read(f).unwrap()) {
                failed.push(format!("{}: {why}", f.display()));
            }
        }
        println!("{target}: {} corpus files", files.len());
    }
    assert!(failed.is_empty(), "failing inputs:\n{}", failed.join("\n"));
}

#[test]
fn every_seed_passes_its_targets_checks() {
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "{target} has no seeds");
        for (i, s) in seeds.iter().enumerate() {
            if let Err(why) = run(check, s) {
                failed.push(format!("{target} seed {i}: {why}"));
            }
        }
    }
    assert!(failed.is_empty(), "failing seeds:\n{}", failed.join("\n"));
}
