//! Compiles the agent's BPF program (clang, `-target bpf`) and generates its Rust skeleton,
//! so the program ships inside the binary and no node needs a compiler or kernel headers.

use std::path::PathBuf;

const PROGRAM: &str = "src/bpf/lockstat.bpf.c";

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(error) = libbpf_cargo::SkeletonBuilder::new()
        .source(PROGRAM)
        .build_and_generate(out.join("lockstat.skel.rs"))
    {
        // clang is the one build tool beyond Rust's: name it, as scripts/install-deps.sh does.
        panic!("building {PROGRAM} (needs clang: apt-get install clang): {error:#}");
    }
    println!("cargo:rerun-if-changed={PROGRAM}");
}
