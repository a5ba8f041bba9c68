//! Reverse sweeps over thousands of substeps in bounded memory by checkpointing.
//!
//! A control step of an MPM or cloth task runs thousands of substeps. The forward pass of
//! [`vjp_checkpointed`] keeps the state every `every` substeps; the reverse sweep walks the
//! segments backwards, recomputes each segment's states from its checkpoint, and runs the
//! substeps' adjoints. Memory is `⌈n/K⌉ + K` states instead of `n`, at the price of one
//! extra forward pass. With `every = 1` it is the store-everything sweep, and since the
//! recomputation replays the same floating-point operations the two give identical
//! gradients (a test checks this bit for bit).

/// A simulator advanced substep by substep, with the adjoint of one substep.
pub trait Substepper {
    /// The full state between substeps.
    type State: Clone;
    /// Adjoints: of the state, and of whatever inputs (actions, parameters) the substeps
    /// read, accumulated across substeps.
    type Adj;
    /// Advances `s` by substep number `k` (the index lets controls vary per substep).
    fn substep(&self, k: usize, s: &mut Self::State);
    /// Given the state `s_in` before substep `k`, maps the adjoint of the state after it
    /// (in `adj`) to the adjoint of `s_in`, in place, accumulating input adjoints.
    fn substep_vjp(&self, k: usize, s_in: &Self::State, adj: &mut Self::Adj);
    /// Heap bytes one stored state occupies (for the reported peak).
    fn state_bytes(&self, s: &Self::State) -> usize;
}

/// What a checkpointed sweep kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// States stored as checkpoints.
    pub checkpoints: usize,
    /// Most states held at once (checkpoints plus one recomputed segment).
    pub peak_states: usize,
    /// `peak_states` in bytes.
    pub peak_bytes: usize,
}

/// Runs substeps `0..n` from `s0`, returning the final state.
pub fn forward<S: Substepper>(sim: &S, s0: &S::State, n: usize) -> S::State {
    let mut s = s0.clone();
    for k in 0..n {
        sim.substep(k, &mut s);
    }
    s
}

/// The adjoint of substeps `0..n` from `s0`: on entry `adj` holds the adjoint of the final
/// state, on return that of `s0` (plus the accumulated input adjoints). States are stored
/// every `every` substeps (`every ≥ 1`; values above `n` act as `n`).
pub fn vjp_checkpointed<S: Substepper>(
    sim: &S,
    s0: &S::State,
    n: usize,
    every: usize,
    adj: &mut S::Adj,
) -> SweepStats {
    assert!(every >= 1, "checkpoint interval must be at least 1");
    let every = every.min(n.max(1));
    let bytes = sim.state_bytes(s0);
    // forward: the state at the start of every segment
    let mut checkpoints = Vec::with_capacity(n.div_ceil(every));
    let mut s = s0.clone();
    for k in 0..n {
        if k % every == 0 {
            checkpoints.push(s.clone());
        }
        if k + 1 < n {
            sim.substep(k, &mut s);
        }
    }
    let n_ckpt = checkpoints.len();
    let mut segment: Vec<S::State> = Vec::with_capacity(every);
    for (c, ckpt) in checkpoints.into_iter().enumerate().rev() {
        let start = c * every;
        let end = (start + every).min(n);
        segment.clear();
        let mut s = ckpt;
        for k in start..end {
            segment.push(s.clone());
            if k + 1 < end {
                sim.substep(k, &mut s);
            }
        }
        for k in (start..end).rev() {
            sim.substep_vjp(k, &segment[k - start], adj);
        }
    }
    let peak_states = n_ckpt + every;
    SweepStats {
        checkpoints: n_ckpt,
        peak_states,
        peak_bytes: peak_states * bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x ← x + h·sin(x)·c_k per substep, the simplest nonlinear recurrence with a
    /// per-substep control; adjoint of x and of the controls.
    struct Toy {
        c: Vec<f64>,
    }

    impl Substepper for Toy {
        type State = f64;
        type Adj = (f64, Vec<f64>);
        fn substep(&self, k: usize, s: &mut f64) {
            *s += 0.1 * s.sin() * self.c[k];
        }
        fn substep_vjp(&self, k: usize, s_in: &f64, adj: &mut (f64, Vec<f64>)) {
            let a = adj.0;
            adj.1[k] += a * 0.1 * s_in.sin();
            adj.0 = a * (1.0 + 0.1 * s_in.cos() * self.c[k]);
        }
        fn state_bytes(&self, _: &f64) -> usize {
            8
        }
    }

    #[test]
    fn checkpointed_equals_stored_everything_and_finite_differences() {
        let n = 23;
        let toy = Toy {
            c: (0..n).map(|k| 1.0 + 0.1 * k as f64).collect(),
        };
        let x0 = 0.7;
        let run = |every: usize| {
            let mut adj = (1.0, vec![0.0; n]);
            let st = vjp_checkpointed(&toy, &x0, n, every, &mut adj);
            (adj, st)
        };
        let (full, st1) = run(1);
        for every in [2, 5, 7, 23, 100] {
            let (a, st) = run(every);
            assert_eq!(a.0.to_bits(), full.0.to_bits(), "every {every}");
            assert!(a
                .1
                .iter()
                .zip(&full.1)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
            assert!(st.peak_states < st1.peak_states || every >= n);
        }
        let h = 1e-6;
        let fd = (forward(&toy, &(x0 + h), n) - forward(&toy, &(x0 - h), n)) / (2.0 * h);
        assert!((fd - full.0).abs() < 1e-8, "{fd} vs {}", full.0);
        assert_eq!(st1.checkpoints, n);
    }
}
