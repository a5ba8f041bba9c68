//! Compiles the CUDA kernel sources as plain C for the host (they are written in the
//! common subset, see diff-core's `cuda_prelude.h`), so the CPU parity tests run the very
//! kernel code without a GPU. The files form one translation unit, in the order NVRTC gets
//! them (`kernels::module_source`), since later files use earlier files' helpers. NVRTC
//! compiles the same files for the GPU at run time (feature `cuda`).

use std::path::Path;

/// Must match `kernels::KERNEL_FILES`.
const KERNELS: &[&str] = &[
    "src/cholesky.cu",
    "src/step.cu",
    "src/step_vjp.cu",
    "src/locomotion.cu",
    "src/planar.cu",
    "src/cartpole.cu",
    "src/window.cu",
];

fn main() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let prelude = format!("{dir}/../diff-core/src/cuda_prelude.h");
    println!("cargo:rerun-if-changed={prelude}");
    let mut unit = format!("#include \"{prelude}\"\n");
    for k in KERNELS {
        println!("cargo:rerun-if-changed={k}");
        unit.push_str(&format!("#include \"{dir}/{k}\"\n"));
    }
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let file = Path::new(&out).join("sim_rigid_kernels.c");
    std::fs::write(&file, unit).expect("write the kernels' translation unit");
    cc::Build::new()
        .file(&file)
        .flag("-std=c11")
        // the CPU twins do not fuse multiply-adds; neither may the host build
        .flag_if_supported("-ffp-contract=off")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .opt_level(2)
        .compile("sim_rigid_host_kernels");
}
