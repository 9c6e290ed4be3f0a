//! Compiles the agent's BPF programs (clang, `-target bpf`) and generates their Rust skeletons,
//! so the programs ship inside the binary and no node needs a compiler or kernel headers.

use std::path::PathBuf;

/// Each program and the skeleton it becomes.
const PROGRAMS: [(&str, &str); 2] = [
    ("src/bpf/lockstat.bpf.c", "lockstat.skel.rs"),
    ("src/bpf/profile.bpf.c", "profile.skel.rs"),
];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (program, skeleton) in PROGRAMS {
        if let Err(error) = libbpf_cargo::SkeletonBuilder::new()
            .source(program)
            .build_and_generate(out.join(skeleton))
        {
            // clang is the one build tool beyond Rust's: name it, as scripts/install-deps.sh
            // does.
            panic!("building {program} (needs clang: apt-get install clang): {error:#}");
        }
        println!("cargo:rerun-if-changed={program}");
    }
    println!("cargo:rerun-if-changed=src/bpf/kernel_types.h");
}
