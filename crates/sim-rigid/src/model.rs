//! The immutable description of an articulation: links, joints, inertias.
//!
//! Models are built from a description (links with a joint and collision shapes) the way
//! dflex's `ModelBuilder` does it: mass and inertia come from the shapes at a density
//! (tasks.md §1.2), merged into the link with the parallel-axis theorem.

use crate::spatial::{quat_to_matrix, Transform, M3};
use diff_core::{Error, Result};

/// Joint types (dflex ids: PRISMATIC 0, REVOLUTE 1, BALL 2, FIXED 3, FREE 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JointKind {
    /// Translation along `axis` (one coordinate, one DOF).
    Prismatic,
    /// Rotation about `axis` (one coordinate, one DOF).
    Revolute,
    /// Spherical joint: coordinates are a quaternion `(x, y, z, w)` (child → joint frame),
    /// velocities the angular velocity expressed in the world frame axes through the joint
    /// frame (`S_k = X_sj·e_k`, dflex `jcalc_motion`). No limits, no limit damping
    /// (fidelity trap 7); stiffness acts on the quaternion's imaginary part.
    Ball,
    /// Rigid attachment (no DOF).
    Fixed,
    /// Floating base: coordinates `[p (3), quat (x, y, z, w)]`, velocities the world-frame
    /// spatial twist `[ω, v]` with `v` the velocity of the body point at the world origin
    /// (fidelity trap 13). Armature is always 0 (fidelity trap 5); no actuation.
    Free,
}

impl JointKind {
    /// Number of generalised coordinates.
    pub fn coord_count(self) -> usize {
        match self {
            JointKind::Prismatic | JointKind::Revolute => 1,
            JointKind::Ball => 4,
            JointKind::Fixed => 0,
            JointKind::Free => 7,
        }
    }
    /// Number of degrees of freedom (velocity coordinates).
    pub fn dof_count(self) -> usize {
        match self {
            JointKind::Prismatic | JointKind::Revolute => 1,
            JointKind::Ball => 3,
            JointKind::Fixed => 0,
            JointKind::Free => 6,
        }
    }
    /// Whether the joint has one coordinate and one DOF along an axis.
    pub fn is_1dof(self) -> bool {
        matches!(self, JointKind::Prismatic | JointKind::Revolute)
    }
}

/// A joint with dflex's per-joint parameters (tasks.md §1.3–1.4).
#[derive(Clone, Debug)]
pub struct Joint {
    /// Name, for errors and state layouts.
    pub name: String,
    pub kind: JointKind,
    /// Unit axis in the joint frame.
    pub axis: [f64; 3],
    /// Parent body frame → joint frame (`joint_X_pj`).
    pub x_pj: Transform<f64>,
    /// PD target (`joint_target`), in joint coordinates.
    pub target: f64,
    /// PD stiffness toward the target (`joint_target_ke`), N·m/rad or N/m.
    pub target_ke: f64,
    /// Joint damping (`joint_target_kd`), N·m·s/rad or N·s/m.
    pub target_kd: f64,
    /// Lower limit (`joint_limit_lower`).
    pub limit_lower: f64,
    /// Upper limit (`joint_limit_upper`).
    pub limit_upper: f64,
    /// Limit stiffness (`joint_limit_ke`).
    pub limit_ke: f64,
    /// Limit damping (`joint_limit_kd`), applied always (fidelity trap 6).
    pub limit_kd: f64,
    /// Armature added to the mass matrix diagonal (`joint_armature`).
    pub armature: f64,
    /// Saturation of the motor torque of a hinge or slider, N·m or N: the sum of the
    /// actuation and the PD terms, `act − ke·(q − target) − kd·q̇`, is clamped to
    /// ±`effort_limit` (a servo's current limit); limit forces are not. ∞ (default, as
    /// dflex, which has no such clamp) disables it. On saturation the derivative of the
    /// motor torque is zero, also on the tie |τ_motor| = limit.
    pub effort_limit: f64,
    /// How the motor torque meets `effort_limit`: a hard clamp (default) or a smooth
    /// `limit·tanh(τ/limit)`, whose derivative never vanishes.
    pub effort_saturation: EffortSaturation,
}

/// The shape of a joint motor's torque saturation (see [`Joint::effort_limit`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EffortSaturation {
    /// `clamp(τ, −limit, limit)`: exact below the limit, zero derivative above it, so a
    /// gradient-based policy gets no signal through a saturated motor.
    #[default]
    Clamp,
    /// `limit·tanh(τ/limit)`: slightly softer than the clamp below the limit (τ = limit/2
    /// gives 0.92·τ), with derivative sech²(τ/limit) > 0 everywhere.
    Tanh,
}

