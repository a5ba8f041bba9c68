//! Model-file loaders: an MJCF subset read with dflex's `parse_mjcf` conventions
//! ([`mjcf`], tasks.md §1.2) and URDF through `urdf-rs` ([`urdf`]).
//!
//! Both return a [`LoadedModel`]: the [`ArticulationBuilder`] filled with the file's links,
//! joints and shapes, plus the names needed to address them. A task can still add contact
//! points ([`ArticulationBuilder::add_contact_point`]) or change joint parameters before
//! calling [`LoadedModel::build`].
//!
//! Every problem with a file (XML syntax, a missing or malformed attribute, an unsupported
//! element, a broken tree) is returned as [`diff_core::Error::BadFile`], whose message
//! names the file, the element (e.g. `body "torso" > geom #2 (line 14)`) and the reason.
//! No input makes the loaders panic.
//!
//! The robot files the project ships are in `datasets/robots/` ([`robot_path`]).
//!
//! ```no_run
//! use sim_rigid::loader::{load_mjcf, robot_path, MjcfOptions};
//! let model = load_mjcf(robot_path("ant.xml"), &MjcfOptions::diffrl_ant())?;
//! let hip = model.link_index("hip_1").unwrap();
//! let art = model.build()?;
//! # let _ = (hip, art);
//! # Ok::<(), diff_core::Error>(())
//! ```

pub mod mjcf;
pub mod urdf;

pub use mjcf::{load_mjcf, parse_mjcf_str, MjcfOptions};
pub use urdf::{load_urdf, parse_urdf_str, DroppedJoints, UrdfOptions};

use crate::model::{Articulation, ArticulationBuilder, JointKind, Link};
use crate::spatial::{Transform, M3, V3};
use diff_core::{Error, Result};
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// A model read from a file, not yet finalised.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// The links, joints and shapes of the file. Ground contact follows the loader option;
    /// extra contact points may still be added.
    pub builder: ArticulationBuilder,
    /// The joint name of every link, in link order (MJCF `<joint name>`, URDF
    /// `<joint name>`; a URDF floating base added by the loader is called `root`).
    pub joint_names: Vec<String>,
    /// The body (MJCF `<body name>`, URDF `<link name>`) each link belongs to, in link
    /// order. The massless chain links of a multi-joint MJCF body carry that body's name.
    pub body_names: Vec<String>,
    /// Things the loader skipped that a user may want to know about (e.g. URDF mesh
    /// collisions, MJCF `<freejoint>`).
    pub warnings: Vec<String>,
    /// The file the model was read from (as given to the loader).
    pub source: String,
}

impl LoadedModel {
    /// The links added so far.
    pub fn links(&self) -> &[Link] {
        self.builder.links()
    }
    /// Index of the link moved by the joint `name`.
    pub fn link_index(&self, joint_name: &str) -> Option<usize> {
        self.joint_names.iter().position(|n| n == joint_name)
    }
    /// Index of the last link of body `name` (the one carrying its shapes).
    pub fn body_link(&self, body_name: &str) -> Option<usize> {
        self.body_names.iter().rposition(|n| n == body_name)
    }
    /// First coordinate index of joint `name`.
    pub fn q_start(&self, joint_name: &str) -> Option<usize> {
        self.link_index(joint_name).map(|i| self.links()[i].q_start)
    }
    /// First DOF index of joint `name`.
    pub fn qd_start(&self, joint_name: &str) -> Option<usize> {
        self.link_index(joint_name)
            .map(|i| self.links()[i].qd_start)
    }
    /// Number of generalised coordinates.
    pub fn n_q(&self) -> usize {
        self.links()
            .iter()
            .map(|l| l.joint.kind.coord_count())
            .sum()
    }
    /// Number of DOFs.
    pub fn n_qd(&self) -> usize {
        self.links().iter().map(|l| l.joint.kind.dof_count()).sum()
    }
    /// Joint coordinates at rest: 0 for 1-DOF joints, the identity quaternion
    /// `(0, 0, 0, 1)` for ball joints and free joints (position 0), as dflex's `add_link`.
    pub fn default_q(&self) -> Vec<f64> {
        let mut q = Vec::with_capacity(self.n_q());
        for l in self.links() {
            match l.joint.kind {
                JointKind::Prismatic | JointKind::Revolute => q.push(0.0),
                JointKind::Fixed => {}
                JointKind::Ball => q.extend_from_slice(&[0.0, 0.0, 0.0, 1.0]),
                JointKind::Free => q.extend_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
            }
        }
        q
    }
    /// Finalises the articulation (contact points from the shapes when the ground is on).
    pub fn build(self) -> Result<Articulation> {
        self.builder.build()
    }
}

/// `datasets/robots/` of this workspace (the robot files the project ships).
///
/// `MBMIX_ROBOTS_DIR` overrides it (for a binary run away from its source tree, e.g. on
/// another machine); otherwise it is the workspace's `datasets/robots/`.
pub fn robots_dir() -> PathBuf {
    match std::env::var_os("MBMIX_ROBOTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/robots"),
    }
}

/// The path of a robot file shipped in `datasets/robots/`, e.g. `robot_path("ant.xml")`.
pub fn robot_path(file: &str) -> PathBuf {
    robots_dir().join(file)
}

/// A [`Error::BadFile`] whose reason starts with the element it is about.
pub(crate) fn bad(path: &str, element: impl Display, reason: impl Display) -> Error {
    Error::BadFile {
        path: path.to_string(),
        reason: format!("{element}: {reason}"),
    }
}

