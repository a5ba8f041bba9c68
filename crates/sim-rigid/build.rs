//! Compiles the CUDA kernel sources as plain C for the host (they are written in the
//! common subset, see diff-core's `cuda_prelude.h`), so the CPU parity tests run the very
//! kernel code without a GPU. NVRTC compiles the same files for the GPU at run time
//! (feature `cuda`).

const KERNELS: &[&str] = &["src/cholesky.cu"];

fn main() {
    let prelude = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../diff-core/src/cuda_prelude.h"
    );
    println!("cargo:rerun-if-changed={prelude}");
    let mut build = cc::Build::new();
    build
        .flag("-include")
        .flag(prelude)
        .flag("-std=c11")
        // the CPU twins do not fuse multiply-adds; neither may the host build
        .flag_if_supported("-ffp-contract=off")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .opt_level(2);
    for k in KERNELS {
        println!("cargo:rerun-if-changed={k}");
        // `-x c` before each file: the `.cu` extension means nothing to a C compiler
        build.flag("-x").flag("c").file(k);
    }
    build.compile("sim_rigid_host_kernels");
}
