// One control step of an articulation, one thread per env: the CUDA twin of
// `Articulation::step` (dynamics.rs, contact.rs, spatial.rs), stage by stage in the same
// order and with the same operation order, in f32 like the CPU training path. The
// articulation is packed by `kernels::PackedArticulation` (layouts below); each env has a
// scratch block for its substep intermediates. Uses `mbmix_cholesky_one` and
// `mbmix_cholesky_solve_one` from cholesky.cu (compiled in the same module).
// Written in the CUDA/C common subset (see diff-core's cuda_prelude.h).
//
// Integer model `mi`: [n_links, n_q, n_qd, n_contacts, substeps, mm_freq], then per link
// MBMIX_LI ints (parent or −1, kind, q_start, qd_start, x_pj is identity, saturation),
// then dof_link[n_qd], support_start[n_qd + 1], support[...], contact_link[n_contacts].
// Float model `mf`: [gravity (3), sub_dt], then per link MBMIX_LF floats (axis 3, x_pj.p 3,
// x_pj.r 9 row-major, mass, com 3, inertia 9, target, target_ke, target_kd, limit_lower,
// limit_upper, limit_ke, limit_kd, armature, effort_limit), then per contact MBMIX_CF
// floats (point 3, thickness, ke, kd, kf, mu).

#define MBMIX_LI 6
#define MBMIX_LF 37
#define MBMIX_CF 8
#define MBMIX_HEADER_I 6
#define MBMIX_HEADER_F 4

#define MBMIX_PRISMATIC 0
#define MBMIX_REVOLUTE 1
#define MBMIX_BALL 2
#define MBMIX_FIXED 3
#define MBMIX_FREE 4

// per-link scratch: x_sj (p 3, r 9), x_sc (p 3, r 9), com 3, v 6, a 6, i_w 9, f 6,
// f_tot 6, i_s 36, ic 36
#define LS_XSJ 0
#define LS_XSC 12
#define LS_COM 24
#define LS_V 27
#define LS_A 33
#define LS_IW 39
#define LS_F 48
#define LS_FTOT 54
#define LS_IS 60
#define LS_IC 96
#define LS_SIZE 132

// ---------------------------------------------------------------- small linear algebra

MBMIX_DEVICE float dot3(const float* a, const float* b) {
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

MBMIX_DEVICE void cross3(const float* a, const float* b, float* out) {
    float x = a[1] * b[2] - a[2] * b[1];
    float y = a[2] * b[0] - a[0] * b[2];
    float z = a[0] * b[1] - a[1] * b[0];
    out[0] = x;
    out[1] = y;
    out[2] = z;
}

// out = A·x (A row-major 3×3); out may not alias x
MBMIX_DEVICE void mv3(const float* a, const float* x, float* out) {
    out[0] = dot3(a, x);
    out[1] = dot3(a + 3, x);
    out[2] = dot3(a + 6, x);
}

// out = A·B
MBMIX_DEVICE void mm3(const float* a, const float* b, float* out) {
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            out[i * 3 + j] = a[i * 3] * b[j] + a[i * 3 + 1] * b[3 + j] + a[i * 3 + 2] * b[6 + j];
        }
    }
}

// out = A·Bᵀ
MBMIX_DEVICE void mmt3(const float* a, const float* b, float* out) {
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            out[i * 3 + j] = dot3(a + 3 * i, b + 3 * j);
        }
    }
}

MBMIX_DEVICE void skew3(const float* c, float* k) {
    k[0] = 0.0f;
    k[1] = -c[2];
    k[2] = c[1];
    k[3] = c[2];
    k[4] = 0.0f;
    k[5] = -c[0];
    k[6] = -c[1];
    k[7] = c[0];
    k[8] = 0.0f;
}

// I + sin q [a]× + (1 − cos q)[a]×²
MBMIX_DEVICE void axis_angle(const float* axis, float q, float* r) {
    float k[9], k2[9];
    skew3(axis, k);
    mm3(k, k, k2);
    float s = sinf(q), c = cosf(q);
    for (int i = 0; i < 9; ++i) {
        r[i] = (i % 4 == 0) ? 1.0f : 0.0f;
        r[i] += s * k[i] + (1.0f - c) * k2[i];
    }
}

