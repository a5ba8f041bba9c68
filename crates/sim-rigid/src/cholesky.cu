// Dense Cholesky factorisation, solve, and the solve's adjoint, one thread per env: the
// CUDA twins of `cholesky`, `cholesky_solve` and `Articulation::solve_vjp` in dynamics.rs
// (same operation order, so f32 results match the CPU path to rounding). Batches are
// env-major: env e's n×n matrix starts at e·n·n (row-major), its vectors at e·n.
// Written in the CUDA/C common subset (see diff-core's cuda_prelude.h).

// A = L Lᵀ, lower triangle written, upper zeroed.
MBMIX_DEVICE void mbmix_cholesky_one(int n, const float* a, float* l) {
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) {
            if (j > i) {
                l[i * n + j] = 0.0f;
                continue;
            }
            float s = a[i * n + j];
            for (int k = 0; k < j; ++k) {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = (i == j) ? sqrtf(s) : s / l[j * n + j];
        }
    }
}

// Solves L Lᵀ x = b in place.
MBMIX_DEVICE void mbmix_cholesky_solve_one(int n, const float* l, float* b) {
    for (int i = 0; i < n; ++i) {
        float s = b[i];
        for (int k = 0; k < i; ++k) {
            s -= l[i * n + k] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
    for (int i = n - 1; i >= 0; --i) {
        float x = b[i] / l[i * n + i];
        b[i] = x;
        for (int k = 0; k < i; ++k) {
            b[k] -= l[i * n + k] * x;
        }
    }
}

MBMIX_KERNEL void mbmix_cholesky(int n_envs, int n, const float* a, float* l) {
    MBMIX_FOR_EACH(e, n_envs) {
        mbmix_cholesky_one(n, a + (long)e * n * n, l + (long)e * n * n);
    }
}

MBMIX_KERNEL void mbmix_cholesky_solve(int n_envs, int n, const float* l, float* b) {
    MBMIX_FOR_EACH(e, n_envs) {
        mbmix_cholesky_solve_one(n, l + (long)e * n * n, b + (long)e * n);
    }
}

// Adjoint of q̈ = H⁻¹ τ: adj_qdd (in) becomes H⁻¹ adj_qdd (out); adds it to adj_tau and
// −(H⁻¹ adj_qdd) q̈ᵀ to adj_h.
MBMIX_KERNEL void mbmix_solve_vjp(int n_envs, int n, const float* l, const float* qdd,
                                  float* adj_qdd, float* adj_tau, float* adj_h) {
    MBMIX_FOR_EACH(e, n_envs) {
        float* b = adj_qdd + (long)e * n;
        const float* x = qdd + (long)e * n;
        float* ah = adj_h + (long)e * n * n;
        mbmix_cholesky_solve_one(n, l + (long)e * n * n, b);
        for (int r = 0; r < n; ++r) {
            adj_tau[(long)e * n + r] += b[r];
            for (int c = 0; c < n; ++c) {
                ah[r * n + c] -= b[r] * x[c];
            }
        }
    }
}
