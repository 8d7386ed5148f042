use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds the XDP program (`lb-ebpf`) for `bpfel-unknown-none` with the nightly
/// toolchain and leaves it in OUT_DIR, where `include_bytes_aligned!` embeds it.
fn main() -> anyhow::Result<()> {
    git_commit();
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "lb-ebpf")
        .ok_or_else(|| anyhow!("lb-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

/// `XLB_GIT_COMMIT` for `xlb_build_info`: the commit the source was built
/// from, when it is a git checkout (a packager may set the variable
/// instead). Rebuilt when HEAD moves.
fn git_commit() {
    println!("cargo:rerun-if-env-changed=XLB_GIT_COMMIT");
    if std::env::var_os("XLB_GIT_COMMIT").is_some() {
        return;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=XLB_GIT_COMMIT={commit}");
    // HEAD, the branch it names, and packed refs: a commit changes one.
    // Only files that exist: cargo reruns a script whose watched file is
    // missing on every build.
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
    }
    for name in watch {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