// dflex's quat_rotate as a function of all four components
MBMIX_DEVICE void quat_rot(const float* q, float* r) {
    float w = q[3], two = 2.0f;
    float d = two * w * w - 1.0f;
    for (int a = 0; a < 3; ++a) {
        for (int b = 0; b < 3; ++b) {
            r[a * 3 + b] = two * q[a] * q[b];
        }
        r[a * 3 + a] += d;
    }
    float tw = two * w;
    r[1] -= tw * q[2];
    r[2] += tw * q[1];
    r[3] += tw * q[2];
    r[5] -= tw * q[0];
    r[6] -= tw * q[1];
    r[7] += tw * q[0];
}

MBMIX_DEVICE float sv_dot(const float* a, const float* b) {
    float s = 0.0f;
    for (int i = 0; i < 6; ++i) {
        s += a[i] * b[i];
    }
    return s;
}

// x ×ₘ y = (ωx × ωy, ωx × vy + vx × ωy)
MBMIX_DEVICE void sv_cross_motion(const float* x, const float* y, float* out) {
    float a[3], b[3], c[3];
    cross3(x, y, a);
    cross3(x, y + 3, b);
    cross3(x + 3, y, c);
    out[0] = a[0];
    out[1] = a[1];
    out[2] = a[2];
    out[3] = b[0] + c[0];
    out[4] = b[1] + c[1];
    out[5] = b[2] + c[2];
}

// x ×* f = (ωx × τ + vx × f, ωx × f)
MBMIX_DEVICE void sv_cross_force(const float* x, const float* f, float* out) {
    float a[3], b[3], c[3];
    cross3(x, f, a);
    cross3(x + 3, f + 3, b);
    cross3(x, f + 3, c);
    out[0] = a[0] + b[0];
    out[1] = a[1] + b[1];
    out[2] = a[2] + b[2];
    out[3] = c[0];
    out[4] = c[1];
    out[5] = c[2];
}

// I_s·x in compact form: u = x_lin + x_ang × c, (i_w x_ang + c × m u, m u)
MBMIX_DEVICE void inertia_apply(float m, const float* c, const float* i_w, const float* x,
                                float* out) {
    float xc[3], hl[3], iw[3], ch[3];
    cross3(x, c, xc);
    for (int k = 0; k < 3; ++k) {
        hl[k] = (x[3 + k] + xc[k]) * m;
    }
    mv3(i_w, x, iw);
    cross3(c, hl, ch);
    for (int k = 0; k < 3; ++k) {
        out[k] = iw[k] + ch[k];
        out[3 + k] = hl[k];
    }
}

// [[R I_c Rᵀ − m[c]×[c]×, m[c]×], [−m[c]×, m·1]] (6×6 row-major)
MBMIX_DEVICE void spatial_inertia(float m, const float* c, const float* r, const float* i_c,
                                  float* out) {
    float ri[9], i_rot[9], k[9], kk[9];
    mm3(r, i_c, ri);
    mmt3(ri, r, i_rot);
    skew3(c, k);
    mm3(k, k, kk);
    for (int i = 0; i < 36; ++i) {
        out[i] = 0.0f;
    }
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j) {
            out[i * 6 + j] = i_rot[i * 3 + j] - m * kk[i * 3 + j];
            out[i * 6 + j + 3] = m * k[i * 3 + j];
            out[(i + 3) * 6 + j] = -m * k[i * 3 + j];
        }
        out[(i + 3) * 6 + i + 3] = m;
    }
}

// normalize(q + ½(ω, 0) ⊗ q dt)
MBMIX_DEVICE void quat_integrate(const float* q, const float* w, float dt, float* out) {
    float h = dt * 0.5f;
    float c[3];
    cross3(w, q, c);
    float u0 = q[0] + h * (q[3] * w[0] + c[0]);
    float u1 = q[1] + h * (q[3] * w[1] + c[1]);
    float u2 = q[2] + h * (q[3] * w[2] + c[2]);
    float u3 = q[3] - h * dot3(w, q);
    float n = sqrtf(u0 * u0 + u1 * u1 + u2 * u2 + u3 * u3);
    out[0] = u0 / n;
    out[1] = u1 / n;
    out[2] = u2 / n;
    out[3] = u3 / n;
}

