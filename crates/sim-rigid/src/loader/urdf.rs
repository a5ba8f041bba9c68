//! URDF, read through `urdf-rs`, with dflex's `utils/load_utils.py:urdf_load` defaults
//! (tasks.md §1.2) and, by default, the file's `<inertial>` masses.
//!
//! - **Mass.** By default each link gets its URDF `<inertial>` (mass, COM `origin xyz`,
//!   full inertia tensor rotated by `origin rpy`). With [`UrdfOptions::ignore_inertial`]
//!   the loader does what dflex's `urdf_load` does (fidelity trap 3): `<inertial>` is
//!   ignored and the mass comes from the collision primitives at
//!   [`UrdfOptions::density`].
//! - **Collision shapes.** `box` (half extents = size/2), `sphere`, and `cylinder` as a
//!   **capsule** of the same radius and half-width length/2 (as dflex: the hemispherical
//!   caps add mass and contact points at the cylinder's end centres; the capsule axis is
//!   the cylinder's z, i.e. the shape is turned by +π/2 about y). `urdf-rs`'s
//!   non-standard `capsule` is read the same way. `mesh` collisions are skipped with a
//!   warning (dflex loads the mesh; we have no mesh shapes): give such links explicit
//!   contact points.
//! - **Joints.** `revolute` and `continuous` → [`JointKind::Revolute`], `prismatic`,
//!   `fixed`, `spherical` → [`JointKind::Ball`] (extension). A `floating` joint is only
//!   accepted from a root link called `world`, which is then the world frame: its child
//!   becomes a root link with a [`JointKind::Free`] joint. Without a `world` link the root
//!   link is fixed (joint frame [`UrdfOptions::root_x_pj`]) or, with
//!   [`UrdfOptions::floating`], attached by a free joint (dflex's `floating=True`); the
//!   loader names that joint `root`. `planar` is an error.
//! - **Joint parameters** (dflex defaults): armature 0.01, stiffness 0, damping from
//!   `<dynamics damping>` (else 0), limit_ke 100, limit_kd 1, limits from `<limit lower
//!   upper>` and ±1e3 for a bound that is absent. The joint frame is the `<origin>`
//!   (xyz, rpy as `Rz·Ry·Rx`), the axis `<axis xyz>` normalised (default (1, 0, 0)).
//! - **Keeping a subset of joints** ([`UrdfOptions::keep_joints`], e.g. Bruce's legs):
//!   every movable joint not listed is dropped; with [`DroppedJoints::Merge`] (default)
//!   the child link is welded to its parent at the joint's zero position (its inertial
//!   and shapes move onto the parent link, its children re-attach there), with
//!   [`DroppedJoints::Remove`] the child link and its whole subtree are deleted (a listed
//!   joint inside a removed subtree is an error). Fixed joints are always kept.
//! - **Link order** is the file's joint order, except that a joint whose parent link is
//!   not placed yet waits until it is (dflex would silently make it a root).
//!
//! Before `urdf-rs` sees the text, the loader checks it with `roxmltree` so that errors
//! name the element and line (`<joint name="hip_1"> (line 40): parent link "base" is not
//! defined`).

use super::{
    bad, compose, identity_transform, line_of, mat_mul, parse_num, parse_nums, read_text,
    rotate_inertia, rpy_matrix, xml_error, LoadedModel,
};
use crate::model::{
    ArticulationBuilder, ContactMaterial, Geometry, InertiaTransform, Inertial, Joint, JointKind,
    Shape,
};
use crate::spatial::{Transform, M3, V3};
use diff_core::{Error, Result};
use roxmltree::Node;
use std::collections::{HashMap, HashSet};
use std::f64::consts::PI;
use std::path::Path;

/// What happens to the movable joints left out of [`UrdfOptions::keep_joints`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DroppedJoints {
    /// Weld the child link to its parent at the joint's zero position (mass kept).
    #[default]
    Merge,
    /// Delete the child link and its subtree (mass removed).
    Remove,
}