impl Joint {
    /// A joint with dflex's `add_link` defaults: armature 0.01, no stiffness or damping,
    /// limits ±1e3 with limit_ke 100 and limit_kd 10.
    pub fn new(name: &str, kind: JointKind, axis: [f64; 3], x_pj: Transform<f64>) -> Joint {
        Joint {
            name: name.to_string(),
            kind,
            axis,
            x_pj,
            target: 0.0,
            target_ke: 0.0,
            target_kd: 0.0,
            limit_lower: -1e3,
            limit_upper: 1e3,
            limit_ke: 100.0,
            limit_kd: 10.0,
            armature: 0.01,
            effort_limit: f64::INFINITY,
            effort_saturation: EffortSaturation::Clamp,
        }
    }
}

/// Collision geometry.
#[derive(Clone, Copy, Debug)]
pub enum Geometry {
    /// A box with the given half extents.
    Box { half_extents: [f64; 3] },
    /// A sphere.
    Sphere { radius: f64 },
    /// A capsule along its local x axis, with hemispherical caps at ±`half_width`.
    Capsule { radius: f64, half_width: f64 },
}

/// Ground-contact material of a shape (dflex `shape_materials`: ke, kd, kf, mu).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContactMaterial {
    /// Normal stiffness (N/m).
    pub ke: f64,
    /// Normal damping, scaled by the penetration depth (N·s/m²).
    pub kd: f64,
    /// Viscous friction coefficient (N·s/m).
    pub kf: f64,
    /// Coulomb coefficient applied to the elastic normal force only.
    pub mu: f64,
}

impl Default for ContactMaterial {
    /// dflex's shape defaults: ke 1e4, kd 1e4, kf 1e2, mu 0.25 (tasks.md §1.2).
    fn default() -> Self {
        ContactMaterial {
            ke: 1e4,
            kd: 1e4,
            kf: 1e2,
            mu: 0.25,
        }
    }
}

/// A collision shape attached to a link, whose volume gives the link its mass.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub geometry: Geometry,
    /// Pose in the link frame.
    pub pose: Transform<f64>,
    /// Density in kg/m³ (dflex default 1000).
    pub density: f64,
    /// Ground-contact material.
    pub material: ContactMaterial,
}

impl Shape {
    /// A shape at `pose` with dflex's defaults: density 1000, default material.
    pub fn new(geometry: Geometry, pose: Transform<f64>) -> Shape {
        Shape {
            geometry,
            pose,
            density: 1000.0,
            material: ContactMaterial::default(),
        }
    }
}

/// A ground-contact point fixed on a link (dflex `model.collide`, fidelity trap 10).
#[derive(Clone, Copy, Debug)]
pub struct ContactPoint {
    /// The link it belongs to.
    pub link: usize,
    /// Position in the link frame.
    pub point: [f64; 3],
    /// Shape thickness (radius for spheres and capsules, 0 for box corners): the point
    /// touches the ground when `y − thickness < 0`.
    pub thickness: f64,
    pub material: ContactMaterial,
}

/// A shape kept on the articulation for contacts and rendering.
#[derive(Clone, Copy, Debug)]
pub struct LinkShape {
    pub link: usize,
    pub shape: Shape,
}

/// Explicit mass properties of a link (URDF `<inertial>`), used instead of the shapes'.
#[derive(Clone, Copy, Debug)]
pub struct Inertial {
    pub mass: f64,
    /// COM in the link frame.
    pub com: [f64; 3],
    /// Inertia about the COM, in the link frame.
    pub inertia: M3<f64>,
}

/// How a shape's inertia is rotated into its link frame when merged (fidelity trap 27).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InertiaTransform {
    /// `R·I·Rᵀ`, the physically correct rotation.
    #[default]
    Exact,
    /// dflex's `transform_inertia`, which multiplies element-wise (`R * I * R.T` on numpy
    /// arrays): the result is the Hadamard product, which drops off-diagonal terms. The
    /// DiffRL presets use it so that our dynamics match the published results.
    DflexElementwise,
}

