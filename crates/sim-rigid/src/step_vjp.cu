// The VJP of one control step, one thread per env: the CUDA twin of
// `Articulation::step_vjp` (dynamics.rs, contact.rs, spatial.rs): the forward substeps are
// replayed with every intermediate kept (as the CPU path and dflex's backward kernels do),
// then swept in reverse through each stage's hand-written adjoint, in the CPU's order.
// Uses the helpers and stages of cholesky.cu and step.cu (same module).
// Written in the CUDA/C common subset (see diff-core's cuda_prelude.h).

// per-link adjoint: x_sj (p 3, r 9), x_sc (p 3, r 9), com 3, v 6, a 6, i_s 36, f 6, f_tot 6
#define LA_XSJP 0
#define LA_XSJR 3
#define LA_XSCP 12
#define LA_XSCR 15
#define LA_COM 24
#define LA_V 27
#define LA_A 33
#define LA_IS 39
#define LA_F 75
#define LA_FTOT 81
#define LA_SIZE 87

// ---------------------------------------------------------------- adjoint helpers

// out = Aᵀ·x
MBMIX_DEVICE void mtv3(const float* a, const float* x, float* out) {
    float o0 = a[0] * x[0] + a[3] * x[1] + a[6] * x[2];
    float o1 = a[1] * x[0] + a[4] * x[1] + a[7] * x[2];
    float o2 = a[2] * x[0] + a[5] * x[1] + a[8] * x[2];
    out[0] = o0;
    out[1] = o1;
    out[2] = o2;
}

// out = Aᵀ·B
MBMIX_DEVICE void mtm3(const float* a, const float* b, float* out) {
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            out[i * 3 + j] = a[i] * b[j] + a[3 + i] * b[3 + j] + a[6 + i] * b[6 + j];
        }
    }
}

// A += x·yᵀ
MBMIX_DEVICE void m3_add_outer(float* a, const float* x, const float* y) {
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            a[i * 3 + j] += x[i] * y[j];
        }
    }
}

MBMIX_DEVICE void add3(float* a, const float* b) {
    a[0] += b[0];
    a[1] += b[1];
    a[2] += b[2];
}

MBMIX_DEVICE float limit_force_derivative(float q, float lower, float upper, float ke) {
    return (q < lower || q > upper) ? -ke : 0.0f;
}

// gradient of Σ adj ⊙ quat_rot(q) in q
MBMIX_DEVICE void quat_rot_adjoint(const float* q, const float* adj, float* out) {
    float w = q[3], two = 2.0f;
    float k[3] = {adj[7] - adj[5], adj[2] - adj[6], adj[3] - adj[1]};
    float tr = adj[0] + adj[4] + adj[8];
    out[3] = 4.0f * w * tr + two * dot3(q, k);
    for (int i = 0; i < 3; ++i) {
        float s = 0.0f;
        for (int j = 0; j < 3; ++j) {
            s += (adj[i * 3 + j] + adj[j * 3 + i]) * q[j];
        }
        out[i] = two * w * k[i] + two * s;
    }
}

// adjoint of quat_integrate: accumulates into adj_q (4) and adj_w (3)
MBMIX_DEVICE void quat_integrate_adjoint(const float* q, const float* w, float dt,
                                         const float* adj_out, float* adj_q, float* adj_w) {
    float h = dt * 0.5f;
    float c[3];
    cross3(w, q, c);
    float u[4] = {q[0] + h * (q[3] * w[0] + c[0]), q[1] + h * (q[3] * w[1] + c[1]),
                  q[2] + h * (q[3] * w[2] + c[2]), q[3] - h * dot3(w, q)};
    float n = sqrtf(u[0] * u[0] + u[1] * u[1] + u[2] * u[2] + u[3] * u[3]);
    float o[4] = {u[0] / n, u[1] / n, u[2] / n, u[3] / n};
    float od = o[0] * adj_out[0] + o[1] * adj_out[1] + o[2] * adj_out[2] + o[3] * adj_out[3];
    float lu[4];
    for (int k = 0; k < 4; ++k) {
        lu[k] = (adj_out[k] - o[k] * od) / n;
    }
    float lw = lu[3];
    float a[3], b[3];
    cross3(lu, w, a);
    cross3(q, lu, b);
    for (int k = 0; k < 3; ++k) {
        adj_q[k] += lu[k] + h * a[k] - h * lw * w[k];
        adj_w[k] += h * b[k] + h * q[3] * lu[k] - h * lw * q[k];
    }
    adj_q[3] += lw + h * dot3(lu, w);
}