/// Options of the URDF loader. Defaults: dflex's `urdf_load` joint and shape defaults,
/// but with the file's `<inertial>` masses and exact inertia rotation
/// ([`UrdfOptions::dflex`] gives dflex's behaviour).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct UrdfOptions {
    /// Ignore `<inertial>` and take the mass from the collision primitives, as dflex does
    /// (fidelity trap 3). Default false.
    pub ignore_inertial: bool,
    /// Density of the collision primitives when `ignore_inertial` (dflex 1000).
    pub density: f64,
    /// Attach the root link by a free joint (dflex `floating`; default false: fixed).
    pub floating: bool,
    /// Joint frame of the root link (dflex `xform` of a fixed base); default identity.
    #[serde(with = "super::opt_transform_serde")]
    pub root_x_pj: Option<Transform<f64>>,
    /// Armature of every movable joint (dflex `add_link` default 0.01).
    pub armature: f64,
    /// Stiffness toward the joint target (dflex: 0).
    pub stiffness: f64,
    /// Limit stiffness (dflex `urdf_load` default 100).
    pub limit_ke: f64,
    /// Limit damping (dflex `urdf_load` default 1), applied always (fidelity trap 6).
    pub limit_kd: f64,
    /// The bound used where `<limit>` gives none (dflex ±1e3).
    pub default_limit: f64,
    /// Ground-contact material of every shape (dflex: ke 1e4, kd 1e4, kf 1e2, mu 0.25).
    pub contact: ContactMaterial,
    /// How shape inertias are rotated into their link when the mass comes from shapes
    /// (default exact; dflex is element-wise, fidelity trap 27).
    pub inertia_transform: InertiaTransform,
    /// Whether ground contact is on (default true).
    pub ground: bool,
    /// The movable joints to keep (all when `None`).
    pub keep_joints: Option<Vec<String>>,
    /// What happens to the others.
    pub dropped_joints: DroppedJoints,
}

impl Default for UrdfOptions {
    fn default() -> Self {
        UrdfOptions {
            ignore_inertial: false,
            density: 1000.0,
            floating: false,
            root_x_pj: None,
            armature: 0.01,
            stiffness: 0.0,
            limit_ke: 100.0,
            limit_kd: 1.0,
            default_limit: 1e3,
            contact: ContactMaterial::default(),
            inertia_transform: InertiaTransform::Exact,
            ground: true,
            keep_joints: None,
            dropped_joints: DroppedJoints::Merge,
        }
    }
}