/// Mass and COM inertia of one shape (dflex `model.py` formulas).
pub fn shape_mass_inertia(g: &Geometry, density: f64) -> (f64, M3<f64>) {
    use std::f64::consts::PI;
    match *g {
        Geometry::Box {
            half_extents: [hx, hy, hz],
        } => {
            let m = density * 8.0 * hx * hy * hz;
            let d = [
                m / 3.0 * (hy * hy + hz * hz),
                m / 3.0 * (hx * hx + hz * hz),
                m / 3.0 * (hx * hx + hy * hy),
            ];
            (m, diag(d))
        }
        Geometry::Sphere { radius: r } => {
            let m = density * 4.0 / 3.0 * PI * r * r * r;
            let i = 0.4 * m * r * r;
            (m, diag([i, i, i]))
        }
        Geometry::Capsule {
            radius: r,
            half_width,
        } => {
            // ODE's capsule formula as dflex's `compute_capsule_inertia(density, r, 2·hw)`.
            let h = 2.0 * half_width;
            let ms = density * 4.0 / 3.0 * PI * r * r * r;
            let mc = density * PI * r * r * h;
            let ia = mc * (0.25 * r * r + h * h / 12.0)
                + ms * (0.4 * r * r + 0.375 * r * h + 0.25 * h * h);
            let ib = (mc * 0.5 + ms * 0.4) * r * r;
            (ms + mc, diag([ib, ia, ia]))
        }
    }
}

fn diag(d: [f64; 3]) -> M3<f64> {
    [[d[0], 0.0, 0.0], [0.0, d[1], 0.0], [0.0, 0.0, d[2]]]
}

/// dflex's `transform_inertia(m, I, p, R)`: rotate `I` and shift it by `p` (parallel axis).
fn transform_inertia(
    m: f64,
    i: &M3<f64>,
    p: [f64; 3],
    r: &M3<f64>,
    mode: InertiaTransform,
) -> M3<f64> {
    let mut out = [[0.0; 3]; 3];
    for a in 0..3 {
        for b in 0..3 {
            out[a][b] = match mode {
                InertiaTransform::Exact => (0..3)
                    .map(|k| (0..3).map(|l| r[a][k] * i[k][l] * r[b][l]).sum::<f64>())
                    .sum(),
                InertiaTransform::DflexElementwise => r[a][b] * i[a][b] * r[b][a],
            };
            let pp = p[0] * p[0] + p[1] * p[1] + p[2] * p[2];
            out[a][b] += m * (if a == b { pp } else { 0.0 } - p[a] * p[b]);
        }
    }
    out
}

/// One link of an articulation: its joint (to the parent) and its mass properties.
#[derive(Clone, Debug)]
pub struct Link {
    /// Parent link index (`None` for a root attached to the world).
    pub parent: Option<usize>,
    pub joint: Joint,
    /// Mass in kg.
    pub mass: f64,
    /// COM in the link frame.
    pub com: [f64; 3],
    /// Inertia about the COM in the link frame.
    pub inertia: M3<f64>,
    /// First coordinate index of the joint.
    pub q_start: usize,
    /// First DOF index of the joint.
    pub qd_start: usize,
}

/// A tree of links in topological order (every parent precedes its children).
#[derive(Clone, Debug)]
pub struct Articulation {
    pub links: Vec<Link>,
    /// Number of generalised coordinates.
    pub n_q: usize,
    /// Number of DOFs.
    pub n_qd: usize,
    /// Gravity (dflex: (0, −9.81, 0), Y up).
    pub gravity: [f64; 3],
    /// For each DOF, the link it moves.
    pub dof_link: Vec<usize>,
    /// For each DOF `e`, the DOFs `d ≤ e` whose link is an ancestor of (or equal to) the
    /// link of `e`: the non-zero pattern of row `e` of the mass matrix.
    pub dof_support: Vec<Vec<usize>>,
    /// All shapes, in the order they were added.
    pub shapes: Vec<LinkShape>,
    /// Ground-contact points (empty when the ground is disabled).
    pub contacts: Vec<ContactPoint>,
}

/// Builds an [`Articulation`] link by link.
#[derive(Clone, Debug)]
pub struct ArticulationBuilder {
    links: Vec<Link>,
    shapes: Vec<LinkShape>,
    extra_contacts: Vec<ContactPoint>,
    ground: bool,
    shape_contacts: bool,
    inertia_transform: InertiaTransform,
    gravity: [f64; 3],
}

impl Default for ArticulationBuilder {
    fn default() -> Self {
        Self::new(InertiaTransform::Exact)
    }
}

impl ArticulationBuilder {
    /// An empty builder with gravity (0, −9.81, 0).
    pub fn new(inertia_transform: InertiaTransform) -> Self {
        ArticulationBuilder {
            links: Vec::new(),
            shapes: Vec::new(),
            extra_contacts: Vec::new(),
            ground: true,
            shape_contacts: true,
            inertia_transform,
            gravity: [0.0, -9.81, 0.0],
        }
    }

