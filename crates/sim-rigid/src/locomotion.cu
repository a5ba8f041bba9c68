// The DiffRL locomotion task layer (Ant, Humanoid, Bruce): observation, reward and
// termination with the observation's and the reward's VJPs, one thread per env. The CPU
// twin is `tasks/locomotion.rs` (`Locomotion`'s `RigidTask` methods); every expression
// keeps the twin's operation order so that the host build matches it bit for bit.
//
// Task model (`kernels::PackedLocomotion`):
// - ti = [n_q, n_j, n_a, height mode (0: linear, 1: clipped)];
// - td = [start x + target x, start z + target z, start_rot⁻¹ (x, y, z, w), up weight,
//   heading weight, joint-velocity observation scale, termination height, height
//   tolerance, height scale, action-penalty coefficient, angular-velocity penalty] in f64,
//   cast to f32 where the twin casts (`T::cst`) and compared in f64 where the twin
//   compares in f64.
// State rows: [q (n_q), q̇ (6 + n_j), previous action (n_a)]; observation rows:
// 13 + 2 n_j + n_a. The VJP kernels add into their outputs.

#define LOCO_TD_TARGET_X 0
#define LOCO_TD_TARGET_Z 1
#define LOCO_TD_INV_START 2
#define LOCO_TD_UP_W 6
#define LOCO_TD_HEADING_W 7
#define LOCO_TD_JV_SCALE 8
#define LOCO_TD_TERM_H 9
#define LOCO_TD_TOL 10
#define LOCO_TD_SCALE 11
#define LOCO_TD_ACT_PEN 12
#define LOCO_TD_ANG_PEN 13

MBMIX_DEVICE int loco_state_dim(const int* ti) { return ti[0] + 6 + ti[1] + ti[2]; }
MBMIX_DEVICE int loco_obs_dim(const int* ti) { return 13 + 2 * ti[1] + ti[2]; }

// a ⊗ b for (x, y, z, w) quaternions, b constant
MBMIX_DEVICE void loco_quat_mul_c(const float* a, const double* bd, float* out) {
    float bx = (float)bd[0], by = (float)bd[1], bz = (float)bd[2], bw = (float)bd[3];
    float ax = a[0], ay = a[1], az = a[2], aw = a[3];
    out[0] = aw * bx + bw * ax + (ay * bz - az * by);
    out[1] = aw * by + bw * ay + (az * bx - ax * bz);
    out[2] = aw * bz + bw * az + (ax * by - ay * bx);
    out[3] = aw * bw - (ax * bx + ay * by + az * bz);
}

// VJP of loco_quat_mul_c in a
MBMIX_DEVICE void loco_quat_mul_c_vjp(const double* bd, const float* l, float* out) {
    float bx = (float)bd[0], by = (float)bd[1], bz = (float)bd[2], bw = (float)bd[3];
    float lx = l[0], ly = l[1], lz = l[2], lw = l[3];
    float c0 = by * lz - bz * ly, c1 = bz * lx - bx * lz, c2 = bx * ly - by * lx;
    out[0] = bw * lx + c0 - lw * bx;
    out[1] = bw * ly + c1 - lw * by;
    out[2] = bw * lz + c2 - lw * bz;
    out[3] = lx * bx + ly * by + lz * bz + lw * bw;
}

// unit direction from the torso to the target in the ground plane; returns the length
MBMIX_DEVICE float loco_target_dir(const double* td, const float* s, float* dir) {
    float tx = (float)td[LOCO_TD_TARGET_X] - s[0];
    float tz = (float)td[LOCO_TD_TARGET_Z] - s[2];
    float n = sqrtf(tx * tx + tz * tz);
    float floor_n = (float)1e-9;
    n = (n >= floor_n) ? n : floor_n;
    dir[0] = tx / n;
    dir[1] = 0.0f;
    dir[2] = tz / n;
    return n;
}

// (up_y, heading · target direction)
MBMIX_DEVICE void loco_up_heading(const double* td, const float* s, float* up, float* hd) {
    float tq[4], r[9], dir[3];
    loco_quat_mul_c(s + 3, td + LOCO_TD_INV_START, tq);
    quat_rot(tq, r);
    loco_target_dir(td, s, dir);
    *up = r[4];
    *hd = r[0] * dir[0] + r[3] * dir[1] + r[6] * dir[2];
}