impl UrdfOptions {
    /// dflex's `urdf_load` exactly: `<inertial>` ignored, mass from collision shapes at
    /// density 1000, element-wise inertia rotation.
    pub fn dflex() -> Self {
        UrdfOptions {
            ignore_inertial: true,
            inertia_transform: InertiaTransform::DflexElementwise,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let fields = [
            ("density", self.density, true),
            ("armature", self.armature, false),
            ("stiffness", self.stiffness, false),
            ("limit_ke", self.limit_ke, false),
            ("limit_kd", self.limit_kd, false),
            ("default_limit", self.default_limit, false),
            ("contact.ke", self.contact.ke, false),
            ("contact.kd", self.contact.kd, false),
            ("contact.kf", self.contact.kf, false),
            ("contact.mu", self.contact.mu, false),
        ];
        for (name, v, strict) in fields {
            if !(v.is_finite() && (v > 0.0 || (!strict && v == 0.0))) {
                return Err(Error::InvalidParameter {
                    name: format!("UrdfOptions::{name}"),
                    reason: format!(
                        "must be finite and {} 0, is {v}",
                        if strict { ">" } else { "≥" }
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Reads a URDF file.
pub fn load_urdf(path: impl AsRef<Path>, opts: &UrdfOptions) -> Result<LoadedModel> {
    let path = path.as_ref();
    let text = read_text(path)?;
    parse_urdf_str(&text, &path.display().to_string(), opts)
}

/// What the roxmltree pass learnt about a joint.
struct JointInfo {
    element: String,
    has_lower: bool,
    has_upper: bool,
}

/// Parses URDF text; `path` is only used in messages and [`LoadedModel::source`].
pub fn parse_urdf_str(text: &str, path: &str, opts: &UrdfOptions) -> Result<LoadedModel> {
    opts.validate()?;
    let info = check(text, path)?;
    // The text is well-formed and checked; urdf-rs is still guarded so that no input can
    // make the loader panic.
    let robot = std::panic::catch_unwind(|| urdf_rs::read_from_string(text))
        .map_err(|_| bad(path, "<robot>", "urdf-rs panicked on this file"))?
        .map_err(|e| bad(path, "<robot>", format!("urdf-rs: {e}")))?;
    Planner::new(path, opts, &robot, &info)?.run()
}

// ---------------------------------------------------------------------------------------
// Validation pass (roxmltree): every attribute the loader uses, with element and line.

struct Checker<'a> {
    path: &'a str,
}

impl Checker<'_> {
    fn nums(&self, n: Node, key: &str, len: usize, elem: &str, required: bool) -> Result<()> {
        match n.attribute(key) {
            None if required => Err(bad(self.path, elem, format!("missing attribute `{key}`"))),
            None => Ok(()),
            Some(s) => {
                let v = parse_nums(s)
                    .map_err(|e| bad(self.path, elem, format!("attribute `{key}`: {e}")))?;
                if v.len() != len {
                    return Err(bad(
                        self.path,
                        elem,
                        format!("attribute `{key}` needs {len} number(s), has {}", v.len()),
                    ));
                }
                Ok(())
            }
        }
    }
    fn positive(&self, n: Node, key: &str, elem: &str) -> Result<()> {
        let s = n
            .attribute(key)
            .ok_or_else(|| bad(self.path, elem, format!("missing attribute `{key}`")))?;
        let v =
            parse_nums(s).map_err(|e| bad(self.path, elem, format!("attribute `{key}`: {e}")))?;
        if v.is_empty() || v.iter().any(|&x| x <= 0.0) {
            return Err(bad(
                self.path,
                elem,
                format!("attribute `{key}` must be positive, is `{s}`"),
            ));
        }
        Ok(())
    }
    fn origin(&self, parent: Node, elem: &str) -> Result<()> {
        for o in children(parent, "origin") {
            let e = format!("{elem} > <origin> (line {})", line_of(o));
            self.nums(o, "xyz", 3, &e, false)?;
            self.nums(o, "rpy", 3, &e, false)?;
        }
        Ok(())
    }
}

fn children<'a, 'i>(node: Node<'a, 'i>, tag: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == tag)
}

/// Checks the file and returns, per joint name, what the planner needs beyond urdf-rs.
fn check(text: &str, path: &str) -> Result<HashMap<String, JointInfo>> {
    let doc = roxmltree::Document::parse(text).map_err(|e| xml_error(path, e))?;
    let root = doc.root_element();
    if root.tag_name().name() != "robot" {
        return Err(bad(
            path,
            format!("<{}> (line {})", root.tag_name().name(), line_of(root)),
            "the root element must be <robot>",
        ));
    }
    let c = Checker { path };
    let mut links = HashSet::new();
    for l in children(root, "link") {
        let name = l.attribute("name").ok_or_else(|| {
            bad(
                path,
                format!("<link> (line {})", line_of(l)),
                "missing attribute `name`",
            )
        })?;
        let elem = format!("<link name=\"{name}\"> (line {})", line_of(l));
        if !links.insert(name.to_string()) {
            return Err(bad(path, &elem, "a link with this name is already defined"));
        }
        for inr in children(l, "inertial") {
            let e = format!("{elem} > <inertial>");
            c.origin(inr, &e)?;
            let m = children(inr, "mass")
                .next()
                .ok_or_else(|| bad(path, &e, "missing <mass>"))?;
            c.nums(m, "value", 1, &format!("{e} > <mass>"), true)?;
            let mv = m
                .attribute("value")
                .and_then(|s| parse_num(s).ok())
                .unwrap_or(0.0);
            if mv < 0.0 {
                return Err(bad(
                    path,
                    format!("{e} > <mass>"),
                    format!("negative mass {mv}"),
                ));
            }
            let i = children(inr, "inertia")
                .next()
                .ok_or_else(|| bad(path, &e, "missing <inertia>"))?;
            for k in ["ixx", "ixy", "ixz", "iyy", "iyz", "izz"] {
                c.nums(i, k, 1, &format!("{e} > <inertia>"), true)?;
            }
        }
        for (k, col) in children(l, "collision").enumerate() {
            let e = format!("{elem} > <collision> #{} (line {})", k + 1, line_of(col));
            c.origin(col, &e)?;
            let g = children(col, "geometry")
                .next()
                .ok_or_else(|| bad(path, &e, "missing <geometry>"))?;
            let shape = g
                .children()
                .find(|n| n.is_element())
                .ok_or_else(|| bad(path, &e, "empty <geometry>"))?;
            let se = format!("{e} > <{}>", shape.tag_name().name());
            match shape.tag_name().name() {
                "box" => {
                    c.nums(shape, "size", 3, &se, true)?;
                    c.positive(shape, "size", &se)?;
                }
                "sphere" => c.positive(shape, "radius", &se)?,
                "cylinder" | "capsule" => {
                    c.positive(shape, "radius", &se)?;
                    c.positive(shape, "length", &se)?;
                }
                "mesh" => {
                    if shape.attribute("filename").is_none() {
                        return Err(bad(path, &se, "missing attribute `filename`"));
                    }
                }
                other => {
                    return Err(bad(
                        path,
                        &e,
                        format!(
                            "unsupported geometry <{other}> (expected box, sphere, cylinder, \
                             capsule or mesh)"
                        ),
                    ))
                }
            }
        }
    }
    let mut joints = HashMap::new();
    let mut children_seen: HashMap<String, String> = HashMap::new();
    for j in children(root, "joint") {
        let name = j.attribute("name").ok_or_else(|| {
            bad(
                path,
                format!("<joint> (line {})", line_of(j)),
                "missing attribute `name`",
            )
        })?;
        let elem = format!("<joint name=\"{name}\"> (line {})", line_of(j));
        let ty = j
            .attribute("type")
            .ok_or_else(|| bad(path, &elem, "missing attribute `type`"))?;
        match ty {
            "revolute" | "continuous" | "prismatic" | "fixed" | "floating" | "spherical" => {}
            "planar" => return Err(bad(path, &elem, "unsupported joint type `planar`")),
            other => return Err(bad(path, &elem, format!("unknown joint type `{other}`"))),
        }
        let link_of = |tag: &str| -> Result<String> {
            let n = children(j, tag)
                .next()
                .ok_or_else(|| bad(path, &elem, format!("missing <{tag}>")))?;
            let l = n.attribute("link").ok_or_else(|| {
                bad(
                    path,
                    format!("{elem} > <{tag}>"),
                    "missing attribute `link`",
                )
            })?;
            if !links.contains(l) {
                return Err(bad(
                    path,
                    &elem,
                    format!("{tag} link \"{l}\" is not defined"),
                ));
            }
            Ok(l.to_string())
        };
        let parent = link_of("parent")?;
        let child = link_of("child")?;
        if parent == child {
            return Err(bad(
                path,
                &elem,
                format!("link \"{child}\" is its own parent"),
            ));
        }
        if let Some(other) = children_seen.insert(child.clone(), name.to_string()) {
            return Err(bad(
                path,
                &elem,
                format!("link \"{child}\" is already the child of joint \"{other}\""),
            ));
        }
        c.origin(j, &elem)?;
        for a in children(j, "axis") {
            c.nums(a, "xyz", 3, &format!("{elem} > <axis>"), true)?;
        }
        let mut has = (false, false);
        for lim in children(j, "limit") {
            let e = format!("{elem} > <limit>");
            for k in ["lower", "upper", "effort"] {
                c.nums(lim, k, 1, &e, false)?;
            }
            // URDF (and urdf-rs) require `velocity` on <limit>
            c.nums(lim, "velocity", 1, &e, true)?;
            has = (
                lim.attribute("lower").is_some(),
                lim.attribute("upper").is_some(),
            );
        }
        for d in children(j, "dynamics") {
            for k in ["damping", "friction"] {
                c.nums(d, k, 1, &format!("{elem} > <dynamics>"), false)?;
            }
        }
        if joints
            .insert(
                name.to_string(),
                JointInfo {
                    element: elem.clone(),
                    has_lower: has.0,
                    has_upper: has.1,
                },
            )
            .is_some()
        {
            return Err(bad(
                path,
                &elem,
                "a joint with this name is already defined",
            ));
        }
    }
    Ok(joints)
}

// ---------------------------------------------------------------------------------------
// Planning: links with accumulated mass and shapes, then the builder.

struct Planned {
    parent: Option<usize>,
    joint: Joint,
    body: String,
    element: String,
    mass: f64,
    com: V3<f64>,
    inertia: M3<f64>,
    shapes: Vec<Shape>,
}

#[derive(Clone)]
enum Frame {
    /// The URDF link's frame is `t` in planned link `idx` (`None`: the world).
    At {
        idx: Option<usize>,
        t: Transform<f64>,
    },
    /// Deleted with a dropped joint.
    Removed,
}

struct Planner<'a> {
    path: &'a str,
    opts: &'a UrdfOptions,
    robot: &'a urdf_rs::Robot,
    info: &'a HashMap<String, JointInfo>,
    links: HashMap<&'a str, &'a urdf_rs::Link>,
    planned: Vec<Planned>,
    frames: HashMap<String, Frame>,
    warnings: Vec<String>,
}

fn pose(p: &urdf_rs::Pose) -> Transform<f64> {
    Transform {
        p: *p.xyz,
        r: rpy_matrix(*p.rpy),
    }
}

impl<'a> Planner<'a> {
    fn new(
        path: &'a str,
        opts: &'a UrdfOptions,
        robot: &'a urdf_rs::Robot,
        info: &'a HashMap<String, JointInfo>,
    ) -> Result<Self> {
        let links = robot.links.iter().map(|l| (l.name.as_str(), l)).collect();
        Ok(Planner {
            path,
            opts,
            robot,
            info,
            links,
            planned: Vec::new(),
            frames: HashMap::new(),
            warnings: Vec::new(),
        })
    }

    fn joint_elem(&self, name: &str) -> String {
        self.info
            .get(name)
            .map(|i| i.element.clone())
            .unwrap_or_else(|| format!("<joint name=\"{name}\">"))
    }

    fn run(mut self) -> Result<LoadedModel> {
        let opts = self.opts;
        let movable = |t: &urdf_rs::JointType| {
            matches!(
                t,
                urdf_rs::JointType::Revolute
                    | urdf_rs::JointType::Continuous
                    | urdf_rs::JointType::Prismatic
                    | urdf_rs::JointType::Spherical
            )
        };
        if let Some(keep) = &opts.keep_joints {
            for k in keep {
                let ok = self
                    .robot
                    .joints
                    .iter()
                    .any(|j| &j.name == k && movable(&j.joint_type));
                if !ok {
                    return Err(Error::InvalidParameter {
                        name: "UrdfOptions::keep_joints".into(),
                        reason: format!("`{k}` is not a movable joint of {}", self.path),
                    });
                }
            }
        }

        // ---- the root link
        let children: HashSet<&str> = self
            .robot
            .joints
            .iter()
            .map(|j| j.child.link.as_str())
            .collect();
        let roots: Vec<&str> = self
            .robot
            .links
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| !children.contains(n))
            .collect();
        let root = match roots.as_slice() {
            [r] => *r,
            [] => {
                return Err(bad(
                    self.path,
                    "<robot>",
                    if self.robot.links.is_empty() {
                        "no <link>".to_string()
                    } else {
                        "every link is the child of a joint: the joints form a cycle".to_string()
                    },
                ))
            }
            many => {
                return Err(bad(
                    self.path,
                    "<robot>",
                    format!(
                        "several root links ({}): the file must describe one tree",
                        many.join(", ")
                    ),
                ))
            }
        };
        let root_link = self.links[root];
        let is_world = root == "world";
        if is_world {
            if opts.floating {
                return Err(Error::InvalidParameter {
                    name: "UrdfOptions::floating".into(),
                    reason: format!(
                        "{} has a `world` root link; attach the base with a floating joint \
                         in the file or remove the world link",
                        self.path
                    ),
                });
            }
            if root_link.inertial.mass.value != 0.0 || !root_link.collision.is_empty() {
                return Err(bad(
                    self.path,
                    "<link name=\"world\">",
                    "the world link must have no mass and no collision",
                ));
            }
            self.frames.insert(
                root.to_string(),
                Frame::At {
                    idx: None,
                    t: opts.root_x_pj.unwrap_or_else(identity_transform),
                },
            );
        } else {
            let kind = if opts.floating {
                JointKind::Free
            } else {
                JointKind::Fixed
            };
            let x = opts.root_x_pj.unwrap_or_else(identity_transform);
            let mut j = Joint::new("root", kind, [1.0, 0.0, 0.0], x);
            self.common(&mut j);
            self.push_link(None, j, root, format!("<link name=\"{root}\">"));
            let idx = self.planned.len() - 1;
            self.add_content(idx, root_link, &identity_transform())?;
            self.frames.insert(
                root.to_string(),
                Frame::At {
                    idx: Some(idx),
                    t: identity_transform(),
                },
            );
        }

        // ---- joints in file order, each once its parent link is placed
        let mut pending: Vec<&urdf_rs::Joint> = self.robot.joints.iter().collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut rest = Vec::new();
            for j in pending {
                match self.frames.get(&j.parent.link).cloned() {
                    None => rest.push(j),
                    Some(f) => self.joint(j, f)?,
                }
            }
            if rest.len() == before {
                let j = rest[0];
                return Err(bad(
                    self.path,
                    self.joint_elem(&j.name),
                    format!(
                        "parent link \"{}\" is not connected to the root link \"{root}\"",
                        j.parent.link
                    ),
                ));
            }
            pending = rest;
        }

        // ---- the builder
        let mut builder = ArticulationBuilder::new(opts.inertia_transform).ground(opts.ground);
        let mut joint_names = Vec::new();
        let mut body_names = Vec::new();
        for p in self.planned {
            let name = p.joint.name.clone();
            let r = if opts.ignore_inertial {
                builder.add_link(p.parent, p.joint, &p.shapes)
            } else {
                builder.add_link_inertial(
                    p.parent,
                    p.joint,
                    Inertial {
                        mass: p.mass,
                        com: p.com,
                        inertia: p.inertia,
                    },
                    &p.shapes,
                )
            };
            r.map_err(|e| bad(self.path, &p.element, e))?;
            joint_names.push(name);
            body_names.push(p.body);
        }
        Ok(LoadedModel {
            builder,
            joint_names,
            body_names,
            warnings: self.warnings,
            source: self.path.to_string(),
        })
    }

    fn common(&self, j: &mut Joint) {
        let o = self.opts;
        j.armature = o.armature;
        j.target_ke = o.stiffness;
        j.target_kd = 0.0;
        j.limit_ke = o.limit_ke;
        j.limit_kd = o.limit_kd;
        j.limit_lower = -o.default_limit;
        j.limit_upper = o.default_limit;
    }

    fn push_link(&mut self, parent: Option<usize>, joint: Joint, body: &str, element: String) {
        self.planned.push(Planned {
            parent,
            joint,
            body: body.to_string(),
            element,
            mass: 0.0,
            com: [0.0; 3],
            inertia: [[0.0; 3]; 3],
            shapes: Vec::new(),
        });
    }

    /// One joint whose parent link is placed at `pf`.
    fn joint(&mut self, j: &'a urdf_rs::Joint, pf: Frame) -> Result<()> {
        use urdf_rs::JointType as T;
        let elem = self.joint_elem(&j.name);
        let child = self.links[j.child.link.as_str()];
        let (pidx, pt) = match pf {
            Frame::Removed => {
                if self.kept_explicitly(&j.name) {
                    return Err(bad(
                        self.path,
                        &elem,
                        "listed in keep_joints but below a removed joint",
                    ));
                }
                self.frames.insert(j.child.link.clone(), Frame::Removed);
                return Ok(());
            }
            Frame::At { idx, t } => (idx, t),
        };
        let movable = matches!(
            j.joint_type,
            T::Revolute | T::Continuous | T::Prismatic | T::Spherical
        );
        let x = compose(&pt, &pose(&j.origin));
        let dropped = movable
            && self
                .opts
                .keep_joints
                .as_ref()
                .is_some_and(|k| !k.contains(&j.name));
        if dropped {
            match (self.opts.dropped_joints, pidx) {
                (DroppedJoints::Remove, _) => {
                    self.frames.insert(j.child.link.clone(), Frame::Removed);
                }
                (DroppedJoints::Merge, Some(p)) => {
                    self.add_content(p, child, &x)?;
                    self.frames
                        .insert(j.child.link.clone(), Frame::At { idx: Some(p), t: x });
                }
                (DroppedJoints::Merge, None) => {
                    return Err(bad(
                        self.path,
                        &elem,
                        "cannot weld a link to the world: keep this joint",
                    ))
                }
            }
            return Ok(());
        }
        let kind = match j.joint_type {
            T::Revolute | T::Continuous => JointKind::Revolute,
            T::Prismatic => JointKind::Prismatic,
            T::Fixed => JointKind::Fixed,
            T::Spherical => JointKind::Ball,
            T::Floating => {
                if pidx.is_some() {
                    return Err(bad(
                        self.path,
                        &elem,
                        "a floating joint must attach a link to the root link `world`",
                    ));
                }
                JointKind::Free
            }
            T::Planar => return Err(bad(self.path, &elem, "unsupported joint type `planar`")),
        };
        let a = *j.axis.xyz;
        let n = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
        let axis = if n > 1e-12 {
            a.map(|v| v / n)
        } else if kind.is_1dof() {
            return Err(bad(self.path, &elem, "<axis> is the zero vector"));
        } else {
            [1.0, 0.0, 0.0]
        };
        let mut joint = Joint::new(&j.name, kind, axis, x);
        self.common(&mut joint);
        if let Some(info) = self.info.get(&j.name) {
            if info.has_lower {
                joint.limit_lower = j.limit.lower;
            }
            if info.has_upper {
                joint.limit_upper = j.limit.upper;
            }
        }
        if joint.limit_lower > joint.limit_upper {
            return Err(bad(
                self.path,
                &elem,
                format!(
                    "<limit>: lower {} > upper {}",
                    joint.limit_lower, joint.limit_upper
                ),
            ));
        }
        if let Some(d) = &j.dynamics {
            if d.damping < 0.0 {
                return Err(bad(
                    self.path,
                    &elem,
                    format!("negative damping {}", d.damping),
                ));
            }
            joint.target_kd = d.damping;
        }
        self.push_link(pidx, joint, &j.child.link, elem);
        let idx = self.planned.len() - 1;
        self.add_content(idx, child, &identity_transform())?;
        self.frames.insert(
            j.child.link.clone(),
            Frame::At {
                idx: Some(idx),
                t: identity_transform(),
            },
        );
        Ok(())
    }

    fn kept_explicitly(&self, name: &str) -> bool {
        self.opts
            .keep_joints
            .as_ref()
            .is_some_and(|k| k.iter().any(|n| n == name))
    }

    /// Adds a URDF link's inertial and collision shapes to planned link `idx`, the URDF
    /// link's frame being `t` in that link's frame.
    fn add_content(&mut self, idx: usize, link: &urdf_rs::Link, t: &Transform<f64>) -> Result<()> {
        // inertial (exact: R·I·Rᵀ and the parallel-axis theorem)
        let inr = &link.inertial;
        let m2 = inr.mass.value;
        if m2 > 0.0 {
            let i = &inr.inertia;
            let i_local = [
                [i.ixx, i.ixy, i.ixz],
                [i.ixy, i.iyy, i.iyz],
                [i.ixz, i.iyz, i.izz],
            ];
            let o = pose(&inr.origin);
            let frame = compose(t, &o);
            let i2 = rotate_inertia(&frame.r, &i_local);
            let c2 = frame.p;
            let p = &mut self.planned[idx];
            let (m1, c1, i1) = (p.mass, p.com, p.inertia);
            let m = m1 + m2;
            let c = [0, 1, 2].map(|k| (m1 * c1[k] + m2 * c2[k]) / m);
            let mut out = [[0.0; 3]; 3];
            for (mi, ci, ii) in [(m1, c1, i1), (m2, c2, i2)] {
                let d = [ci[0] - c[0], ci[1] - c[1], ci[2] - c[2]];
                let dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                for r in 0..3 {
                    for s in 0..3 {
                        let delta = if r == s { 1.0 } else { 0.0 };
                        out[r][s] += ii[r][s] + mi * (dd * delta - d[r] * d[s]);
                    }
                }
            }
            p.mass = m;
            p.com = c;
            p.inertia = out;
        }
        // collision primitives
        for (k, col) in link.collision.iter().enumerate() {
            let elem = format!("<link name=\"{}\"> > <collision> #{}", link.name, k + 1);
            let o = pose(&col.origin);
            let (geometry, r) = match &col.geometry {
                urdf_rs::Geometry::Box { size } => (
                    Geometry::Box {
                        half_extents: size.map(|s| 0.5 * s),
                    },
                    o.r,
                ),
                urdf_rs::Geometry::Sphere { radius } => (Geometry::Sphere { radius: *radius }, o.r),
                // dflex: a cylinder becomes a capsule along its z: rot · rot(y, +π/2)
                urdf_rs::Geometry::Cylinder { radius, length }
                | urdf_rs::Geometry::Capsule { radius, length } => (
                    Geometry::Capsule {
                        radius: *radius,
                        half_width: 0.5 * length,
                    },
                    mat_mul(&o.r, &crate::spatial::axis_angle([0.0, 1.0, 0.0], PI / 2.0)),
                ),
                urdf_rs::Geometry::Mesh { filename, .. } => {
                    self.warnings.push(format!(
                        "{}: {elem}: mesh `{filename}` skipped (no mesh shapes); add contact \
                         points for this link if it touches the ground",
                        self.path
                    ));
                    continue;
                }
            };
            let mut s = Shape::new(geometry, compose(t, &Transform { p: o.p, r }));
            s.density = self.opts.density;
            s.material = self.opts.contact;
            self.planned[idx].shapes.push(s);
        }
        Ok(())
    }
}
