//! The CUDA runtime shared by the simulators' kernels (feature `cuda`): library checks, a
//! device context, and NVRTC compilation of the kernels' CUDA C++ sources, cached per
//! process.
//!
//! cudarc loads the driver (`libcuda`) and NVRTC (`libnvrtc`) dynamically and **panics**
//! on first use when a library is missing; every entry point here checks that the library
//! loads first and returns [`Error::DeviceUnavailable`] naming it instead, so a machine
//! without a GPU gets a clear message and never a panic.
//!
//! Kernel sources are `.cu` files beside their CPU twins. They include no headers (NVRTC
//! has no CUDA toolkit behind it here) and start with [`PRELUDE`], which also lets the same
//! source compile as plain C++ on the host for the CPU parity harness (`__CUDACC__` is
//! undefined there, so the CUDA qualifiers become no-ops and the thread index a variable
//! the harness sets).

use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaModule, CudaStream};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Shared definitions every kernel source starts with (pasted in front of it before
/// compilation, so sources need no `#include`).
pub const PRELUDE: &str = include_str!("cuda_prelude.h");

fn unavailable(reason: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        device: "cuda".into(),
        reason: reason.into(),
    }
}

/// Whether the CUDA driver library loads (it ships with the NVIDIA driver).
pub fn driver_present() -> bool {
    // SAFETY: only tries `dlopen` on cudarc's candidate names; nothing is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether the NVRTC library loads (CUDA toolkit, or the `nvidia-cuda-nvrtc` wheel's
/// `lib` directory on `LD_LIBRARY_PATH`).
pub fn nvrtc_present() -> bool {
    // SAFETY: as in `driver_present`.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Checks that NVRTC loads.
pub fn check_nvrtc() -> Result<()> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err(unavailable(
            "the NVRTC library (libnvrtc.so) was not found: install the CUDA toolkit or the \
             `nvidia-cuda-nvrtc` Python wheel and put its `lib` directory on LD_LIBRARY_PATH",
        ))
    }
}

/// Checks that the driver and NVRTC load.
pub fn check_libraries() -> Result<()> {
    if !driver_present() {
        return Err(unavailable(
            "the CUDA driver library (libcuda.so) was not found: this machine has no NVIDIA \
             driver (no GPU), or its library directory is not on LD_LIBRARY_PATH",
        ));
    }
    check_nvrtc()
}

/// The full source NVRTC compiles: [`PRELUDE`] then the kernel file.
pub fn full_source(src: &str) -> String {
    format!("{PRELUDE}\n{src}")
}

/// Compiles a kernel source to PTX for a virtual architecture (`compute_XY`) with NVRTC,
/// without a GPU: what CI runs so that a syntax or type error in a `.cu` file fails the
/// build. The error carries NVRTC's log.
pub fn compile_ptx(name: &str, src: &str, arch: &'static str) -> Result<Ptx> {
    check_nvrtc()?;
    let opts = CompileOptions {
        arch: Some(arch),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(full_source(src), opts).map_err(|e| {
        unavailable(format!(
            "NVRTC could not compile kernel source `{name}`: {e:?}"
        ))
    })
}

/// A CUDA device with its stream and the modules compiled for it so far.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

/// `compute_XY` for a compute capability, as a `'static` string (NVRTC's option type).
fn arch_name(major: i32, minor: i32) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<(i32, i32), &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    names
        .entry((major, minor))
        .or_insert_with(|| Box::leak(format!("compute_{major}{minor}").into_boxed_str()))
}

impl Gpu {
    /// The process-wide device 0, opened on first use (after the library checks).
    pub fn get() -> Result<Arc<Gpu>> {
        static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
        if let Some(g) = GPU.get() {
            return Ok(g.clone());
        }
        let g = Arc::new(Gpu::open(0)?);
        Ok(GPU.get_or_init(|| g).clone())
    }

    /// Opens device `ordinal`.
    pub fn open(ordinal: usize) -> Result<Gpu> {
        check_libraries()?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| unavailable(format!("cannot open CUDA device {ordinal}: {e:?}")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| unavailable(format!("cannot query the compute capability: {e:?}")))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            arch: arch_name(major, minor),
            name,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// The device's name and architecture, e.g. `NVIDIA H100 80GB HBM3 (compute_90)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.arch)
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream kernels run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The module of kernel source `name`, compiled by NVRTC for this device on first use
    /// and cached for the process.
    pub fn module(&self, name: &'static str, src: &str) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(name) {
            return Ok(m.clone());
        }
        let ptx = compile_ptx(name, src, self.arch)?;
        let m = self
            .ctx
            .load_module(ptx)
            .map_err(|e| unavailable(format!("cannot load module `{name}`: {e:?}")))?;
        modules.insert(name, m.clone());
        Ok(m)
    }
}

/// Maps a driver error to [`Error::DeviceUnavailable`] with context.
pub fn driver_error(what: &str, e: cudarc::driver::DriverError) -> Error {
    unavailable(format!("{what}: {e:?}"))
}
