use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds the test XDP programs (`xlb-testbed-ebpf`: pass, floor,
/// end-to-end floor, generator) for `bpfel-unknown-none` with the nightly
/// toolchain and leaves them in OUT_DIR, where `include_bytes_aligned!` embeds them.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "xlb-testbed-ebpf")
        .ok_or_else(|| anyhow!("xlb-testbed-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // The variant program is lb-ebpf's sources built from testbed-ebpf.
    for dir in ["../../lb-ebpf/src", "../../lb-common/src"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
