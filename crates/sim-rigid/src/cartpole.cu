// The CartPole swing-up task layer: observation, reward and termination with the
// observation's and the reward's VJPs, one thread per env. CPU twin: `tasks/cartpole.rs`,
// whose operation order every expression keeps (bit-identical host build).
//
// Task model (`kernels::PackedTaskLayer::cartpole`): ti = [] (unused); td = [pole angle,
// pole velocity, cart position, cart velocity penalties] in f64.
// State rows [x, θ, ẋ, θ̇]; observation rows [x, ẋ, sin θ, cos θ, θ̇]. The VJP kernels add
// into their outputs; nothing terminates.

// θ wrapped to [−π, π) with the wrap computed in f64 (`wrap_angle`)
MBMIX_DEVICE float cartpole_wrap(float theta) {
    double pi = 3.14159265358979323846;
    double two_pi = 2.0 * pi;
    double k = floor(((double)theta + pi) / two_pi);
    return theta - (float)(k * two_pi);
}

MBMIX_KERNEL void mbmix_cartpole_observe(int n_envs, const int* ti, const double* td,
                                         const float* states, float* obs_out) {
    (void)ti;
    (void)td;
    MBMIX_FOR_EACH(e, n_envs) {
        const float* s = states + (long)e * 4;
        float* obs = obs_out + (long)e * 5;
        obs[0] = s[0];
        obs[1] = s[2];
        obs[2] = sinf(s[1]);
        obs[3] = cosf(s[1]);
        obs[4] = s[3];
    }
}

MBMIX_KERNEL void mbmix_cartpole_observe_vjp(int n_envs, const int* ti, const double* td,
                                             const float* states, const float* adj_obs,
                                             float* adj_states) {
    (void)ti;
    (void)td;
    MBMIX_FOR_EACH(e, n_envs) {
        const float* s = states + (long)e * 4;
        const float* ao = adj_obs + (long)e * 5;
        float* adj_s = adj_states + (long)e * 4;
        adj_s[0] += ao[0];
        adj_s[2] += ao[1];
        adj_s[1] += ao[2] * cosf(s[1]) - ao[3] * sinf(s[1]);
        adj_s[3] += ao[4];
    }
}

MBMIX_KERNEL void mbmix_cartpole_reward(int n_envs, const int* ti, const double* td,
                                        const float* next_states, const float* actions,
                                        float* rewards) {
    (void)ti;
    (void)actions;
    MBMIX_FOR_EACH(e, n_envs) {
        const float* s = next_states + (long)e * 4;
        float theta = cartpole_wrap(s[1]);
        rewards[e] = -((float)td[0] * (theta * theta) + (float)td[1] * (s[3] * s[3]) +
                       (float)td[2] * (s[0] * s[0]) + (float)td[3] * (s[2] * s[2]));
    }
}

MBMIX_KERNEL void mbmix_cartpole_reward_vjp(int n_envs, const int* ti, const double* td,
                                            const float* next_states, const float* actions,
                                            const float* adj_rewards, float* adj_states,
                                            float* adj_actions) {
    (void)ti;
    (void)actions;
    (void)adj_actions;
    MBMIX_FOR_EACH(e, n_envs) {
        const float* s = next_states + (long)e * 4;
        float* adj_s = adj_states + (long)e * 4;
        float m2 = -2.0f * adj_rewards[e];
        adj_s[1] += m2 * (float)td[0] * cartpole_wrap(s[1]);
        adj_s[3] += m2 * (float)td[1] * s[3];
        adj_s[0] += m2 * (float)td[2] * s[0];
        adj_s[2] += m2 * (float)td[3] * s[2];
    }
}

MBMIX_KERNEL void mbmix_cartpole_terminated(int n_envs, const int* ti, const double* td,
                                            const float* next_states, int* terminated) {
    (void)ti;
    (void)td;
    (void)next_states;
    MBMIX_FOR_EACH(e, n_envs) {
        terminated[e] = 0;
    }
}
