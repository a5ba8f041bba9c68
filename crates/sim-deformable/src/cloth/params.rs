//! Parameters of the mass-spring cloth and the DaXBench presets (`tasks.md` §7.2).

use diff_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Everything that defines a cloth model. Field names follow DaXBench's cloth `conf`
/// (`daxbench/core/envs/fold_cloth1_env.py:DefaultConf`) where it has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClothParams {
    /// Lattice size `N`: the cloth lives on an `N×N` grid of sites.
    pub n: usize,
    /// Row-major `N×N` mask: site `(i, j)` carries a particle when `mask[i·N + j]`.
    /// Particles are numbered in this row-major order (DaXBench's `jnp.nonzero`).
    pub mask: Vec<bool>,
    /// Lattice spacing `h` (DaXBench's `cell_size = 1/N`): site `(i, j)` starts at
    /// `(i·h, 0, (N − j)·h)`, and a spring between sites `a` and `b` has rest length
    /// `h·‖a − b‖` (lattice units), i.e. rest lengths come from the initial lattice.
    pub spacing: f64,
    /// Spring stiffness `k` of the strain force `k·r̂·(‖r‖ − L₀)/L₀`.
    pub stiffness: f64,
    /// Velocity damping rate: `v ← v·exp(−damping·dt)` every substep.
    pub damping: f64,
    /// Substep length.
    pub dt: f64,
    /// Gravity `g` along −y (applied twice per substep, see [`super`]).
    pub gravity: f64,
    /// Ground friction coefficient μ.
    pub mu: f64,
    /// Velocities are clipped component-wise to `±max_v`.
    pub max_v: f64,
    /// DaXBench's `small_num`: a particle with `y ≤ small_num` touches the ground, and it
    /// regularises the tangential speed `sV = √(v_x² + v_z² + small_num)` and force norm.
    pub small_num: f64,
    /// A ground contact with `sV ≤ static_speed` takes DaXBench's static-friction branch.
    /// DaXBench compares against `small_num`, which `sV ≥ √small_num` never reaches when
    /// `small_num < 1`: with the default (`= small_num`) the static branch is dead code
    /// there and here, and contacts always use the (regularised) dynamic friction. Raise it
    /// to make slow contacts stick.
    pub static_speed: f64,
    /// Radius of the suction-sphere gripper.
    pub gripper_radius: f64,
    /// Substeps per robot sub-action (DaXBench hard-codes 50).
    pub substeps: usize,
    /// Each sub-action's displacement is clipped component-wise to `±action_clip`
    /// before being divided by `substeps`.
    pub action_clip: f64,
}

/// A row-major `n×n` mask that is true on the sites `rows × cols`.
pub fn rect_mask(n: usize, rows: Range<usize>, cols: Range<usize>) -> Vec<bool> {
    let mut m = vec![false; n * n];
    for i in rows {
        for j in cols.clone() {
            if i < n && j < n {
                m[i * n + j] = true;
            }
        }
    }
    m
}

impl ClothParams {
    /// The shared DaXBench defaults (g 0.5, damping 2, max_v 2, `small_num` 1e-8,
    /// gripper radius 0.01, 50 substeps per sub-action, action clip 2) for a lattice of
    /// size `n` with spacing `1/n` and the given mask, stiffness, dt and μ.
    pub fn daxbench(n: usize, mask: Vec<bool>, stiffness: f64, dt: f64, mu: f64) -> Self {
        Self {
            n,
            mask,
            spacing: 1.0 / n as f64,
            stiffness,
            damping: 2.0,
            dt,
            gravity: 0.5,
            mu,
            max_v: 2.0,
            small_num: 1e-8,
            static_speed: 1e-8,
            gripper_radius: 0.01,
            substeps: 50,
            action_clip: 2.0,
        }
    }

    /// fold_cloth1 / fold_cloth3: N 80, mask rows 32:48 × cols 32:64 (512 particles),
    /// stiffness 900, damping 2, dt 2e-3, μ 0.5.
    pub fn fold_cloth() -> Self {
        let n = 80;
        let size = n / 5;
        Self::daxbench(
            n,
            rect_mask(n, 2 * size..3 * size, 2 * size..4 * size),
            900.0,
            2e-3,
            0.5,
        )
    }

    /// unfold_cloth1 / unfold_cloth3: as [`Self::fold_cloth`] with μ = 3.
    pub fn unfold_cloth() -> Self {
        Self {
            mu: 3.0,
            ..Self::fold_cloth()
        }
    }

    /// fold_tshirt: N 180, stiffness 5000, damping 2, dt 5e-4, μ 0.9, with the T-shirt
    /// mask (180×180, row-major; DaXBench derives it from `others/t-shirt.jpg`).
    pub fn fold_tshirt(mask: Vec<bool>) -> Self {
        Self::daxbench(180, mask, 5000.0, 5e-4, 0.9)
    }

    /// Number of particles (true entries of the mask).
    pub fn n_particles(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        fn bad(name: &str, reason: &str) -> Result<()> {
            Err(Error::InvalidParameter {
                name: name.into(),
                reason: reason.into(),
            })
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if self.n < 2 {
            return bad("n", "the lattice needs at least 2×2 sites");
        }
        if self.mask.len() != self.n * self.n {
            return bad(
                "mask",
                &format!("length {} ≠ N² = {}", self.mask.len(), self.n * self.n),
            );
        }
        if self.n_particles() == 0 {
            return bad("mask", "empty: no site carries a particle");
        }
        for (name, x) in [
            ("spacing", self.spacing),
            ("dt", self.dt),
            ("max_v", self.max_v),
            ("gripper_radius", self.gripper_radius),
            ("action_clip", self.action_clip),
        ] {
            if !positive(x) {
                return bad(name, &format!("must be positive and finite, got {x}"));
            }
        }
        for (name, x) in [
            ("stiffness", self.stiffness),
            ("damping", self.damping),
            ("mu", self.mu),
            ("small_num", self.small_num),
            ("static_speed", self.static_speed),
        ] {
            if !non_negative(x) {
                return bad(name, &format!("must be non-negative and finite, got {x}"));
            }
        }
        if !self.gravity.is_finite() {
            return bad("gravity", "must be finite");
        }
        if self.substeps == 0 {
            return bad("substeps", "must be at least 1");
        }
        Ok(())
    }
}
