//! Reverse sweeps over thousands of substeps in bounded memory by checkpointing.
//!
//! A control step of an MPM or cloth task runs thousands of substeps. The forward pass of
//! [`vjp_checkpointed`] keeps the state every `every` substeps; the reverse sweep walks the
//! segments backwards, recomputes each segment's states from its checkpoint, and runs the
//! substeps' adjoints. Memory is `⌈n/K⌉ + K` states instead of `n`, at the price of one
//! extra forward pass. With `every = 1` it is the store-everything sweep, and since the
//! recomputation replays the same floating-point operations the two give identical
//! gradients (a test checks this bit for bit).
//!
//! A simulator whose substep adjoint needs the forward pass's intermediates (the MPM
//! substep's SVDs, affine momenta and grid) can hand them over in a *tape*
//! ([`Substepper::records`]): the segment's recomputation records one tape per substep,
//! and each substep's adjoint reads its tape instead of replaying the forward pass. The
//! segment then holds `K` tapes beside its `K` states.

/// A simulator advanced substep by substep, with the adjoint of one substep.
pub trait Substepper {
    /// The full state between substeps.
    type State: Clone;
    /// Adjoints: of the state, and of whatever inputs (actions, parameters) the substeps
    /// read, accumulated across substeps.
    type Adj;
    /// What one substep's forward pass leaves for its adjoint (`()` for a simulator that
    /// records none).
    type Tape: Default;
    /// Whether [`Self::substep_taped`] records tapes that [`Self::substep_vjp_taped`]
    /// uses; when false (the default) the sweep never asks for them.
    fn records(&self) -> bool {
        false
    }
    /// Advances `s` by substep number `k` (the index lets controls vary per substep).
    fn substep(&self, k: usize, s: &mut Self::State);
    /// Given the state `s_in` before substep `k`, maps the adjoint of the state after it
    /// (in `adj`) to the adjoint of `s_in`, in place, accumulating input adjoints.
    fn substep_vjp(&self, k: usize, s_in: &Self::State, adj: &mut Self::Adj);
    /// [`Self::substep`], also recording into `tape` what [`Self::substep_vjp_taped`]
    /// needs. The default records nothing.
    fn substep_taped(&self, k: usize, s: &mut Self::State, tape: &mut Self::Tape) {
        let _ = tape;
        self.substep(k, s);
    }
    /// [`Self::substep_vjp`] from the tape that [`Self::substep_taped`] recorded while
    /// advancing `s_in`; it must give the same result bit for bit. The default ignores
    /// the tape.
    fn substep_vjp_taped(
        &self,
        k: usize,
        s_in: &Self::State,
        tape: &Self::Tape,
        adj: &mut Self::Adj,
    ) {
        let _ = tape;
        self.substep_vjp(k, s_in, adj);
    }
    /// Heap bytes one stored state occupies (for the reported peak).
    fn state_bytes(&self, s: &Self::State) -> usize;
    /// Heap bytes one recorded tape occupies (for the reported peak). Default 0.
    fn tape_bytes(&self, tape: &Self::Tape) -> usize {
        let _ = tape;
        0
    }
}

/// What a checkpointed sweep kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// States stored as checkpoints.
    pub checkpoints: usize,
    /// Most states held at once (checkpoints plus one recomputed segment).
    pub peak_states: usize,
    /// Most tapes held at once (one segment's, when the simulator records them).
    pub peak_tapes: usize,
    /// `peak_states` and `peak_tapes` in bytes.
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
    // one segment's tapes, reused across segments
    let records = sim.records();
    let mut tapes: Vec<S::Tape> = Vec::new();
    if records {
        tapes.resize_with(every, Default::default);
    }
    for (c, ckpt) in checkpoints.into_iter().enumerate().rev() {
        let start = c * every;
        let end = (start + every).min(n);
        segment.clear();
        let mut s = ckpt;
        for k in start..end {
            segment.push(s.clone());
            if records {
                // the segment's last substep too: its tape replaces the replay
                sim.substep_taped(k, &mut s, &mut tapes[k - start]);
            } else if k + 1 < end {
                sim.substep(k, &mut s);
            }
        }
        for k in (start..end).rev() {
            if records {
                sim.substep_vjp_taped(k, &segment[k - start], &tapes[k - start], adj);
            } else {
                sim.substep_vjp(k, &segment[k - start], adj);
            }
        }
    }
    let peak_states = n_ckpt + every;
    let peak_tapes = tapes.len();
    let tape_bytes: usize = tapes.iter().map(|t| sim.tape_bytes(t)).sum();
    SweepStats {
        checkpoints: n_ckpt,
        peak_states,
        peak_tapes,
        peak_bytes: peak_states * bytes + tape_bytes,
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
        type Tape = ();
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

    /// [`Toy`] with a tape: the forward records `sin` and `cos` of the input, which the
    /// taped adjoint reads instead of recomputing them.
    struct TapedToy(Toy);

    impl Substepper for TapedToy {
        type State = f64;
        type Adj = (f64, Vec<f64>);
        type Tape = Option<(f64, f64)>;
        fn records(&self) -> bool {
            true
        }
        fn substep(&self, k: usize, s: &mut f64) {
            self.0.substep(k, s);
        }
        fn substep_vjp(&self, k: usize, s_in: &f64, adj: &mut (f64, Vec<f64>)) {
            self.0.substep_vjp(k, s_in, adj);
        }
        fn substep_taped(&self, k: usize, s: &mut f64, tape: &mut Self::Tape) {
            *tape = Some((s.sin(), s.cos()));
            self.0.substep(k, s);
        }
        fn substep_vjp_taped(
            &self,
            k: usize,
            _s_in: &f64,
            tape: &Self::Tape,
            adj: &mut (f64, Vec<f64>),
        ) {
            let (sin, cos) = tape.expect("the sweep records a tape before its adjoint");
            let a = adj.0;
            adj.1[k] += a * 0.1 * sin;
            adj.0 = a * (1.0 + 0.1 * cos * self.0.c[k]);
        }
        fn state_bytes(&self, _: &f64) -> usize {
            8
        }
        fn tape_bytes(&self, _: &Self::Tape) -> usize {
            16
        }
    }

    #[test]
    fn taped_sweep_equals_the_replaying_one() {
        let n = 23;
        let c: Vec<f64> = (0..n).map(|k| 1.0 - 0.07 * k as f64).collect();
        let plain = Toy { c: c.clone() };
        let taped = TapedToy(Toy { c });
        for every in [1, 4, 23] {
            let mut a = (0.3, vec![0.0; n]);
            let mut b = (0.3, vec![0.0; n]);
            let sa = vjp_checkpointed(&plain, &1.1, n, every, &mut a);
            let sb = vjp_checkpointed(&taped, &1.1, n, every, &mut b);
            assert_eq!(a.0.to_bits(), b.0.to_bits(), "every {every}");
            assert!(a
                .1
                .iter()
                .zip(&b.1)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
            assert_eq!((sa.peak_tapes, sb.peak_tapes), (0, every));
            assert_eq!(sb.peak_bytes, sa.peak_bytes + 16 * every);
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
