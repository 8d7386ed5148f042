//! `xlb-fuzz-seeds DIR`: writes the seeds of every fuzz target to
//! `DIR/<target>/seed-<n>`, to start (or widen) a corpus:
//! `cargo run -p xlb-fuzz-checks --bin xlb-fuzz-seeds -- tests/fuzz/corpus`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: xlb-fuzz-seeds DIR");
        std::process::exit(2);
    };
    for (target, _) in xlb_fuzz_checks::TARGETS {
        let to = dir.join(target);
        std::fs::create_dir_all(&to)?;
        let seeds = xlb_fuzz_checks::seeds::seeds(target);
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(to.join(format!("seed-{i}")), seed)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), to.display());
    }
    Ok(())
}