MBMIX_DEVICE void loco_up_heading_vjp(const double* td, const float* s, float a_up, float a_hd,
                                      float* adj_s) {
    float tq[4], r[9], dir[3];
    loco_quat_mul_c(s + 3, td + LOCO_TD_INV_START, tq);
    quat_rot(tq, r);
    float n = loco_target_dir(td, s, dir);
    float ar[9] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    ar[4] = a_up;
    for (int k = 0; k < 3; ++k) {
        ar[k * 3] = a_hd * dir[k];
    }
    float atq[4], aq[4];
    quat_rot_adjoint(tq, ar, atq);
    loco_quat_mul_c_vjp(td + LOCO_TD_INV_START, atq, aq);
    for (int k = 0; k < 4; ++k) {
        adj_s[3 + k] += aq[k];
    }
    if ((double)n > 1e-9) {
        float adir[3] = {a_hd * r[0], a_hd * r[3], a_hd * r[6]};
        float dd = dir[0] * adir[0] + dir[2] * adir[2];
        adj_s[0] -= (adir[0] - dir[0] * dd) / n;
        adj_s[2] -= (adir[2] - dir[2] * dd) / n;
    }
}

MBMIX_DEVICE float loco_height_term(const int* ti, const double* td, float h) {
    double ht = td[LOCO_TD_TERM_H];
    if (ti[3] == 0) {
        return h - (float)ht;
    }
    double tol = td[LOCO_TD_TOL];
    float d = h - (float)(ht + tol);
    if ((double)d < -1.0) {
        d = -1.0f;
    } else if ((double)d > tol) {
        d = (float)tol;
    }
    if ((double)d < 0.0) {
        return -200.0f * d * d;
    }
    return (float)td[LOCO_TD_SCALE] * d;
}

MBMIX_DEVICE float loco_height_term_derivative(const int* ti, const double* td, float h) {
    double ht = td[LOCO_TD_TERM_H];
    if (ti[3] == 0) {
        return 1.0f;
    }
    double tol = td[LOCO_TD_TOL];
    float d = h - (float)(ht + tol);
    if ((double)d < -1.0 || (double)d > tol) {
        return 0.0f;
    }
    if ((double)d < 0.0) {
        return -400.0f * d;
    }
    return (float)td[LOCO_TD_SCALE];
}

MBMIX_DEVICE float loco_clip_unit(float a, int* inside) {
    *inside = 0;
    if ((double)a > 1.0) {
        return 1.0f;
    }
    if ((double)a < -1.0) {
        return -1.0f;
    }
    *inside = 1;
    return a;
}

MBMIX_KERNEL void mbmix_loco_observe(int n_envs, const int* ti, const double* td,
                                     const float* states, float* obs_out) {
    MBMIX_FOR_EACH(e, n_envs) {
        int nq = ti[0], nj = ti[1], na = ti[2];
        const float* s = states + (long)e * loco_state_dim(ti);
        float* obs = obs_out + (long)e * loco_obs_dim(ti);
        const float* qd = s + nq;
        obs[0] = s[1];
        for (int k = 0; k < 4; ++k) {
            obs[1 + k] = s[3 + k];
        }
        float w[3] = {qd[0], qd[1], qd[2]};
        float p[3] = {s[0], s[1], s[2]};
        obs[5] = qd[3] - (p[1] * w[2] - p[2] * w[1]);
        obs[6] = qd[4] - (p[2] * w[0] - p[0] * w[2]);
        obs[7] = qd[5] - (p[0] * w[1] - p[1] * w[0]);
        for (int k = 0; k < 3; ++k) {
            obs[8 + k] = w[k];
        }
        for (int k = 0; k < nj; ++k) {
            obs[11 + k] = s[7 + k];
        }
        float sc = (float)td[LOCO_TD_JV_SCALE];
        for (int k = 0; k < nj; ++k) {
            obs[11 + nj + k] = sc * qd[6 + k];
        }
        float up, hd;
        loco_up_heading(td, s, &up, &hd);
        obs[11 + 2 * nj] = up;
        obs[12 + 2 * nj] = hd;
        int o = 13 + 2 * nj;
        for (int k = 0; k < na; ++k) {
            obs[o + k] = s[nq + 6 + nj + k];
        }
    }
}