/// Reads a whole file, mapping I/O failures to [`Error::BadFile`].
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        bad(
            &path.display().to_string(),
            "file",
            format!("cannot read: {e}"),
        )
    })
}

/// Parses a finite number.
pub(crate) fn parse_num(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{t}` is not a finite number")),
        Err(_) => Err(format!("`{t}` is not a number")),
    }
}

/// Parses a whitespace-separated list of finite numbers.
pub(crate) fn parse_nums(s: &str) -> std::result::Result<Vec<f64>, String> {
    s.split_whitespace().map(parse_num).collect()
}

/// Line (1-based) of a node in its document, for messages.
pub(crate) fn line_of(node: roxmltree::Node<'_, '_>) -> u32 {
    node.document().text_pos_at(node.range().start).row
}

/// Maps a roxmltree syntax error to [`Error::BadFile`].
pub(crate) fn xml_error(path: &str, e: roxmltree::Error) -> Error {
    let pos = e.pos();
    bad(
        path,
        format!("XML at line {}, column {}", pos.row, pos.col),
        format!("malformed XML: {e}"),
    )
}

// ---- small f64 helpers (kept local so the loaders only need `Transform` from `spatial`)

pub(crate) const IDENTITY: M3<f64> = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

pub(crate) fn identity_transform() -> Transform<f64> {
    Transform {
        p: [0.0; 3],
        r: IDENTITY,
    }
}

pub(crate) fn mat_mul(a: &M3<f64>, b: &M3<f64>) -> M3<f64> {
    let mut c = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

pub(crate) fn transpose(a: &M3<f64>) -> M3<f64> {
    let mut t = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            t[i][j] = a[j][i];
        }
    }
    t
}

pub(crate) fn mat_vec(a: &M3<f64>, x: V3<f64>) -> V3<f64> {
    [0, 1, 2].map(|i| a[i][0] * x[0] + a[i][1] * x[1] + a[i][2] * x[2])
}

/// `a ∘ b`: first `b`, then `a`.
pub(crate) fn compose(a: &Transform<f64>, b: &Transform<f64>) -> Transform<f64> {
    let p = mat_vec(&a.r, b.p);
    Transform {
        p: [a.p[0] + p[0], a.p[1] + p[1], a.p[2] + p[2]],
        r: mat_mul(&a.r, &b.r),
    }
}

/// `R·I·Rᵀ`.
pub(crate) fn rotate_inertia(r: &M3<f64>, i: &M3<f64>) -> M3<f64> {
    mat_mul(&mat_mul(r, i), &transpose(r))
}

/// Rotation matrix of a unit quaternion `(x, y, z, w)` (normalised here).
pub(crate) fn quat_matrix(q: [f64; 4]) -> Option<M3<f64>> {
    let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n <= 1e-12 {
        return None;
    }
    Some(crate::spatial::quat_to_matrix(q.map(|v| v / n)))
}

/// Rotation by `angle` about `axis` (normalised here; `None` for a zero axis).
pub(crate) fn axis_angle_matrix(axis: V3<f64>, angle: f64) -> Option<M3<f64>> {
    let n = axis.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n <= 1e-12 {
        return None;
    }
    Some(crate::spatial::axis_angle(axis.map(|v| v / n), angle))
}

/// URDF/ROS fixed-axis roll-pitch-yaw: `R = Rz(yaw)·Ry(pitch)·Rx(roll)`.
pub(crate) fn rpy_matrix(rpy: V3<f64>) -> M3<f64> {
    let (sr, cr) = rpy[0].sin_cos();
    let (sp, cp) = rpy[1].sin_cos();
    let (sy, cy) = rpy[2].sin_cos();
    [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
}

/// Serde for `Option<Transform<f64>>` as `{ p = [x, y, z], r = [[..], [..], [..]] }`.
pub(crate) mod opt_transform_serde {
    use crate::spatial::Transform;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Repr {
        p: [f64; 3],
        r: [[f64; 3]; 3],
    }

    pub fn serialize<S: Serializer>(
        t: &Option<Transform<f64>>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        t.as_ref().map(|t| Repr { p: t.p, r: t.r }).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Transform<f64>>, D::Error> {
        Ok(Option::<Repr>::deserialize(d)?.map(|r| Transform { p: r.p, r: r.r }))
    }
}

/// The frame of a segment `from → to` for a capsule along its local x axis: half its
/// length, its midpoint and the rotation taking local x onto the segment direction, built
/// as dflex does for MJCF `fromto` (tasks.md §1.2 quirk 4: `quat_from_axis_angle(d × x,
/// −acos(d·x))`); a segment along −x, where dflex would build a zero quaternion, gets a
/// half turn about z. `None` for a zero-length segment.
pub fn segment_frame(from: V3<f64>, to: V3<f64>) -> Option<(f64, V3<f64>, M3<f64>)> {
    let d = [to[0] - from[0], to[1] - from[1], to[2] - from[2]];
    let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    if len <= 1e-12 {
        return None;
    }
    let dir = d.map(|v| v / len);
    let angle = dir[0].clamp(-1.0, 1.0).acos();
    let axis = [0.0, dir[2], -dir[1]]; // dir × x
    let rot = axis_angle_matrix(axis, -angle).unwrap_or(if dir[0] > 0.0 {
        IDENTITY
    } else {
        crate::spatial::axis_angle([0.0, 0.0, 1.0], std::f64::consts::PI)
    });
    let mid = [
        0.5 * (from[0] + to[0]),
        0.5 * (from[1] + to[1]),
        0.5 * (from[2] + to[2]),
    ];
    Some((0.5 * len, mid, rot))
}