MBMIX_DEVICE float limit_force(float q, float lower, float upper, float ke) {
    if (q < lower) {
        return ke * (lower - q);
    } else if (q > upper) {
        return ke * (upper - q);
    }
    return 0.0f;
}

// ---------------------------------------------------------------- the substep stages

// Stage 1: x_sj, x_sc, COM and motion subspaces from q.
MBMIX_DEVICE void stage_kinematics(const int* mi, const float* mf, const float* q,
                                   float* ls, float* s) {
    int nl = mi[0];
    for (int i = 0; i < nl; ++i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        const float* lf = mf + MBMIX_HEADER_F + i * MBMIX_LF;
        int parent = li[0], kind = li[1], qs = li[2], d = li[3], ident = li[4];
        const float* axis = lf;
        const float* pj_p = lf + 3;
        const float* pj_r = lf + 6;
        float* me = ls + i * LS_SIZE;
        float* xsj = me + LS_XSJ;
        float* xsc = me + LS_XSC;
        if (parent >= 0) {
            const float* xp = ls + parent * LS_SIZE + LS_XSC;
            float t[3];
            mv3(xp + 3, pj_p, t);
            for (int k = 0; k < 3; ++k) {
                xsj[k] = xp[k] + t[k];
            }
            if (ident) {
                for (int k = 0; k < 9; ++k) {
                    xsj[3 + k] = xp[3 + k];
                }
            } else {
                mm3(xp + 3, pj_r, xsj + 3);
            }
        } else {
            for (int k = 0; k < 3; ++k) {
                xsj[k] = pj_p[k];
            }
            for (int k = 0; k < 9; ++k) {
                xsj[3 + k] = pj_r[k];
            }
        }
        float rq[9], t[3];
        switch (kind) {
        case MBMIX_FIXED:
            for (int k = 0; k < 12; ++k) {
                xsc[k] = xsj[k];
            }
            break;
        case MBMIX_BALL:
            for (int k = 0; k < 3; ++k) {
                xsc[k] = xsj[k];
            }
            quat_rot(q + qs, rq);
            mm3(xsj + 3, rq, xsc + 3);
            break;
        case MBMIX_FREE:
            mv3(xsj + 3, q + qs, t);
            for (int k = 0; k < 3; ++k) {
                xsc[k] = xsj[k] + t[k];
            }
            quat_rot(q + qs + 3, rq);
            mm3(xsj + 3, rq, xsc + 3);
            break;
        case MBMIX_REVOLUTE:
            for (int k = 0; k < 3; ++k) {
                xsc[k] = xsj[k];
            }
            axis_angle(axis, q[qs], rq);
            mm3(xsj + 3, rq, xsc + 3);
            break;
        default: { // prismatic
            float sa[3] = {axis[0] * q[qs], axis[1] * q[qs], axis[2] * q[qs]};
            mv3(xsj + 3, sa, t);
            for (int k = 0; k < 3; ++k) {
                xsc[k] = xsj[k] + t[k];
            }
            for (int k = 0; k < 9; ++k) {
                xsc[3 + k] = xsj[3 + k];
            }
        }
        }
        float w[3];
        switch (kind) {
        case MBMIX_REVOLUTE:
            mv3(xsj + 3, axis, w);
            s[d * 6] = w[0];
            s[d * 6 + 1] = w[1];
            s[d * 6 + 2] = w[2];
            cross3(xsj, w, s + d * 6 + 3);
            break;
        case MBMIX_PRISMATIC:
            s[d * 6] = 0.0f;
            s[d * 6 + 1] = 0.0f;
            s[d * 6 + 2] = 0.0f;
            mv3(xsj + 3, axis, s + d * 6 + 3);
            break;
        case MBMIX_BALL:
            for (int k = 0; k < 3; ++k) {
                w[0] = xsj[3 + k];
                w[1] = xsj[3 + 3 + k];
                w[2] = xsj[3 + 6 + k];
                float* sk = s + (d + k) * 6;
                sk[0] = w[0];
                sk[1] = w[1];
                sk[2] = w[2];
                cross3(xsj, w, sk + 3);
            }
            break;
        case MBMIX_FREE:
            for (int k = 0; k < 6; ++k) {
                for (int c = 0; c < 6; ++c) {
                    s[(d + k) * 6 + c] = (c == k) ? 1.0f : 0.0f;
                }
            }
            break;
        default:
            break;
        }
        float tc[3];
        mv3(xsc + 3, lf + 16, tc);
        for (int k = 0; k < 3; ++k) {
            me[LS_COM + k] = xsc[k] + tc[k];
        }
    }
}