// adjoint of inertia_apply (i_w symmetric): accumulates into adj_c, adj_iw, adj_x
MBMIX_DEVICE void inertia_apply_adjoint(float m, const float* c, const float* i_w,
                                        const float* x, const float* l, float* adj_c,
                                        float* adj_iw, float* adj_x) {
    float xc[3], u[3], hl[3], aw[3], t[3], adj_hl[3], adj_u[3], cu[3];
    cross3(x, c, xc);
    for (int k = 0; k < 3; ++k) {
        u[k] = x[3 + k] + xc[k];
        hl[k] = u[k] * m;
    }
    m3_add_outer(adj_iw, l, x);
    mv3(i_w, l, aw);
    cross3(hl, l, t);
    add3(adj_c, t);
    cross3(l, c, t);
    for (int k = 0; k < 3; ++k) {
        adj_hl[k] = l[3 + k] + t[k];
        adj_u[k] = adj_hl[k] * m;
    }
    cross3(adj_u, x, t);
    add3(adj_c, t);
    cross3(c, adj_u, cu);
    for (int k = 0; k < 3; ++k) {
        adj_x[k] += aw[k] + cu[k];
        adj_x[3 + k] += adj_u[k];
    }
}

// adjoint of x ×ₘ y given λ: returns (adj_x, adj_y)
MBMIX_DEVICE void sv_cross_motion_adjoint(const float* x, const float* y, const float* l,
                                          float* adj_x, float* adj_y) {
    float a[3], b[3];
    cross3(y, l, a);
    cross3(y + 3, l + 3, b);
    for (int k = 0; k < 3; ++k) {
        adj_x[k] = a[k] + b[k];
    }
    cross3(y, l + 3, adj_x + 3);
    cross3(l, x, a);
    cross3(l + 3, x + 3, b);
    for (int k = 0; k < 3; ++k) {
        adj_y[k] = a[k] + b[k];
    }
    cross3(l + 3, x, adj_y + 3);
}

// adjoint of x ×* f given λ: returns (adj_x, adj_f)
MBMIX_DEVICE void sv_cross_force_adjoint(const float* x, const float* f, const float* l,
                                         float* adj_x, float* adj_f) {
    float a[3], b[3];
    cross3(f, l, a);
    cross3(f + 3, l + 3, b);
    for (int k = 0; k < 3; ++k) {
        adj_x[k] = a[k] + b[k];
    }
    cross3(f + 3, l, adj_x + 3);
    cross3(l, x, adj_f);
    cross3(l, x + 3, a);
    cross3(l + 3, x, b);
    for (int k = 0; k < 3; ++k) {
        adj_f[3 + k] = a[k] + b[k];
    }
}

// adjoint of spatial_inertia w.r.t. c and R: accumulates into adj_c, adj_r
MBMIX_DEVICE void spatial_inertia_adjoint(float m, const float* c, const float* r,
                                          const float* i_c, const float* adj, float* adj_c,
                                          float* adj_r) {
    float a[9], adj_k[9], a_sym[9], t[9], u[9], k[9], t1[9], t2[9];
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            a[i * 3 + j] = adj[i * 6 + j];
            adj_k[i * 3 + j] = m * (adj[i * 6 + j + 3] - adj[(i + 3) * 6 + j]);
        }
    }
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            a_sym[i * 3 + j] = a[i * 3 + j] + a[j * 3 + i];
        }
    }
    mm3(a_sym, r, t);
    mm3(t, i_c, u);
    for (int i = 0; i < 9; ++i) {
        adj_r[i] += u[i];
    }
    skew3(c, k);
    mmt3(a, k, t1);
    mtm3(k, a, t2);
    for (int i = 0; i < 9; ++i) {
        adj_k[i] -= m * (t1[i] + t2[i]);
    }
    adj_c[0] += adj_k[7] - adj_k[5];
    adj_c[1] += adj_k[2] - adj_k[6];
    adj_c[2] += adj_k[3] - adj_k[1];
}

// ---------------------------------------------------------------- the stage adjoints

