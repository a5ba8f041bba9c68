// The glue of a window kept on the device (`resident.rs`): everything between the task's
// state rows and the physics kernels, so that a window's states never leave the device.
// CPU twins: `batch::KernelEnv` (split, actuation, join with the extra state, and their
// VJPs), `diff_core::BatchEnv::step` (the non-finite guard, the resets) and the reverse
// sweep of `mbmix_policy::window` (carry across steps, rows zeroed); every expression keeps
// their operation order (bit-identical host build).
//
// Glue model `gi` = [n_q, n_qd, state_dim, act_dim, n_act, n_extra, dof_0, …, dof_{n_act−1}]
// and `gd` = [gain_0, …, gain_{n_act−1}] (f64, cast to float as the CPU's `T::cst`):
// actuation act[dof_k] = gain_k·clip(a_k) (zero on the other DOFs); the state row is
// [q, q̇, extra] with extra_k = clip(a_k) of the step's action for k < n_extra. Row masks are
// ints (nonzero = set).

MBMIX_DEVICE float window_clip(float a) {
    if (a > 1.0f) {
        return 1.0f;
    } else if (a < -1.0f) {
        return -1.0f;
    }
    return a;
}

MBMIX_DEVICE int window_unclipped(float a) { return !(a > 1.0f) && !(a < -1.0f); }

// q = s[0..n_q], q̇ = s[n_q..n_q+n_qd] of each state row (also splits an adjoint row).
MBMIX_KERNEL void mbmix_window_split(int n_envs, const int* gi, const float* states, float* q,
                                     float* qd) {
    int nq = gi[0], nd = gi[1], sd = gi[2];
    MBMIX_FOR_EACH(e, n_envs) {
        const float* s = states + (long)e * sd;
        for (int i = 0; i < nq; ++i) {
            q[(long)e * nq + i] = s[i];
        }
        for (int i = 0; i < nd; ++i) {
            qd[(long)e * nd + i] = s[nq + i];
        }
    }
}

// act[dof_k] = gain_k·clip(a_k), zero elsewhere (`tasks::actuate`).
MBMIX_KERNEL void mbmix_window_actuate(int n_envs, const int* gi, const double* gd,
                                       const float* actions, float* act) {
    int nd = gi[1], ad = gi[3], n_act = gi[4];
    MBMIX_FOR_EACH(e, n_envs) {
        const float* a = actions + (long)e * ad;
        float* u = act + (long)e * nd;
        for (int i = 0; i < nd; ++i) {
            u[i] = 0.0f;
        }
        for (int k = 0; k < n_act; ++k) {
            u[gi[6 + k]] = window_clip(a[k]) * (float)gd[k];
        }
    }
}

// next = [q_out, q̇_out, clip(a_0..n_extra)] (`KernelEnv::step` with `extra_step`).
MBMIX_KERNEL void mbmix_window_join(int n_envs, const int* gi, const float* actions,
                                    const float* q_out, const float* qd_out,
                                    float* next_states) {
    int nq = gi[0], nd = gi[1], sd = gi[2], ad = gi[3], n_extra = gi[5];
    MBMIX_FOR_EACH(e, n_envs) {
        float* s = next_states + (long)e * sd;
        for (int i = 0; i < nq; ++i) {
            s[i] = q_out[(long)e * nq + i];
        }
        for (int i = 0; i < nd; ++i) {
            s[nq + i] = qd_out[(long)e * nd + i];
        }
        for (int k = 0; k < n_extra; ++k) {
            s[nq + nd + k] = window_clip(actions[(long)e * ad + k]);
        }
    }
}

// The rest of the step's VJP after the physics kernel (`KernelEnv::step_vjp`): adds
// (adj_q, adj_qd) into the state adjoint, then the actuation's VJP and the extra state's
// VJP into the action adjoint, in that order.
MBMIX_KERNEL void mbmix_window_step_vjp_finish(int n_envs, const int* gi, const double* gd,
                                               const float* actions, const float* adj_next,
                                               const float* adj_q, const float* adj_qd,
                                               const float* adj_act, float* adj_states,
                                               float* adj_actions) {
    int nq = gi[0], nd = gi[1], sd = gi[2], ad = gi[3], n_act = gi[4], n_extra = gi[5];
    MBMIX_FOR_EACH(e, n_envs) {
        float* as = adj_states + (long)e * sd;
        float* aa = adj_actions + (long)e * ad;
        const float* a = actions + (long)e * ad;
        for (int i = 0; i < nq; ++i) {
            as[i] += adj_q[(long)e * nq + i];
        }
        for (int i = 0; i < nd; ++i) {
            as[nq + i] += adj_qd[(long)e * nd + i];
        }
        for (int k = 0; k < n_act; ++k) {
            if (window_unclipped(a[k])) {
                aa[k] += adj_act[(long)e * nd + gi[6 + k]] * (float)gd[k];
            }
        }
        for (int k = 0; k < n_extra; ++k) {
            if (window_unclipped(a[k])) {
                aa[k] += adj_next[(long)e * sd + nq + nd + k];
            }
        }
    }
}

// flags[e] = 1 when a row has a non-finite entry or one with |x| > limit (`BatchEnv::step`'s
// guard, `NONFINITE_LIMIT`), else 0.
MBMIX_KERNEL void mbmix_window_nonfinite(int n_envs, int width, float limit, const float* x,
                                         int* flags) {
    MBMIX_FOR_EACH(e, n_envs) {
        int bad = 0;
        for (int i = 0; i < width; ++i) {
            float v = x[(long)e * width + i];
            // NaN and ±inf fail the comparison too (= `is_finite() && abs() <= limit`)
            if (!(fabsf(v) <= limit)) {
                bad = 1;
            }
        }
        flags[e] = bad;
    }
}

// dst[rows[j]] = src[j] for j < k (the host's reset states of the envs whose episode ended).
MBMIX_KERNEL void mbmix_window_scatter(int k, int width, const int* rows, const float* src,
                                       float* dst) {
    MBMIX_FOR_EACH(j, k) {
        for (int i = 0; i < width; ++i) {
            dst[(long)rows[j] * width + i] = src[(long)j * width + i];
        }
    }
}

// adj[e] += carry[e] where mask[e] (the adjoint carried from step t+1 into step t's output,
// for envs that did not reset at t).
MBMIX_KERNEL void mbmix_window_carry(int n_envs, int width, const int* mask, const float* carry,
                                     float* adj) {
    MBMIX_FOR_EACH(e, n_envs) {
        if (mask[e]) {
            for (int i = 0; i < width; ++i) {
                adj[(long)e * width + i] += carry[(long)e * width + i];
            }
        }
    }
}

// x[e] = 0 where mask[e] (the rows of envs whose step was non-finite).
MBMIX_KERNEL void mbmix_window_zero_rows(int n_envs, int width, const int* mask, float* x) {
    MBMIX_FOR_EACH(e, n_envs) {
        if (mask[e]) {
            for (int i = 0; i < width; ++i) {
                x[(long)e * width + i] = 0.0f;
            }
        }
    }
}