MBMIX_DEVICE int dof_count(int kind) {
    switch (kind) {
    case MBMIX_PRISMATIC:
    case MBMIX_REVOLUTE:
        return 1;
    case MBMIX_BALL:
        return 3;
    case MBMIX_FREE:
        return 6;
    default:
        return 0;
    }
}

// Stage 2: twists and velocity-product accelerations.
MBMIX_DEVICE void stage_velocities(const int* mi, const float* qd, const float* s, float* ls) {
    int nl = mi[0];
    for (int i = 0; i < nl; ++i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        int parent = li[0], d0 = li[3], nd = dof_count(li[1]);
        float vj[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int d = d0; d < d0 + nd; ++d) {
            for (int k = 0; k < 6; ++k) {
                vj[k] += s[d * 6 + k] * qd[d];
            }
        }
        float* me = ls + i * LS_SIZE;
        float vp[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        float ap[6] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        if (parent >= 0) {
            for (int k = 0; k < 6; ++k) {
                vp[k] = ls[parent * LS_SIZE + LS_V + k];
                ap[k] = ls[parent * LS_SIZE + LS_A + k];
            }
        }
        float cm[6];
        for (int k = 0; k < 6; ++k) {
            me[LS_V + k] = vp[k] + vj[k];
        }
        sv_cross_motion(me + LS_V, vj, cm);
        for (int k = 0; k < 6; ++k) {
            me[LS_A + k] = ap[k] + cm[k];
        }
    }
}

// Stage 3: bias forces f = I_s a + v ×* (I_s v) − f_g.
MBMIX_DEVICE void stage_bias_forces(const int* mi, const float* mf, float* ls) {
    int nl = mi[0];
    const float* g = mf;
    for (int i = 0; i < nl; ++i) {
        const float* lf = mf + MBMIX_HEADER_F + i * MBMIX_LF;
        float m = lf[15];
        float* me = ls + i * LS_SIZE;
        float ri[9];
        mm3(me + LS_XSC + 3, lf + 19, ri);
        mmt3(ri, me + LS_XSC + 3, me + LS_IW);
        float h[6], ia[6], cf[6];
        inertia_apply(m, me + LS_COM, me + LS_IW, me + LS_V, h);
        float mg[3] = {g[0] * m, g[1] * m, g[2] * m};
        float fg_ang[3];
        cross3(me + LS_COM, mg, fg_ang);
        inertia_apply(m, me + LS_COM, me + LS_IW, me + LS_A, ia);
        sv_cross_force(me + LS_V, h, cf);
        for (int k = 0; k < 6; ++k) {
            float f = ia[k] + cf[k];
            me[LS_F + k] = f - (k < 3 ? fg_ang[k] : mg[k - 3]);
        }
    }
}

// One ground contact, evaluated branch by branch (contact.rs `eval`), for the forward
// stage and its adjoint.
typedef struct {
    float p[3];    // world contact point
    float gap;     // negative in contact
    float dpdt[3]; // point velocity
    float f[3];    // minus the force on the body
    float vt_len;  // tangential speed
    int damped;    // the damping branch is on
    int friction;  // 0 none, 1 viscous, 2 Coulomb
} MbmixContact;

// Fills `out` for contact `cp` (point 3, thickness, ke, kd, kf, mu) on a link with
// transform `x` (p 3, r 9) and twist `v`; returns 0 when the point is off the ground.
MBMIX_DEVICE int contact_eval(const float* cp, const float* x, const float* v,
                              MbmixContact* out) {
    float* p = out->p;
    mv3(x + 3, cp, p);
    for (int k = 0; k < 3; ++k) {
        p[k] += x[k];
    }
    p[1] -= cp[3];
    float gap = p[1];
    if (gap >= 0.0f) {
        return 0;
    }
    out->gap = gap;
    float wp[3];
    cross3(v, p, wp);
    float* dpdt = out->dpdt;
    dpdt[0] = v[3] + wp[0];
    dpdt[1] = v[4] + wp[1];
    dpdt[2] = v[5] + wp[2];
    float vn = dpdt[1];
    float ke = cp[4], kd = cp[5], kf = cp[6], mu = cp[7];
    out->damped = vn < 0.0f;
    float fy = gap * ke;
    if (out->damped) {
        fy -= vn * kd * gap;
    }
    float vt0 = dpdt[0], vt1 = dpdt[2];
    float vt_len = sqrtf(vt0 * vt0 + vt1 * vt1);
    out->vt_len = vt_len;
    float cap = -(mu * gap * ke);
    float ft0 = 0.0f, ft1 = 0.0f;
    out->friction = 0;
    if (vt_len > 0.0f) {
        if (kf * vt_len < cap) {
            ft0 = kf * vt0;
            ft1 = kf * vt1;
            out->friction = 1;
        } else {
            ft0 = vt0 / vt_len * cap;
            ft1 = vt1 / vt_len * cap;
            out->friction = 2;
        }
    }
    out->f[0] = ft0;
    out->f[1] = fy;
    out->f[2] = ft1;
    return 1;
}

// The contact table: each contact's link index, and its MBMIX_CF floats.
MBMIX_DEVICE const int* contact_links(const int* mi) {
    int nl = mi[0], nd = mi[2];
    return mi + MBMIX_HEADER_I + nl * MBMIX_LI + nd + (nd + 1) +
           mi[MBMIX_HEADER_I + nl * MBMIX_LI + nd + nd];
}

// Stage 3b: ground contacts add their wrench into f.
MBMIX_DEVICE void stage_contacts(const int* mi, const float* mf, float* ls) {
    int nl = mi[0], nc = mi[3];
    const int* contact_link = contact_links(mi);
    const float* cf = mf + MBMIX_HEADER_F + nl * MBMIX_LF;
    for (int c = 0; c < nc; ++c) {
        float* me = ls + contact_link[c] * LS_SIZE;
        MbmixContact e;
        if (!contact_eval(cf + c * MBMIX_CF, me + LS_XSC, me + LS_V, &e)) {
            continue;
        }
        float pf[3];
        cross3(e.p, e.f, pf);
        for (int k = 0; k < 3; ++k) {
            me[LS_F + k] += pf[k];
            me[LS_F + 3 + k] += e.f[k];
        }
    }
}

// Stage 4: subtree forces and joint torques.
MBMIX_DEVICE void stage_joint_torques(const int* mi, const float* mf, const float* q,
                                      const float* qd, const float* s, const float* act,
                                      float* ls, float* tau, float* gain) {
    int nl = mi[0];
    for (int i = 0; i < nl; ++i) {
        for (int k = 0; k < 6; ++k) {
            ls[i * LS_SIZE + LS_FTOT + k] = ls[i * LS_SIZE + LS_F + k];
        }
    }
    for (int i = nl - 1; i >= 0; --i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        const float* lf = mf + MBMIX_HEADER_F + i * MBMIX_LF;
        int parent = li[0], kind = li[1], qi = li[2], d = li[3], sat = li[5];
        float* ftot = ls + i * LS_SIZE + LS_FTOT;
        if (parent >= 0) {
            for (int k = 0; k < 6; ++k) {
                ls[parent * LS_SIZE + LS_FTOT + k] += ftot[k];
            }
        }
        float target = lf[28], target_ke = lf[29], target_kd = lf[30];
        float lo = lf[31], hi = lf[32], limit_ke = lf[33], limit_kd = lf[34];
        float effort = lf[36];
        switch (kind) {
        case MBMIX_PRISMATIC:
        case MBMIX_REVOLUTE: {
            float qq = q[qi], qv = qd[d];
            float limit_f = limit_force(qq, lo, hi, limit_ke);
            float motor = act[d] - target_ke * (qq - target) - target_kd * qv;
            float g = 1.0f;
            if (isfinite(effort)) {
                if (sat == 0) {
                    if (fabsf(motor) >= effort) {
                        motor = copysignf(effort, motor);
                        g = 0.0f;
                    }
                } else {
                    float th = tanhf(motor / effort);
                    motor = effort * th;
                    g = 1.0f - th * th;
                }
            }
            gain[d] = g;
            tau[d] = -sv_dot(s + d * 6, ftot) + motor + limit_f - limit_kd * qv;
            break;
        }
        case MBMIX_BALL:
            for (int k = 0; k < 3; ++k) {
                tau[d + k] = -sv_dot(s + (d + k) * 6, ftot) - qd[d + k] * target_kd -
                             q[qi + k] * target_ke;
            }
            break;
        case MBMIX_FREE:
            for (int k = 0; k < 6; ++k) {
                tau[d + k] = -sv_dot(s + (d + k) * 6, ftot);
            }
            break;
        default:
            break;
        }
    }
}

// Spatial inertias, composite inertias, H + diag(armature) and its Cholesky factor.
MBMIX_DEVICE void stage_mass_matrix(const int* mi, const float* mf, const float* s, float* ls,
                                    float* h, float* l, float* ics) {
    int nl = mi[0], n = mi[2];
    const int* dof_link = mi + MBMIX_HEADER_I + nl * MBMIX_LI;
    const int* sup_start = dof_link + n;
    const int* sup = sup_start + n + 1;
    for (int i = 0; i < nl; ++i) {
        const float* lf = mf + MBMIX_HEADER_F + i * MBMIX_LF;
        float* me = ls + i * LS_SIZE;
        spatial_inertia(lf[15], me + LS_COM, me + LS_XSC + 3, lf + 19, me + LS_IS);
        for (int k = 0; k < 36; ++k) {
            me[LS_IC + k] = me[LS_IS + k];
        }
    }
    for (int i = nl - 1; i >= 0; --i) {
        int parent = mi[MBMIX_HEADER_I + i * MBMIX_LI];
        if (parent >= 0) {
            for (int k = 0; k < 36; ++k) {
                ls[parent * LS_SIZE + LS_IC + k] += ls[i * LS_SIZE + LS_IC + k];
            }
        }
    }
    for (int k = 0; k < n * n; ++k) {
        h[k] = 0.0f;
    }
    for (int e = 0; e < n; ++e) {
        const float* ic = ls + dof_link[e] * LS_SIZE + LS_IC;
        float* y = ics + e * 6;
        for (int r = 0; r < 6; ++r) {
            y[r] = sv_dot(ic + r * 6, s + e * 6);
        }
        for (int j = sup_start[e]; j < sup_start[e + 1]; ++j) {
            int d = sup[j];
            float v = sv_dot(s + d * 6, y);
            h[d * n + e] = v;
            h[e * n + d] = v;
        }
    }
    for (int i = 0; i < nl; ++i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        float arm = mf[MBMIX_HEADER_F + i * MBMIX_LF + 35];
        for (int d = li[3]; d < li[3] + dof_count(li[1]); ++d) {
            h[d * n + d] += arm;
        }
    }
    mbmix_cholesky_one(n, h, l);
}

// Semi-implicit Euler into q_out, qd_out.
MBMIX_DEVICE void stage_integrate(const int* mi, const float* q, const float* qd,
                                  const float* qdd, float dt, float* q_out, float* qd_out) {
    int nl = mi[0];
    for (int i = 0; i < nl; ++i) {
        const int* li = mi + MBMIX_HEADER_I + i * MBMIX_LI;
        int kind = li[1], qi = li[2], d = li[3], nd = dof_count(kind);
        for (int k = d; k < d + nd; ++k) {
            qd_out[k] = qd[k] + qdd[k] * dt;
        }
        if (kind == MBMIX_PRISMATIC || kind == MBMIX_REVOLUTE) {
            q_out[qi] = q[qi] + qd_out[d] * dt;
        } else if (kind == MBMIX_BALL || kind == MBMIX_FREE) {
            const float* w = qd_out + d;
            int o = 0;
            if (kind == MBMIX_FREE) {
                const float* p = q + qi;
                float c[3];
                cross3(w, p, c);
                for (int k = 0; k < 3; ++k) {
                    float dp = qd_out[d + 3 + k] + c[k];
                    q_out[qi + k] = p[k] + dp * dt;
                }
                o = 3;
            }
            quat_integrate(q + qi + o, w, dt, q_out + qi + o);
        }
    }
}

// One substep from (q, qd) into (q_out, qd_out), keeping its intermediates: link states
// `ls`, motion subspaces `s`, torques, motor gains, accelerations. With `rebuild`, the
// spatial and composite inertias, H (in `h`), its factor `l` and `I^c S` (`ics`) are
// rebuilt first; otherwise `l` is the cached factor.
MBMIX_DEVICE void substep_forward(const int* mi, const float* mf, const float* act,
                                  const float* q, const float* qd, int rebuild, float* ls,
                                  float* s, float* tau, float* gain, float* qdd, float* h,
                                  float* l, float* ics, float* q_out, float* qd_out) {
    int nd = mi[2];
    stage_kinematics(mi, mf, q, ls, s);
    stage_velocities(mi, qd, s, ls);
    stage_bias_forces(mi, mf, ls);
    stage_contacts(mi, mf, ls);
    stage_joint_torques(mi, mf, q, qd, s, act, ls, tau, gain);
    if (rebuild) {
        stage_mass_matrix(mi, mf, s, ls, h, l, ics);
    }
    for (int k = 0; k < nd; ++k) {
        qdd[k] = tau[k];
    }
    mbmix_cholesky_solve_one(nd, l, qdd);
    stage_integrate(mi, q, qd, qdd, mf[3], q_out, qd_out);
}

// The forward kernel's scratch per env, in floats (the host allocates n_envs times this).
MBMIX_DEVICE long step_scratch_len(const int* mi) {
    long nl = mi[0], nq = mi[1], nd = mi[2];
    return nl * LS_SIZE + 6 * nd + 3 * nd + 2 * nd * nd + 6 * nd + 2 * nq + 2 * nd;
}

// One control step for every env: (q, qd, act) → (q_out, qd_out), `substeps` substeps with
// the mass matrix rebuilt every `mm_freq`. `scratch` holds n_envs × step_scratch_len floats.
MBMIX_KERNEL void mbmix_rigid_step(int n_envs, const int* mi, const float* mf, const float* q,
                                   const float* qd, const float* act, float* q_out,
                                   float* qd_out, float* scratch) {
    MBMIX_FOR_EACH(e, n_envs) {
        int nl = mi[0], nq = mi[1], nd = mi[2], substeps = mi[4], mm_freq = mi[5];
        float* ls = scratch + (long)e * step_scratch_len(mi);
        float* s = ls + nl * LS_SIZE;
        float* tau = s + 6 * nd;
        float* gain = tau + nd;
        float* qdd = gain + nd;
        float* h = qdd + nd;
        float* l = h + nd * nd;
        float* ics = l + nd * nd;
        float* cq = ics + 6 * nd; // current q, then next q (2 nq)
        float* cqd = cq + 2 * nq; // current qd, then next qd (2 nd)
        const float* a = act + (long)e * nd;
        for (int k = 0; k < nq; ++k) {
            cq[k] = q[(long)e * nq + k];
        }
        for (int k = 0; k < nd; ++k) {
            cqd[k] = qd[(long)e * nd + k];
        }
        for (int sub = 0; sub < substeps; ++sub) {
            substep_forward(mi, mf, a, cq, cqd, sub % mm_freq == 0, ls, s, tau, gain, qdd, h, l,
                            ics, cq + nq, cqd + nd);
            for (int k = 0; k < nq; ++k) {
                cq[k] = cq[nq + k];
            }
            for (int k = 0; k < nd; ++k) {
                cqd[k] = cqd[nd + k];
            }
        }
        for (int k = 0; k < nq; ++k) {
            q_out[(long)e * nq + k] = cq[k];
        }
        for (int k = 0; k < nd; ++k) {
            qd_out[(long)e * nd + k] = cqd[k];
        }
    }
}