MBMIX_KERNEL void mbmix_loco_observe_vjp(int n_envs, const int* ti, const double* td,
                                         const float* states, const float* adj_obs,
                                         float* adj_states) {
    MBMIX_FOR_EACH(e, n_envs) {
        int nq = ti[0], nj = ti[1], na = ti[2];
        const float* s = states + (long)e * loco_state_dim(ti);
        const float* ao = adj_obs + (long)e * loco_obs_dim(ti);
        float* adj_s = adj_states + (long)e * loco_state_dim(ti);
        adj_s[1] += ao[0];
        for (int k = 0; k < 4; ++k) {
            adj_s[3 + k] += ao[1 + k];
        }
        float w[3] = {s[nq], s[nq + 1], s[nq + 2]};
        float p[3] = {s[0], s[1], s[2]};
        float l[3] = {ao[5], ao[6], ao[7]};
        float wl[3] = {w[1] * l[2] - w[2] * l[1], w[2] * l[0] - w[0] * l[2],
                       w[0] * l[1] - w[1] * l[0]};
        float lp[3] = {l[1] * p[2] - l[2] * p[1], l[2] * p[0] - l[0] * p[2],
                       l[0] * p[1] - l[1] * p[0]};
        for (int k = 0; k < 3; ++k) {
            adj_s[nq + 3 + k] += l[k];
            adj_s[k] -= wl[k];
            adj_s[nq + k] += ao[8 + k] - lp[k];
        }
        float sc = (float)td[LOCO_TD_JV_SCALE];
        for (int k = 0; k < nj; ++k) {
            adj_s[7 + k] += ao[11 + k];
            adj_s[nq + 6 + k] += sc * ao[11 + nj + k];
        }
        loco_up_heading_vjp(td, s, ao[11 + 2 * nj], ao[12 + 2 * nj], adj_s);
        int o = 13 + 2 * nj;
        for (int k = 0; k < na; ++k) {
            adj_s[nq + 6 + nj + k] += ao[o + k];
        }
    }
}

MBMIX_KERNEL void mbmix_loco_reward(int n_envs, const int* ti, const double* td,
                                    const float* next_states, const float* actions,
                                    float* rewards) {
    MBMIX_FOR_EACH(e, n_envs) {
        int nq = ti[0], na = ti[2];
        const float* s = next_states + (long)e * loco_state_dim(ti);
        const float* a = actions + (long)e * na;
        float w[3] = {s[nq], s[nq + 1], s[nq + 2]};
        float p[3] = {s[0], s[1], s[2]};
        float progress = s[nq + 3] - (p[1] * w[2] - p[2] * w[1]);
        float up, hd;
        loco_up_heading(td, s, &up, &hd);
        float pen = 0.0f;
        for (int k = 0; k < na; ++k) {
            int inside;
            float x = loco_clip_unit(a[k], &inside);
            pen += x * x;
        }
        rewards[e] = progress + (float)td[LOCO_TD_UP_W] * up + (float)td[LOCO_TD_HEADING_W] * hd +
                     loco_height_term(ti, td, s[1]) + (float)td[LOCO_TD_ACT_PEN] * pen +
                     (float)td[LOCO_TD_ANG_PEN] * (w[0] * w[0] + w[2] * w[2]);
    }
}

MBMIX_KERNEL void mbmix_loco_reward_vjp(int n_envs, const int* ti, const double* td,
                                        const float* next_states, const float* actions,
                                        const float* adj_rewards, float* adj_states,
                                        float* adj_actions) {
    MBMIX_FOR_EACH(e, n_envs) {
        int nq = ti[0], na = ti[2];
        const float* s = next_states + (long)e * loco_state_dim(ti);
        const float* a = actions + (long)e * na;
        float* adj_s = adj_states + (long)e * loco_state_dim(ti);
        float* adj_a = adj_actions + (long)e * na;
        float g = adj_rewards[e];
        float w[3] = {s[nq], s[nq + 1], s[nq + 2]};
        float p[3] = {s[0], s[1], s[2]};
        adj_s[nq + 3] += g;
        adj_s[1] -= g * w[2];
        adj_s[2] += g * w[1];
        adj_s[nq + 2] -= g * p[1];
        adj_s[nq + 1] += g * p[2];
        loco_up_heading_vjp(td, s, g * (float)td[LOCO_TD_UP_W], g * (float)td[LOCO_TD_HEADING_W],
                            adj_s);
        adj_s[1] += g * loco_height_term_derivative(ti, td, s[1]);
        float c2 = (float)(2.0 * td[LOCO_TD_ACT_PEN]) * g;
        for (int k = 0; k < na; ++k) {
            int inside;
            float x = loco_clip_unit(a[k], &inside);
            if (inside) {
                adj_a[k] += c2 * x;
            }
        }
        float cw = g * (float)(2.0 * td[LOCO_TD_ANG_PEN]);
        adj_s[nq] += cw * w[0];
        adj_s[nq + 2] += cw * w[2];
    }
}

MBMIX_KERNEL void mbmix_loco_terminated(int n_envs, const int* ti, const double* td,
                                        const float* next_states, int* terminated) {
    MBMIX_FOR_EACH(e, n_envs) {
        const float* s = next_states + (long)e * loco_state_dim(ti);
        terminated[e] = (double)s[1] < td[LOCO_TD_TERM_H];
    }
}