// Adjoint of stage_integrate: writes adj_qdd, accumulates into adj_q, adj_qd.
MBMIX_DEVICE void integrate_vjp(const int* mi, const float* q, const float* qd_out,
                                const float* adj_q_out, const float* adj_qd_out, float dt,
                                float* adj_q, float* adj_qd, float* adj_qdd) {
    int nl = mi[0];
    for (int i = 0; i < nl; ++i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        int kind = li[1], qi = li[2], d = li[3], nd = dof_count(kind);
        if (kind == MBMIX_FIXED) {
            continue;
        }
        if (kind == MBMIX_PRISMATIC || kind == MBMIX_REVOLUTE) {
            float adj_qd_new = adj_qd_out[d] + adj_q_out[qi] * dt;
            adj_q[qi] += adj_q_out[qi];
            adj_qd[d] += adj_qd_new;
            adj_qdd[d] = adj_qd_new * dt;
            continue;
        }
        float a_new[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int k = 0; k < nd; ++k) {
            a_new[k] = adj_qd_out[d + k];
        }
        const float* w = qd_out + d;
        int o = 0;
        if (kind == MBMIX_FREE) {
            const float* p = q + qi;
            const float* ap = adj_q_out + qi;
            float ap_w[3], aw[3];
            cross3(ap, w, ap_w);
            cross3(p, ap, aw);
            for (int k = 0; k < 3; ++k) {
                adj_q[qi + k] += ap[k] + dt * ap_w[k];
                a_new[k] += dt * aw[k];
                a_new[3 + k] += dt * ap[k];
            }
            o = 3;
        }
        float aq[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        float aw[3] = {0.0f, 0.0f, 0.0f};
        quat_integrate_adjoint(q + qi + o, w, dt, adj_q_out + qi + o, aq, aw);
        for (int k = 0; k < 4; ++k) {
            adj_q[qi + o + k] += aq[k];
        }
        for (int k = 0; k < 3; ++k) {
            a_new[k] += aw[k];
        }
        for (int k = 0; k < nd; ++k) {
            adj_qd[d + k] += a_new[k];
            adj_qdd[d + k] = a_new[k] * dt;
        }
    }
}

// Adjoint of the H build: consumes adj_h, accumulates into adj_s and the links' adj i_s.
MBMIX_DEVICE void mass_matrix_vjp(const int* mi, const float* s, const float* ls,
                                  const float* ics, const float* adj_h, float* adj_ic,
                                  float* adj_s, float* la) {
    int nl = mi[0], n = mi[2];
    const int* dof_link = mi + MBMIX_HEADER_I + nl * MBMIX_LI;
    const int* sup_start = dof_link + n;
    const int* sup = sup_start + n + 1;
    for (int k = 0; k < 36 * nl; ++k) {
        adj_ic[k] = 0.0f;
    }
    for (int e = 0; e < n; ++e) {
        float adj_y[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        const float* y = ics + e * 6;
        for (int j = sup_start[e]; j < sup_start[e + 1]; ++j) {
            int d = sup[j];
            float g = (d == e) ? adj_h[d * n + d] : adj_h[d * n + e] + adj_h[e * n + d];
            for (int k = 0; k < 6; ++k) {
                adj_s[d * 6 + k] += y[k] * g;
                adj_y[k] += s[d * 6 + k] * g;
            }
        }
        int li = dof_link[e];
        float* aic = adj_ic + li * 36;
        for (int r = 0; r < 6; ++r) {
            float xr = adj_y[r] * 1.0f;
            for (int c = 0; c < 6; ++c) {
                aic[r * 6 + c] += xr * s[e * 6 + c];
            }
        }
        const float* ic = ls + li * LS_SIZE + LS_IC;
        float t[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int r = 0; r < 6; ++r) {
            for (int c = 0; c < 6; ++c) {
                t[c] += ic[r * 6 + c] * adj_y[r];
            }
        }
        for (int k = 0; k < 6; ++k) {
            adj_s[e * 6 + k] += t[k];
        }
    }
    for (int i = 0; i < nl; ++i) {
        int parent = mi[MBMIX_HEADER_I + i * MBMIX_LI];
        if (parent >= 0) {
            for (int k = 0; k < 36; ++k) {
                adj_ic[i * 36 + k] += adj_ic[parent * 36 + k];
            }
        }
        for (int k = 0; k < 36; ++k) {
            la[i * LA_SIZE + LA_IS + k] += adj_ic[i * 36 + k];
        }
    }
}

// Adjoint of stage_joint_torques: consumes adj_tau, accumulates into adj_s, adj_q, adj_qd,
// adj_act and the links' adj f.
MBMIX_DEVICE void joint_torques_vjp(const int* mi, const float* mf, const float* q,
                                    const float* s, const float* gain, const float* ls,
                                    const float* adj_tau, float* la, float* adj_s,
                                    float* adj_q, float* adj_qd, float* adj_act) {
    int nl = mi[0];
    for (int i = 0; i < nl; ++i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        const float* lf = mf + MBMIX_HEADER_F + i * MBMIX_LF;
        int parent = li[0], kind = li[1], qi = li[2], d = li[3];
        float* aft = la + i * LA_SIZE + LA_FTOT;
        if (parent >= 0) {
            for (int k = 0; k < 6; ++k) {
                aft[k] += la[parent * LA_SIZE + LA_FTOT + k];
            }
        }
        const float* ftot = ls + i * LS_SIZE + LS_FTOT;
        for (int k = 0; k < dof_count(kind); ++k) {
            float at = adj_tau[d + k];
            for (int c = 0; c < 6; ++c) {
                aft[c] += s[(d + k) * 6 + c] * -at;
                adj_s[(d + k) * 6 + c] += ftot[c] * -at;
            }
        }
        float target_ke = lf[29], target_kd = lf[30];
        float lo = lf[31], hi = lf[32], limit_ke = lf[33], limit_kd = lf[34];
        if (kind == MBMIX_PRISMATIC || kind == MBMIX_REVOLUTE) {
            float at = adj_tau[d];
            float dlim = limit_force_derivative(q[qi], lo, hi, limit_ke);
            adj_q[qi] += at * dlim;
            adj_qd[d] -= at * limit_kd;
            float am = at * gain[d];
            adj_q[qi] -= am * target_ke;
            adj_qd[d] -= am * target_kd;
            adj_act[d] += am;
        } else if (kind == MBMIX_BALL) {
            for (int k = 0; k < 3; ++k) {
                float at = adj_tau[d + k];
                adj_qd[d + k] -= at * target_kd;
                adj_q[qi + k] -= at * target_ke;
            }
        }
    }
    for (int i = 0; i < nl; ++i) {
        for (int k = 0; k < 6; ++k) {
            la[i * LA_SIZE + LA_F + k] += la[i * LA_SIZE + LA_FTOT + k];
        }
    }
}

// Adjoint of stage_contacts: reads the links' adj f, accumulates into adj x_sc and v.
MBMIX_DEVICE void contacts_vjp(const int* mi, const float* mf, const float* ls, float* la) {
    int nl = mi[0], nc = mi[3];
    const int* contact_link = contact_links(mi);
    const float* cf = mf + MBMIX_HEADER_F + nl * MBMIX_LF;
    for (int c = 0; c < nc; ++c) {
        const float* cp = cf + c * MBMIX_CF;
        const float* me = ls + contact_link[c] * LS_SIZE;
        float* a = la + contact_link[c] * LA_SIZE;
        const float* v = me + LS_V;
        MbmixContact e;
        if (!contact_eval(cp, me + LS_XSC, v, &e)) {
            continue;
        }
        const float* p = e.p;
        const float* f = e.f;
        float gap = e.gap, vn = e.dpdt[1], vt_len = e.vt_len;
        float vt0 = e.dpdt[0], vt1 = e.dpdt[2];
        float ke = cp[4], kd = cp[5], kf = cp[6], mu = cp[7];
        float cap = -(mu * gap * ke);
        int damped = e.damped, friction = e.friction;
        // w = (p × F, F)
        const float* lt = a + LA_F;
        const float* lfv = a + LA_F + 3;
        float adj_p[3], adj_f[3], t[3];
        cross3(f, lt, adj_p);
        cross3(lt, p, t);
        for (int k = 0; k < 3; ++k) {
            adj_f[k] = lfv[k] + t[k];
        }
        float adj_c = 0.0f;
        float adj_dpdt[3] = {0.0f, 0.0f, 0.0f};
        adj_c += adj_f[1] * ke;
        if (damped) {
            adj_c -= adj_f[1] * vn * kd;
            adj_dpdt[1] -= adj_f[1] * kd * gap;
        }
        float aft0 = adj_f[0], aft1 = adj_f[2];
        if (friction == 1) {
            adj_dpdt[0] += kf * aft0;
            adj_dpdt[2] += kf * aft1;
        } else if (friction == 2) {
            float u0 = vt0 / vt_len, u1 = vt1 / vt_len;
            float udot = u0 * aft0 + u1 * aft1;
            adj_c -= udot * mu * ke;
            float sc = cap / vt_len;
            adj_dpdt[0] += sc * (aft0 - u0 * udot);
            adj_dpdt[2] += sc * (aft1 - u1 * udot);
        }
        // ṗ = v + ω × p
        float aw[3], pw[3];
        cross3(p, adj_dpdt, aw);
        cross3(adj_dpdt, v, pw);
        add3(adj_p, pw);
        for (int k = 0; k < 3; ++k) {
            a[LA_V + k] += aw[k];
            a[LA_V + 3 + k] += adj_dpdt[k];
        }
        adj_p[1] += adj_c;
        add3(a + LA_XSCP, adj_p);
        m3_add_outer(a + LA_XSCR, adj_p, cp);
    }
}

// Adjoint of stage_bias_forces: consumes the links' adj f, accumulates into adj v, a, com
// and x_sc.r.
MBMIX_DEVICE void bias_forces_vjp(const int* mi, const float* mf, const float* ls, float* la) {
    int nl = mi[0];
    const float* g = mf;
    for (int i = 0; i < nl; ++i) {
        const float* lf = mf + MBMIX_HEADER_F + i * MBMIX_LF;
        float m = lf[15];
        const float* me = ls + i * LS_SIZE;
        float* a = la + i * LA_SIZE;
        float adj_f[6];
        for (int k = 0; k < 6; ++k) {
            adj_f[k] = a[LA_F + k];
        }
        float adj_iw[9] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        inertia_apply_adjoint(m, me + LS_COM, me + LS_IW, me + LS_A, adj_f, a + LA_COM, adj_iw,
                              a + LA_A);
        float h[6], av[6], ah[6];
        inertia_apply(m, me + LS_COM, me + LS_IW, me + LS_V, h);
        sv_cross_force_adjoint(me + LS_V, h, adj_f, av, ah);
        for (int k = 0; k < 6; ++k) {
            a[LA_V + k] += av[k];
        }
        inertia_apply_adjoint(m, me + LS_COM, me + LS_IW, me + LS_V, ah, a + LA_COM, adj_iw,
                              a + LA_V);
        float mg[3] = {g[0] * m, g[1] * m, g[2] * m};
        float t[3];
        cross3(adj_f, mg, t);
        add3(a + LA_COM, t);
        float a_sym[9], u[9], w[9];
        for (int r = 0; r < 3; ++r) {
            for (int c = 0; c < 3; ++c) {
                a_sym[r * 3 + c] = adj_iw[r * 3 + c] + adj_iw[c * 3 + r];
            }
        }
        mm3(a_sym, me + LS_XSC + 3, u);
        mm3(u, lf + 19, w);
        for (int k = 0; k < 9; ++k) {
            a[LA_XSCR + k] += w[k];
        }
    }
}

// Adjoint of the spatial inertias: consumes adj i_s, accumulates into adj com and x_sc.r.
MBMIX_DEVICE void spatial_inertias_vjp(const int* mi, const float* mf, const float* ls,
                                       float* la) {
    int nl = mi[0];
    for (int i = 0; i < nl; ++i) {
        const float* lf = mf + MBMIX_HEADER_F + i * MBMIX_LF;
        const float* me = ls + i * LS_SIZE;
        float* a = la + i * LA_SIZE;
        spatial_inertia_adjoint(lf[15], me + LS_COM, me + LS_XSC + 3, lf + 19, a + LA_IS,
                                a + LA_COM, a + LA_XSCR);
    }
}

// Adjoint of stage_velocities: consumes adj v, a; accumulates into adj_s, adj_qd.
MBMIX_DEVICE void velocities_vjp(const int* mi, const float* qd, const float* s,
                                 const float* ls, float* la, float* adj_s, float* adj_qd) {
    int nl = mi[0];
    for (int i = nl - 1; i >= 0; --i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        int parent = li[0], d0 = li[3], nd = dof_count(li[1]);
        float vj[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int d = d0; d < d0 + nd; ++d) {
            for (int k = 0; k < 6; ++k) {
                vj[k] += s[d * 6 + k] * qd[d];
            }
        }
        float* a = la + i * LA_SIZE;
        float adj_a[6], av[6], avj[6], adj_v[6], adj_vj[6];
        for (int k = 0; k < 6; ++k) {
            adj_a[k] = a[LA_A + k];
        }
        sv_cross_motion_adjoint(ls + i * LS_SIZE + LS_V, vj, adj_a, av, avj);
        for (int k = 0; k < 6; ++k) {
            adj_v[k] = a[LA_V + k] + av[k];
            adj_vj[k] = adj_v[k] + avj[k];
        }
        if (parent >= 0) {
            for (int k = 0; k < 6; ++k) {
                la[parent * LA_SIZE + LA_V + k] += adj_v[k];
                la[parent * LA_SIZE + LA_A + k] += adj_a[k];
            }
        }
        for (int d = d0; d < d0 + nd; ++d) {
            adj_qd[d] += sv_dot(s + d * 6, adj_vj);
            for (int k = 0; k < 6; ++k) {
                adj_s[d * 6 + k] += adj_vj[k] * qd[d];
            }
        }
    }
}

// adjoint of R_sc = R_sj·R(quat) for ball and free joints
MBMIX_DEVICE void joint_rotation_vjp(const float* quat, const float* r_sj, float* a,
                                     float* adj_quat) {
    float rq[9], t[9], u[9], aq[4];
    quat_rot(quat, rq);
    mmt3(a + LA_XSCR, rq, t);
    for (int k = 0; k < 9; ++k) {
        a[LA_XSJR + k] += t[k];
    }
    mtm3(r_sj, a + LA_XSCR, u);
    quat_rot_adjoint(quat, u, aq);
    for (int k = 0; k < 4; ++k) {
        adj_quat[k] += aq[k];
    }
}

// Adjoint of stage_kinematics: consumes adj x_sc, com and adj_s; accumulates into adj_q.
MBMIX_DEVICE void kinematics_vjp(const int* mi, const float* mf, const float* q,
                                 const float* ls, float* la, const float* adj_s, float* adj_q) {
    int nl = mi[0];
    for (int i = nl - 1; i >= 0; --i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        const float* lf = mf + MBMIX_HEADER_F + i * MBMIX_LF;
        int parent = li[0], kind = li[1], qi = li[2], d = li[3], ident = li[4];
        const float* axis = lf;
        const float* me = ls + i * LS_SIZE;
        const float* xsj = me + LS_XSJ;
        float* a = la + i * LA_SIZE;
        float t[9];
        add3(a + LA_XSCP, a + LA_COM);
        m3_add_outer(a + LA_XSCR, a + LA_COM, lf + 16);
        switch (kind) {
        case MBMIX_FIXED:
            add3(a + LA_XSJP, a + LA_XSCP);
            for (int k = 0; k < 9; ++k) {
                a[LA_XSJR + k] += a[LA_XSCR + k];
            }
            break;
        case MBMIX_REVOLUTE: {
            float rq[9], w[3], adj_w[3], c[3], adj_rq[9], k3[9], drq[9];
            axis_angle(axis, q[qi], rq);
            const float* sa = adj_s + d * 6;
            mv3(xsj + 3, axis, w);
            cross3(sa + 3, xsj, c);
            for (int k = 0; k < 3; ++k) {
                adj_w[k] = sa[k] + c[k];
            }
            cross3(w, sa + 3, c);
            add3(a + LA_XSJP, c);
            m3_add_outer(a + LA_XSJR, adj_w, axis);
            add3(a + LA_XSJP, a + LA_XSCP);
            mmt3(a + LA_XSCR, rq, t);
            for (int k = 0; k < 9; ++k) {
                a[LA_XSJR + k] += t[k];
            }
            mtm3(xsj + 3, a + LA_XSCR, adj_rq);
            skew3(axis, k3);
            mm3(k3, rq, drq);
            float g = 0.0f;
            for (int k = 0; k < 9; ++k) {
                g += adj_rq[k] * drq[k];
            }
            adj_q[qi] += g;
            break;
        }
        case MBMIX_PRISMATIC: {
            const float* sa = adj_s + d * 6;
            m3_add_outer(a + LA_XSJR, sa + 3, axis);
            add3(a + LA_XSJP, a + LA_XSCP);
            float sq[3] = {axis[0] * q[qi], axis[1] * q[qi], axis[2] * q[qi]};
            m3_add_outer(a + LA_XSJR, a + LA_XSCP, sq);
            float w[3];
            mv3(xsj + 3, axis, w);
            adj_q[qi] += dot3(w, a + LA_XSCP);
            for (int k = 0; k < 9; ++k) {
                a[LA_XSJR + k] += a[LA_XSCR + k];
            }
            break;
        }
        case MBMIX_BALL:
            for (int k = 0; k < 3; ++k) {
                const float* sa = adj_s + (d + k) * 6;
                float w[3] = {xsj[3 + k], xsj[3 + 3 + k], xsj[3 + 6 + k]};
                float c[3], adj_w[3];
                cross3(sa + 3, xsj, c);
                for (int j = 0; j < 3; ++j) {
                    adj_w[j] = sa[j] + c[j];
                }
                cross3(w, sa + 3, c);
                add3(a + LA_XSJP, c);
                for (int r = 0; r < 3; ++r) {
                    a[LA_XSJR + r * 3 + k] += adj_w[r];
                }
            }
            add3(a + LA_XSJP, a + LA_XSCP);
            joint_rotation_vjp(q + qi, xsj + 3, a, adj_q + qi);
            break;
        default: { // free
            add3(a + LA_XSJP, a + LA_XSCP);
            m3_add_outer(a + LA_XSJR, a + LA_XSCP, q + qi);
            float apq[3];
            mtv3(xsj + 3, a + LA_XSCP, apq);
            for (int k = 0; k < 3; ++k) {
                adj_q[qi + k] += apq[k];
            }
            joint_rotation_vjp(q + qi + 3, xsj + 3, a, adj_q + qi + 3);
        }
        }
        if (parent >= 0) {
            float* pa = la + parent * LA_SIZE;
            add3(pa + LA_XSCP, a + LA_XSJP);
            if (ident) {
                for (int k = 0; k < 9; ++k) {
                    pa[LA_XSCR + k] += a[LA_XSJR + k];
                }
            } else {
                mmt3(a + LA_XSJR, lf + 6, t);
                for (int k = 0; k < 9; ++k) {
                    pa[LA_XSCR + k] += t[k];
                }
            }
            m3_add_outer(pa + LA_XSCR, a + LA_XSJP, lf + 3);
        }
    }
}

// ---------------------------------------------------------------- the step's VJP

// Floats per substep record: link states, s, tau, gain, qdd, q, qd, q_out, qd_out.
MBMIX_DEVICE long vjp_sub_len(const int* mi) {
    long nl = mi[0], nq = mi[1], nd = mi[2];
    return nl * LS_SIZE + 11 * nd + 2 * nq;
}

// Floats per mass-matrix build: I^c S, L, adj_h.
MBMIX_DEVICE long vjp_build_len(const int* mi) {
    long nd = mi[2];
    return 6 * nd + 2 * nd * nd;
}

// The VJP kernel's scratch per env, in floats.
MBMIX_DEVICE long step_vjp_scratch_len(const int* mi) {
    long nl = mi[0], nq = mi[1], nd = mi[2], substeps = mi[4], mm_freq = mi[5];
    long builds = (substeps + mm_freq - 1) / mm_freq;
    return substeps * vjp_sub_len(mi) + builds * vjp_build_len(mi) + nd * nd + nl * LA_SIZE +
           6 * nd + 5 * nd + 2 * nq + nd + 36 * nl;
}

// For every env: replays the step from (q, qd, act) and accumulates the VJP with the
// cotangents (adj_q_out, adj_qd_out) into adj_q, adj_qd and adj_act.
MBMIX_KERNEL void mbmix_rigid_step_vjp(int n_envs, const int* mi, const float* mf,
                                       const float* q, const float* qd, const float* act,
                                       const float* adj_q_out, const float* adj_qd_out,
                                       float* adj_q, float* adj_qd, float* adj_act,
                                       float* scratch) {
    MBMIX_FOR_EACH(e, n_envs) {
        int nl = mi[0], nq = mi[1], nd = mi[2], substeps = mi[4], mm_freq = mi[5];
        float dt = mf[3];
        long sub_len = vjp_sub_len(mi), build_len = vjp_build_len(mi);
        int builds = (substeps + mm_freq - 1) / mm_freq;
        float* base = scratch + (long)e * step_vjp_scratch_len(mi);
        float* build0 = base + substeps * sub_len;
        float* h = build0 + builds * build_len;
        float* la = h + nd * nd;
        float* a_s = la + nl * LA_SIZE;
        float* a_tau = a_s + 6 * nd;
        float* a_qdd = a_tau + nd;
        float* a_qd = a_qdd + nd;
        float* a_act = a_qd + nd;
        float* carry_qd = a_act + nd;
        float* a_q = carry_qd + nd;
        float* carry_q = a_q + nq;
        float* adj_ic = carry_q + nq;
        const float* ac = act + (long)e * nd;
        // forward, keeping every substep
        for (int k = 0; k < substeps; ++k) {
            float* r = base + k * sub_len;
            float* ls = r;
            float* s = ls + nl * LS_SIZE;
            float* tau = s + 6 * nd;
            float* gain = tau + nd;
            float* qdd = gain + nd;
            float* cq = qdd + nd;
            float* cqd = cq + nq;
            float* oq = cqd + nd;
            float* oqd = oq + nq;
            if (k == 0) {
                for (int j = 0; j < nq; ++j) {
                    cq[j] = q[(long)e * nq + j];
                }
                for (int j = 0; j < nd; ++j) {
                    cqd[j] = qd[(long)e * nd + j];
                }
            } else {
                const float* prev = base + (k - 1) * sub_len + nl * LS_SIZE + 9 * nd + nq + nd;
                for (int j = 0; j < nq; ++j) {
                    cq[j] = prev[j];
                }
                for (int j = 0; j < nd; ++j) {
                    cqd[j] = prev[nq + j];
                }
            }
            float* bl = build0 + (k / mm_freq) * build_len;
            substep_forward(mi, mf, ac, cq, cqd, k % mm_freq == 0, ls, s, tau, gain, qdd, h,
                            bl + 6 * nd, bl, oq, oqd);
        }
        // reverse sweep
        for (int j = 0; j < nd; ++j) {
            a_act[j] = 0.0f;
            carry_qd[j] = adj_qd_out[(long)e * nd + j];
        }
        for (int j = 0; j < nq; ++j) {
            carry_q[j] = adj_q_out[(long)e * nq + j];
        }
        for (int b = 0; b < builds; ++b) {
            float* ah = build0 + b * build_len + 6 * nd + nd * nd;
            for (int j = 0; j < nd * nd; ++j) {
                ah[j] = 0.0f;
            }
        }
        for (int k = substeps - 1; k >= 0; --k) {
            const float* r = base + k * sub_len;
            const float* ls = r;
            const float* s = ls + nl * LS_SIZE;
            const float* gain = s + 7 * nd;
            const float* qdd = gain + nd;
            const float* cq = qdd + nd;
            const float* cqd = cq + nq;
            const float* oqd = cqd + nd + nq;
            float* bl = build0 + (k / mm_freq) * build_len;
            const float* ics = bl;
            const float* l = bl + 6 * nd;
            float* adj_h = bl + 6 * nd + nd * nd;
            for (int j = 0; j < nq; ++j) {
                a_q[j] = 0.0f;
            }
            for (int j = 0; j < nd; ++j) {
                a_qd[j] = 0.0f;
                a_tau[j] = 0.0f;
                a_qdd[j] = 0.0f;
            }
            for (int j = 0; j < nl * LA_SIZE; ++j) {
                la[j] = 0.0f;
            }
            for (int j = 0; j < 6 * nd; ++j) {
                a_s[j] = 0.0f;
            }
            integrate_vjp(mi, cq, oqd, carry_q, carry_qd, dt, a_q, a_qd, a_qdd);
            // solve: adj_qdd ← H⁻¹ adj_qdd, into adj_tau and adj_h
            mbmix_cholesky_solve_one(nd, l, a_qdd);
            for (int i = 0; i < nd; ++i) {
                a_tau[i] += a_qdd[i];
                for (int c = 0; c < nd; ++c) {
                    adj_h[i * nd + c] -= a_qdd[i] * qdd[c];
                }
            }
            if (k % mm_freq == 0) {
                mass_matrix_vjp(mi, s, ls, ics, adj_h, adj_ic, a_s, la);
            }
            joint_torques_vjp(mi, mf, cq, s, gain, ls, a_tau, la, a_s, a_q, a_qd, a_act);
            contacts_vjp(mi, mf, ls, la);
            bias_forces_vjp(mi, mf, ls, la);
            if (k % mm_freq == 0) {
                spatial_inertias_vjp(mi, mf, ls, la);
            }
            velocities_vjp(mi, cqd, s, ls, la, a_s, a_qd);
            kinematics_vjp(mi, mf, cq, ls, la, a_s, a_q);
            for (int j = 0; j < nq; ++j) {
                carry_q[j] = a_q[j];
            }
            for (int j = 0; j < nd; ++j) {
                carry_qd[j] = a_qd[j];
            }
        }
        for (int j = 0; j < nq; ++j) {
            adj_q[(long)e * nq + j] += carry_q[j];
        }
        for (int j = 0; j < nd; ++j) {
            adj_qd[(long)e * nd + j] += carry_qd[j];
            adj_act[(long)e * nd + j] += a_act[j];
        }
    }
}