    /// Enables or disables ground contact (dflex `model.ground`, on by default). With the
    /// ground on, every shape gets contact points at `build` time (spheres 1, capsules 2,
    /// boxes 8 corners).
    pub fn ground(mut self, on: bool) -> Self {
        self.ground = on;
        self
    }

    /// Sets whether ground contact is on (see [`ArticulationBuilder::ground`]).
    pub fn set_ground(&mut self, on: bool) {
        self.ground = on;
    }

    /// Whether shapes generate their own contact points at `build` (default true). Off,
    /// only the points given to [`ArticulationBuilder::add_contact_point`] touch the ground.
    pub fn set_shape_contacts(&mut self, on: bool) {
        self.shape_contacts = on;
    }

    /// The shapes added so far.
    pub fn shapes(&self) -> &[LinkShape] {
        &self.shapes
    }

    /// The links added so far.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Adds an explicit ground-contact point on `link` (used when the collision geometry is
    /// not made of primitives, e.g. Bruce's feet). Only active when the ground is on.
    pub fn add_contact_point(&mut self, c: ContactPoint) -> Result<()> {
        if c.link >= self.links.len() {
            return Err(Error::InvalidParameter {
                name: "contact point link".into(),
                reason: format!("link {} does not exist", c.link),
            });
        }
        self.extra_contacts.push(c);
        Ok(())
    }

    /// Attaches `shape` to an existing `link` without adding mass: drawn by the renderer,
    /// and a source of contact points only while shape contacts are on
    /// ([`ArticulationBuilder::set_shape_contacts`]).
    pub fn add_shape(&mut self, link: usize, shape: Shape) -> Result<()> {
        if link >= self.links.len() {
            return Err(Error::InvalidParameter {
                name: "shape link".into(),
                reason: format!("link {link} does not exist"),
            });
        }
        self.shapes.push(LinkShape { link, shape });
        Ok(())
    }

    /// Adds a link with explicit mass properties (URDF `<inertial>`); `shapes` are kept for
    /// contact and rendering but do not add mass.
    pub fn add_link_inertial(
        &mut self,
        parent: Option<usize>,
        joint: Joint,
        inertial: Inertial,
        shapes: &[Shape],
    ) -> Result<usize> {
        if !(inertial.mass >= 0.0 && inertial.mass.is_finite()) {
            return Err(Error::InvalidParameter {
                name: format!("link of joint `{}` mass", joint.name),
                reason: format!("must be finite and ≥ 0, is {}", inertial.mass),
            });
        }
        let idx = self.add_link(parent, joint, &[])?;
        let link = &mut self.links[idx];
        link.mass = inertial.mass;
        link.com = inertial.com;
        link.inertia = inertial.inertia;
        for s in shapes {
            self.shapes.push(LinkShape {
                link: idx,
                shape: *s,
            });
        }
        Ok(idx)
    }

    /// Sets gravity.
    pub fn gravity(mut self, g: [f64; 3]) -> Self {
        self.gravity = g;
        self
    }

    /// Adds a link attached by `joint` to `parent` (or the world), with mass from `shapes`.
    /// Returns its index.
    pub fn add_link(
        &mut self,
        parent: Option<usize>,
        joint: Joint,
        shapes: &[Shape],
    ) -> Result<usize> {
        let idx = self.links.len();
        if let Some(p) = parent {
            if p >= idx {
                return Err(Error::InvalidParameter {
                    name: format!("joint `{}` parent", joint.name),
                    reason: format!(
                        "parent link {p} does not exist yet (links are added parents first)"
                    ),
                });
            }
        }
        let mut joint = joint;
        if joint.kind == JointKind::Free {
            if parent.is_some() {
                return Err(Error::InvalidParameter {
                    name: format!("joint `{}`", joint.name),
                    reason: "a free joint must attach a root link to the world".into(),
                });
            }
            // dflex `add_link`: free joints never get armature (fidelity trap 5)
            joint.armature = 0.0;
        }
        let axis_norm = joint.axis.iter().map(|a| a * a).sum::<f64>().sqrt();
        if joint.kind.is_1dof() && (axis_norm - 1.0).abs() > 1e-9 {
            return Err(Error::InvalidParameter {
                name: format!("joint `{}` axis", joint.name),
                reason: format!("must be a unit vector, has norm {axis_norm}"),
            });
        }
        if joint.limit_lower > joint.limit_upper {
            return Err(Error::InvalidParameter {
                name: format!("joint `{}` limits", joint.name),
                reason: format!("lower {} > upper {}", joint.limit_lower, joint.limit_upper),
            });
        }
        let (q_start, qd_start) = self
            .links
            .last()
            .map(|l| {
                (
                    l.q_start + l.joint.kind.coord_count(),
                    l.qd_start + l.joint.kind.dof_count(),
                )
            })
            .unwrap_or((0, 0));
        let mut link = Link {
            parent,
            joint,
            mass: 0.0,
            com: [0.0; 3],
            inertia: [[0.0; 3]; 3],
            q_start,
            qd_start,
        };
        for s in shapes {
            self.merge_shape(&mut link, s);
            self.shapes.push(LinkShape {
                link: idx,
                shape: *s,
            });
        }
        self.links.push(link);
        Ok(idx)
    }

