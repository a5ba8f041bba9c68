//! The simulator's CUDA kernels (ARCHITECTURE.md "Backends"): CUDA C++ sources beside their
//! CPU twins, written in the common subset of CUDA and C so that one source serves both
//! targets:
//! - [`gpu`] (feature `cuda`): compiled at run time by NVRTC for the device's compute
//!   capability (cached per process) and launched with one thread per env;
//! - [`host`]: the same sources compiled as C by `build.rs` and called on the CPU, so that
//!   the parity tests check the kernel code itself against the Rust CPU path on any
//!   machine, with or without a GPU.
//!
//! Kernels so far: the dense Cholesky factorisation, solve and solve adjoint of the
//! mass-matrix stage (`cholesky.cu`; twins [`crate::dynamics::cholesky`],
//! [`crate::dynamics::cholesky_solve`], [`crate::Articulation::solve_vjp`]). The rest of
//! the substep pipeline is still CPU-only.

use diff_core::{Error, Result};

/// Every kernel source of this crate: `(name, source)`. NVRTC compiles each with
/// diff-core's prelude in front (CI compiles them all when NVRTC is installed).
pub const SOURCES: &[(&str, &str)] = &[("sim-rigid/cholesky.cu", include_str!("cholesky.cu"))];

fn check_batch(what: &str, len: usize, n_envs: usize, per_env: usize) -> Result<()> {
    if len != n_envs * per_env {
        return Err(Error::dim(what, n_envs * per_env, len));
    }
    Ok(())
}

fn dims(n_envs: usize, n: usize) -> Result<(i32, i32)> {
    let too_big = |what: &str| Error::InvalidParameter {
        name: what.into(),
        reason: "does not fit the kernels' 32-bit index".into(),
    };
    Ok((
        i32::try_from(n_envs).map_err(|_| too_big("n_envs"))?,
        i32::try_from(n).map_err(|_| too_big("n"))?,
    ))
}

/// The kernels compiled as C for the host (same source as the GPU's).
pub mod host {
    use super::{check_batch, dims};
    use diff_core::Result;
    use std::os::raw::c_int;

    extern "C" {
        fn mbmix_cholesky(n_envs: c_int, n: c_int, a: *const f32, l: *mut f32);
        fn mbmix_cholesky_solve(n_envs: c_int, n: c_int, l: *const f32, b: *mut f32);
        fn mbmix_solve_vjp(
            n_envs: c_int,
            n: c_int,
            l: *const f32,
            qdd: *const f32,
            adj_qdd: *mut f32,
            adj_tau: *mut f32,
            adj_h: *mut f32,
        );
    }

    /// Batched `A = L Lᵀ` (`a`, `l`: `n_envs` row-major n×n matrices).
    pub fn cholesky(n_envs: usize, n: usize, a: &[f32], l: &mut [f32]) -> Result<()> {
        check_batch("cholesky a", a.len(), n_envs, n * n)?;
        check_batch("cholesky l", l.len(), n_envs, n * n)?;
        let (ne, nn) = dims(n_envs, n)?;
        // SAFETY: the lengths were checked against what the kernel indexes.
        unsafe { mbmix_cholesky(ne, nn, a.as_ptr(), l.as_mut_ptr()) };
        Ok(())
    }

    /// Batched solve of `L Lᵀ x = b` in place (`b`: `n_envs` vectors of n).
    pub fn cholesky_solve(n_envs: usize, n: usize, l: &[f32], b: &mut [f32]) -> Result<()> {
        check_batch("cholesky_solve l", l.len(), n_envs, n * n)?;
        check_batch("cholesky_solve b", b.len(), n_envs, n)?;
        let (ne, nn) = dims(n_envs, n)?;
        // SAFETY: as above.
        unsafe { mbmix_cholesky_solve(ne, nn, l.as_ptr(), b.as_mut_ptr()) };
        Ok(())
    }

    /// Batched adjoint of the solve: `adj_qdd` becomes `H⁻¹ adj_qdd`, which is added to
    /// `adj_tau`; `−(H⁻¹ adj_qdd) q̈ᵀ` is added to `adj_h`.
    pub fn solve_vjp(
        n_envs: usize,
        n: usize,
        l: &[f32],
        qdd: &[f32],
        adj_qdd: &mut [f32],
        adj_tau: &mut [f32],
        adj_h: &mut [f32],
    ) -> Result<()> {
        check_batch("solve_vjp l", l.len(), n_envs, n * n)?;
        check_batch("solve_vjp qdd", qdd.len(), n_envs, n)?;
        check_batch("solve_vjp adj_qdd", adj_qdd.len(), n_envs, n)?;
        check_batch("solve_vjp adj_tau", adj_tau.len(), n_envs, n)?;
        check_batch("solve_vjp adj_h", adj_h.len(), n_envs, n * n)?;
        let (ne, nn) = dims(n_envs, n)?;
        // SAFETY: as above.
        unsafe {
            mbmix_solve_vjp(
                ne,
                nn,
                l.as_ptr(),
                qdd.as_ptr(),
                adj_qdd.as_mut_ptr(),
                adj_tau.as_mut_ptr(),
                adj_h.as_mut_ptr(),
            )
        };
        Ok(())
    }
}

