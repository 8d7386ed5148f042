use which::which;

/// The eBPF build needs `bpf-linker` on PATH; rebuild when it changes.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(xlb_variant)");
    println!("cargo::rustc-cfg=xlb_variant");
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
