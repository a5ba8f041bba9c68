// The DiffRL planar task layer (Hopper, HalfCheetah): observation, reward and termination
// with the observation's and the reward's VJPs, one thread per env. CPU twin:
// `tasks/planar.rs`, whose operation order every expression keeps (bit-identical host
// build).
//
// Task model (`kernels::PackedTaskLayer::planar`):
// - ti = [n (coordinates), n_a, Hopper terms (0 or 1)];
// - td = [termination height, termination height + height tolerance, height clip, height
//   scale, θ_T², −2/θ_T², action-penalty coefficient] in f64.
// State rows [q (n), q̇ (n)]; observation rows [q[1..], q̇] (2n − 1). The VJP kernels add
// into their outputs.

MBMIX_DEVICE float planar_clip_unit(float a, int* inside) {
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

MBMIX_DEVICE float planar_action_penalty(double c, const float* a, int na) {
    float pen = 0.0f;
    for (int k = 0; k < na; ++k) {
        int inside;
        float x = planar_clip_unit(a[k], &inside);
        pen += x * x;
    }
    return (float)c * pen;
}

MBMIX_DEVICE void planar_action_penalty_vjp(double c, const float* a, int na, float g,
                                            float* adj_a) {
    float c2 = (float)(2.0 * c) * g;
    for (int k = 0; k < na; ++k) {
        int inside;
        float x = planar_clip_unit(a[k], &inside);
        if (inside) {
            adj_a[k] += c2 * x;
        }
    }
}

MBMIX_KERNEL void mbmix_planar_observe(int n_envs, const int* ti, const double* td,
                                       const float* states, float* obs_out) {
    (void)td;
    MBMIX_FOR_EACH(e, n_envs) {
        int n = ti[0];
        const float* s = states + (long)e * 2 * n;
        float* obs = obs_out + (long)e * (2 * n - 1);
        for (int k = 0; k < 2 * n - 1; ++k) {
            obs[k] = s[1 + k];
        }
    }
}

MBMIX_KERNEL void mbmix_planar_observe_vjp(int n_envs, const int* ti, const double* td,
                                           const float* states, const float* adj_obs,
                                           float* adj_states) {
    (void)td;
    (void)states;
    MBMIX_FOR_EACH(e, n_envs) {
        int n = ti[0];
        const float* ao = adj_obs + (long)e * (2 * n - 1);
        float* adj_s = adj_states + (long)e * 2 * n;
        for (int k = 0; k < 2 * n - 1; ++k) {
            adj_s[1 + k] += ao[k];
        }
    }
}

MBMIX_KERNEL void mbmix_planar_reward(int n_envs, const int* ti, const double* td,
                                      const float* next_states, const float* actions,
                                      float* rewards) {
    MBMIX_FOR_EACH(e, n_envs) {
        int n = ti[0], na = ti[1];
        const float* s = next_states + (long)e * 2 * n;
        const float* a = actions + (long)e * na;
        float r = s[n];
        if (ti[2]) {
            float d = s[1] - (float)td[1];
            if ((double)d < -1.0) {
                d = -1.0f;
            } else if ((double)d > td[2]) {
                d = (float)td[2];
            }
            float height = ((double)d < 0.0) ? -200.0f * d * d : (float)td[3] * d;
            float angle = 1.0f - s[2] * s[2] / (float)td[4];
            r += height + angle;
        }
        rewards[e] = r + planar_action_penalty(td[6], a, na);
    }
}

MBMIX_KERNEL void mbmix_planar_reward_vjp(int n_envs, const int* ti, const double* td,
                                          const float* next_states, const float* actions,
                                          const float* adj_rewards, float* adj_states,
                                          float* adj_actions) {
    MBMIX_FOR_EACH(e, n_envs) {
        int n = ti[0], na = ti[1];
        const float* s = next_states + (long)e * 2 * n;
        const float* a = actions + (long)e * na;
        float* adj_s = adj_states + (long)e * 2 * n;
        float g = adj_rewards[e];
        adj_s[n] += g;
        if (ti[2]) {
            float d = s[1] - (float)td[1];
            if ((double)d >= -1.0 && (double)d <= td[2]) {
                adj_s[1] += g * (((double)d < 0.0) ? -400.0f * d : (float)td[3]);
            }
            adj_s[2] += g * (float)td[5] * s[2];
        }
        planar_action_penalty_vjp(td[6], a, na, g, adj_actions + (long)e * na);
    }
}

MBMIX_KERNEL void mbmix_planar_terminated(int n_envs, const int* ti, const double* td,
                                          const float* next_states, int* terminated) {
    MBMIX_FOR_EACH(e, n_envs) {
        const float* s = next_states + (long)e * 2 * ti[0];
        terminated[e] = ti[2] && (double)s[1] < td[0];
    }
}