/// The kernels on a CUDA device (feature `cuda`).
#[cfg(feature = "cuda")]
pub mod gpu {
    use super::{check_batch, dims};
    use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
    use diff_core::cuda::{driver_error, Gpu};
    use diff_core::Result;
    use std::sync::Arc;

    /// Threads per block: one thread per env.
    const BLOCK: u32 = 128;

    fn config(n_envs: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: ((n_envs as u32).div_ceil(BLOCK).max(1), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// The dense-solve kernels of `cholesky.cu`, loaded on the process's device.
    pub struct Dense {
        gpu: Arc<Gpu>,
        cholesky: CudaFunction,
        solve: CudaFunction,
        solve_vjp: CudaFunction,
    }

    impl std::fmt::Debug for Dense {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Dense").field("gpu", &self.gpu).finish()
        }
    }

    impl Dense {
        /// Opens the device (after checking that the CUDA libraries load) and compiles
        /// `cholesky.cu` with NVRTC, once per process.
        pub fn new() -> Result<Dense> {
            let gpu = Gpu::get()?;
            let (name, src) = super::SOURCES[0];
            let m = gpu.module(name, src)?;
            let f = |n: &str| {
                m.load_function(n)
                    .map_err(|e| driver_error(&format!("kernel `{n}`"), e))
            };
            Ok(Dense {
                cholesky: f("mbmix_cholesky")?,
                solve: f("mbmix_cholesky_solve")?,
                solve_vjp: f("mbmix_solve_vjp")?,
                gpu,
            })
        }

        /// The device.
        pub fn gpu(&self) -> &Arc<Gpu> {
            &self.gpu
        }

        /// Batched `A = L Lᵀ` on the device.
        pub fn cholesky(
            &self,
            n_envs: usize,
            n: usize,
            a: &CudaSlice<f32>,
            l: &mut CudaSlice<f32>,
        ) -> Result<()> {
            check_batch("cholesky a", a.len(), n_envs, n * n)?;
            check_batch("cholesky l", l.len(), n_envs, n * n)?;
            let (ne, nn) = dims(n_envs, n)?;
            let mut b = self.gpu.stream().launch_builder(&self.cholesky);
            b.arg(&ne).arg(&nn).arg(a).arg(l);
            // SAFETY: argument types and lengths match the kernel's signature and indexing.
            unsafe { b.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch mbmix_cholesky", e))
        }

        /// Batched solve of `L Lᵀ x = b` in place on the device.
        pub fn cholesky_solve(
            &self,
            n_envs: usize,
            n: usize,
            l: &CudaSlice<f32>,
            b: &mut CudaSlice<f32>,
        ) -> Result<()> {
            check_batch("cholesky_solve l", l.len(), n_envs, n * n)?;
            check_batch("cholesky_solve b", b.len(), n_envs, n)?;
            let (ne, nn) = dims(n_envs, n)?;
            let mut lb = self.gpu.stream().launch_builder(&self.solve);
            lb.arg(&ne).arg(&nn).arg(l).arg(b);
            // SAFETY: as above.
            unsafe { lb.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch mbmix_cholesky_solve", e))
        }

        /// Batched adjoint of the solve on the device (see [`super::host::solve_vjp`]).
        #[allow(clippy::too_many_arguments)]
        pub fn solve_vjp(
            &self,
            n_envs: usize,
            n: usize,
            l: &CudaSlice<f32>,
            qdd: &CudaSlice<f32>,
            adj_qdd: &mut CudaSlice<f32>,
            adj_tau: &mut CudaSlice<f32>,
            adj_h: &mut CudaSlice<f32>,
        ) -> Result<()> {
            check_batch("solve_vjp l", l.len(), n_envs, n * n)?;
            check_batch("solve_vjp qdd", qdd.len(), n_envs, n)?;
            check_batch("solve_vjp adj_qdd", adj_qdd.len(), n_envs, n)?;
            check_batch("solve_vjp adj_tau", adj_tau.len(), n_envs, n)?;
            check_batch("solve_vjp adj_h", adj_h.len(), n_envs, n * n)?;
            let (ne, nn) = dims(n_envs, n)?;
            let mut b = self.gpu.stream().launch_builder(&self.solve_vjp);
            b.arg(&ne)
                .arg(&nn)
                .arg(l)
                .arg(qdd)
                .arg(adj_qdd)
                .arg(adj_tau)
                .arg(adj_h);
            // SAFETY: as above.
            unsafe { b.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch mbmix_solve_vjp", e))
        }

        /// Uploads a host slice.
        pub fn upload(&self, x: &[f32]) -> Result<CudaSlice<f32>> {
            self.gpu
                .stream()
                .clone_htod(x)
                .map_err(|e| driver_error("upload", e))
        }

        /// Downloads a device slice (synchronising the stream).
        pub fn download(&self, x: &CudaSlice<f32>) -> Result<Vec<f32>> {
            self.gpu
                .stream()
                .clone_dtoh(x)
                .map_err(|e| driver_error("download", e))
        }
    }
}