    /// dflex's `_update_body_mass`: merge a shape's mass into the link.
    fn merge_shape(&self, link: &mut Link, s: &Shape) {
        let (m, i) = shape_mass_inertia(&s.geometry, s.density);
        let new_mass = link.mass + m;
        if new_mass == 0.0 {
            return;
        }
        let p = s.pose.p;
        let mut new_com = [0.0; 3];
        for k in 0..3 {
            new_com[k] = (link.com[k] * link.mass + p[k] * m) / new_mass;
        }
        let com_offset = [
            new_com[0] - link.com[0],
            new_com[1] - link.com[1],
            new_com[2] - link.com[2],
        ];
        let shape_offset = [new_com[0] - p[0], new_com[1] - p[1], new_com[2] - p[2]];
        let ident = quat_to_matrix([0.0, 0.0, 0.0, 1.0]);
        let a = transform_inertia(
            link.mass,
            &link.inertia,
            com_offset,
            &ident,
            self.inertia_transform,
        );
        let b = transform_inertia(m, &i, shape_offset, &s.pose.r, self.inertia_transform);
        for r in 0..3 {
            for c in 0..3 {
                link.inertia[r][c] = a[r][c] + b[r][c];
            }
        }
        link.mass = new_mass;
        link.com = new_com;
    }

    /// Finalises the articulation.
    pub fn build(self) -> Result<Articulation> {
        let n_q = self.links.iter().map(|l| l.joint.kind.coord_count()).sum();
        let n_qd: usize = self.links.iter().map(|l| l.joint.kind.dof_count()).sum();
        let mut dof_link = Vec::with_capacity(n_qd);
        for (i, l) in self.links.iter().enumerate() {
            for _ in 0..l.joint.kind.dof_count() {
                dof_link.push(i);
            }
        }
        let mut dof_support = Vec::with_capacity(n_qd);
        for e in 0..n_qd {
            let mut support = Vec::new();
            let mut link = Some(dof_link[e]);
            while let Some(li) = link {
                let l = &self.links[li];
                for d in l.qd_start..l.qd_start + l.joint.kind.dof_count() {
                    if d <= e {
                        support.push(d);
                    }
                }
                link = l.parent;
            }
            support.sort_unstable();
            dof_support.push(support);
        }
        let mut contacts = Vec::new();
        if self.ground {
            if self.shape_contacts {
                for ls in &self.shapes {
                    shape_contacts(ls, &mut contacts);
                }
            }
            contacts.extend_from_slice(&self.extra_contacts);
        }
        Ok(Articulation {
            links: self.links,
            n_q,
            n_qd,
            gravity: self.gravity,
            dof_link,
            dof_support,
            shapes: self.shapes,
            contacts,
        })
    }
}

/// dflex `Model.collide`: the fixed contact points of a shape, in the link frame.
fn shape_contacts(ls: &LinkShape, out: &mut Vec<ContactPoint>) {
    let s = &ls.shape;
    let mut push = |local: [f64; 3], thickness: f64| {
        out.push(ContactPoint {
            link: ls.link,
            point: s.pose.point(local),
            thickness,
            material: s.material,
        })
    };
    match s.geometry {
        Geometry::Sphere { radius } => push([0.0; 3], radius),
        Geometry::Capsule { radius, half_width } => {
            push([-half_width, 0.0, 0.0], radius);
            push([half_width, 0.0, 0.0], radius);
        }
        Geometry::Box {
            half_extents: [x, y, z],
        } => {
            for &(sz, sy, sx) in &[
                (-1.0, -1.0, -1.0),
                (-1.0, -1.0, 1.0),
                (-1.0, 1.0, -1.0),
                (-1.0, 1.0, 1.0),
                (1.0, -1.0, -1.0),
                (1.0, -1.0, 1.0),
                (1.0, 1.0, -1.0),
                (1.0, 1.0, 1.0),
            ] {
                push([sx * x, sy * y, sz * z], 0.0);
            }
        }
    }
}
