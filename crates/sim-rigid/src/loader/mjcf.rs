//! MJCF subset, read the way dflex's `utils/load_utils.py:parse_mjcf` reads it
//! (tasks.md §1.2), quirks included so that models match the DiffRL suite.
//!
//! What is read, per `<worldbody>` body tree:
//! - `<body pos>` (and `name`, for messages); `quat` is **ignored** (fidelity trap 2);
//! - `<joint name type axis pos range limited stiffness damping armature>`, types
//!   `hinge` (default), `slide`, `ball`, `free`, `fixed`;
//! - `<geom type size pos fromto quat axisangle>`, types `sphere`, `capsule` and `box`.
//!
//! Everything else is ignored, as in dflex: `<default>` classes and `childclass`,
//! `<inertial>`, geom `mass`/`density`, `settotalmass`, actuator `gear` (fidelity trap 1),
//! sites, cameras, lights, sensors, `<include>`.
//!
//! The dflex conventions reproduced (each also marked where it is implemented):
//! 1. one link per joint: a body with several joints becomes a chain of links, the
//!    earlier ones massless; all geoms go on the last one (fidelity trap 4);
//! 2. the joint frame `X_pj` has identity rotation and translation
//!    `body_pos + joint_pos − previous joint_pos`, with the root body's `pos` taken as 0
//!    (fidelity trap 2); geoms sit at `geom_pos − joint_pos` in the link frame;
//! 3. mass and inertia come from the geoms only, at [`MjcfOptions::density`]
//!    (fidelity trap 1), merged with [`MjcfOptions::inertia_transform`] (fidelity trap 27);
//! 4. a `fromto` capsule lies along its local x with half-width |to − from|/2; any other
//!    capsule is MJCF's z capsule, i.e. its (`axisangle` or `quat`) rotation times a
//!    −π/2 rotation about y;
//! 5. geom `quat` is read as `(x, y, z, w)` although MJCF writes `(w, x, y, z)` (dflex
//!    passes the parsed array straight on); [`MjcfOptions::dflex_quat_order`];
//! 6. `range` is in degrees unless [`MjcfOptions::radians`]; `limited` is true unless the
//!    attribute is present and not exactly `"true"` (so `"false"` and `"auto"` both mean
//!    unlimited); the default range is ±170°; unlimited joints get ±1e6;
//! 7. stiffness is read from the joint only with [`MjcfOptions::load_stiffness`], armature
//!    only with [`MjcfOptions::load_armature`]; damping is always read from the joint's own
//!    attribute when present; otherwise the loader defaults apply;
//! 8. `limit_ke`/`limit_kd` are applied to every joint, root slides included;
//! 9. free joints get armature 0 whatever the options (fidelity trap 5; done by
//!    [`crate::model::ArticulationBuilder::add_link`]).
//!
//! Where dflex would crash or silently drop data, this loader decides instead (documented
//! extensions): a body without joints is welded to its parent's link (its geoms and child
//! bodies are offset by its `pos`); a root body without joints becomes a fixed link at its
//! `pos`; `box` geoms are supported (`size` = half extents; dflex prints "unsupported" and
//! skips them); any other geom type, unknown joint type, missing `size`, malformed number
//! or zero-length `fromto` is an error; a hinge or slide without `axis` uses MJCF's
//! default (0, 0, 1) (dflex would normalise a zero vector); a `fromto` along −x is turned
//! by π about z (dflex would build a zero quaternion).

use super::{
    axis_angle_matrix, bad, line_of, mat_mul, parse_num, parse_nums, quat_matrix, read_text,
    segment_frame, xml_error, LoadedModel, IDENTITY,
};
use crate::model::{
    ArticulationBuilder, ContactMaterial, Geometry, InertiaTransform, Joint, JointKind, Shape,
};
use crate::spatial::{Transform, V3};
use diff_core::{Error, Result};
use roxmltree::Node;
use std::f64::consts::PI;
use std::path::Path;

/// Maximum body nesting depth (a guard against pathological files).
const MAX_DEPTH: usize = 256;

/// Options of the MJCF loader. The defaults are those of dflex's `parse_mjcf`; the
/// `diffrl_*` constructors give the arguments each DiffRL env passes (tasks.md §1.4).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MjcfOptions {
    /// Density of every geom, kg/m³ (dflex default 1000).
    pub density: f64,
    /// Joint stiffness toward the target (`joint_target_ke`) when the joint has none in the
    /// file or `load_stiffness` is off (dflex default 0).
    pub stiffness: f64,
    /// Joint damping when the joint has no `damping` attribute (dflex default 1.0).
    pub damping: f64,
    /// Joint armature when the joint has none or `load_armature` is off (dflex default
    /// 0.01). Free joints always get 0.
    pub armature: f64,
    /// Limit stiffness of every joint (dflex default 100).
    pub limit_ke: f64,
    /// Limit damping of every joint (dflex default 10), applied always (fidelity trap 6).
    pub limit_kd: f64,
    /// Ground-contact material of every geom (dflex defaults ke 1e4, kd 1e4, kf 1e3,
    /// mu 0.5).
    pub contact: ContactMaterial,
    /// Whether `range` is in radians (dflex default false: degrees).
    pub radians: bool,
    /// Read `stiffness` from the joints (dflex default false).
    pub load_stiffness: bool,
    /// Read `armature` from the joints (dflex default false).
    pub load_armature: bool,
    /// How shape inertias are rotated into their link (default: dflex's element-wise
    /// product, fidelity trap 27).
    pub inertia_transform: InertiaTransform,
    /// Whether ground contact is on (dflex `model.ground`; default true).
    pub ground: bool,
    /// Replaces the first link's joint frame `X_pj` (the DiffRL Hopper and Cheetah envs
    /// overwrite `joint_X_pj[0]` after loading; default `None`).
    #[serde(with = "super::opt_transform_serde")]
    pub root_x_pj: Option<Transform<f64>>,
    /// Read geom `quat` as `(x, y, z, w)` as dflex does (default true); false reads MJCF's
    /// `(w, x, y, z)`.
    pub dflex_quat_order: bool,
}

impl Default for MjcfOptions {
    /// dflex `parse_mjcf` defaults.
    fn default() -> Self {
        MjcfOptions {
            density: 1000.0,
            stiffness: 0.0,
            damping: 1.0,
            armature: 0.01,
            limit_ke: 100.0,
            limit_kd: 10.0,
            contact: ContactMaterial {
                ke: 1e4,
                kd: 1e4,
                kf: 1e3,
                mu: 0.5,
            },
            radians: false,
            load_stiffness: false,
            load_armature: false,
            inertia_transform: InertiaTransform::DflexElementwise,
            ground: true,
            root_x_pj: None,
            dflex_quat_order: true,
        }
    }
}

/// −π/2 about x at `p`: the z-up → Y-up root frame of the planar DiffRL envs.
fn y_up_root(p: V3<f64>) -> Transform<f64> {
    Transform {
        p,
        r: crate::spatial::axis_angle([1.0, 0.0, 0.0], -PI / 2.0),
    }
}

impl MjcfOptions {
    /// DiffRL Hopper (`envs/hopper.py`, tasks.md §2.3): stiffness 0, damping 2.0, armature
    /// 1.0, limits 1e3/10, contact 2e4/1e3/1e3/0.9, radians, load_stiffness; root frame
    /// −π/2 about x at the origin.
    pub fn diffrl_hopper() -> Self {
        MjcfOptions {
            stiffness: 0.0,
            damping: 2.0,
            armature: 1.0,
            limit_ke: 1e3,
            limit_kd: 10.0,
            contact: ContactMaterial {
                ke: 2e4,
                kd: 1e3,
                kf: 1e3,
                mu: 0.9,
            },
            radians: true,
            load_stiffness: true,
            root_x_pj: Some(y_up_root([0.0; 3])),
            ..Default::default()
        }
    }
    /// DiffRL Cheetah (`envs/cheetah.py`, tasks.md §2.4): stiffness 0 and damping 1.0 as
    /// defaults (every joint overrides them), armature 0.1, limits 1e3/10, contact
    /// 2e4/1e3/1e3/1.0, radians, load_stiffness; root frame at (0, 1, 0), −π/2 about x.
    pub fn diffrl_cheetah() -> Self {
        MjcfOptions {
            stiffness: 0.0,
            damping: 1.0,
            armature: 0.1,
            limit_ke: 1e3,
            limit_kd: 10.0,
            contact: ContactMaterial {
                ke: 2e4,
                kd: 1e3,
                kf: 1e3,
                mu: 1.0,
            },
            radians: true,
            load_stiffness: true,
            root_x_pj: Some(y_up_root([0.0, 1.0, 0.0])),
            ..Default::default()
        }
    }
    /// DiffRL Ant (`envs/ant.py`, tasks.md §2.5): stiffness 0, damping 1.0, armature 0.05,
    /// limits 1e3/10, contact 4e4/1e4/3e3/0.75, degrees. The start pose (−π/2 about x at
    /// height 0.75) is the free joint's coordinates, set by the task.
    pub fn diffrl_ant() -> Self {
        MjcfOptions {
            stiffness: 0.0,
            damping: 1.0,
            armature: 0.05,
            limit_ke: 1e3,
            limit_kd: 10.0,
            contact: ContactMaterial {
                ke: 4e4,
                kd: 1e4,
                kf: 3e3,
                mu: 0.75,
            },
            ..Default::default()
        }
    }
    /// DiffRL Humanoid (`envs/humanoid.py`, tasks.md §2.6): stiffness 5, damping 0.1,
    /// armature 0.007 as defaults with load_stiffness and load_armature, limits 1e3/10,
    /// contact 2e4/5e3/1e3/0.75, degrees.
    pub fn diffrl_humanoid() -> Self {
        MjcfOptions {
            stiffness: 5.0,
            damping: 0.1,
            armature: 0.007,
            limit_ke: 1e3,
            limit_kd: 10.0,
            contact: ContactMaterial {
                ke: 2e4,
                kd: 5e3,
                kf: 1e3,
                mu: 0.75,
            },
            load_stiffness: true,
            load_armature: true,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let check = |name: &str, v: f64, min_exclusive: bool| -> Result<()> {
            let ok = v.is_finite() && if min_exclusive { v > 0.0 } else { v >= 0.0 };
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidParameter {
                    name: format!("MjcfOptions::{name}"),
                    reason: format!(
                        "must be finite and {} 0, is {v}",
                        if min_exclusive { ">" } else { "≥" }
                    ),
                })
            }
        };
        check("density", self.density, true)?;
        check("stiffness", self.stiffness, false)?;
        check("damping", self.damping, false)?;
        check("armature", self.armature, false)?;
        check("limit_ke", self.limit_ke, false)?;
        check("limit_kd", self.limit_kd, false)?;
        check("contact.ke", self.contact.ke, false)?;
        check("contact.kd", self.contact.kd, false)?;
        check("contact.kf", self.contact.kf, false)?;
        check("contact.mu", self.contact.mu, false)?;
        Ok(())
    }
}

/// Reads an MJCF file (see the module docs for what is read and how).
pub fn load_mjcf(path: impl AsRef<Path>, opts: &MjcfOptions) -> Result<LoadedModel> {
    let path = path.as_ref();
    let text = read_text(path)?;
    parse_mjcf_str(&text, &path.display().to_string(), opts)
}

/// Parses MJCF text; `path` is only used in messages and [`LoadedModel::source`].
pub fn parse_mjcf_str(text: &str, path: &str, opts: &MjcfOptions) -> Result<LoadedModel> {
    opts.validate()?;
    let doc = roxmltree::Document::parse(text).map_err(|e| xml_error(path, e))?;
    let root = doc.root_element();
    if root.tag_name().name() != "mujoco" {
        return Err(bad(
            path,
            format!("<{}> (line {})", root.tag_name().name(), line_of(root)),
            "the root element must be <mujoco>",
        ));
    }
    let mut p = Parser {
        path,
        opts,
        links: Vec::new(),
        warnings: Vec::new(),
    };
    for c in root.children().filter(|c| c.is_element()) {
        if c.tag_name().name() == "include" {
            p.warnings.push(format!(
                "<include> at line {} is not followed (dflex does not either)",
                line_of(c)
            ));
        }
    }
    let world = root
        .children()
        .find(|c| c.is_element() && c.tag_name().name() == "worldbody")
        .ok_or_else(|| bad(path, "<mujoco>", "no <worldbody> element"))?;
    for body in elements(world, "body") {
        p.parse_body(body, None, [0.0; 3], "", 0)?;
    }
    if p.links.is_empty() {
        return Err(bad(
            path,
            "<worldbody>",
            "no body with a joint or geom to load",
        ));
    }
    if let Some(x) = opts.root_x_pj {
        p.links[0].joint.x_pj = x;
    }

    let mut builder = ArticulationBuilder::new(opts.inertia_transform).ground(opts.ground);
    let mut joint_names = Vec::with_capacity(p.links.len());
    let mut body_names = Vec::with_capacity(p.links.len());
    for l in p.links {
        let name = l.joint.name.clone();
        builder
            .add_link(l.parent, l.joint, &l.shapes)
            .map_err(|e| bad(path, &l.element, e))?;
        joint_names.push(name);
        body_names.push(l.body);
    }
    Ok(LoadedModel {
        builder,
        joint_names,
        body_names,
        warnings: p.warnings,
        source: path.to_string(),
    })
}

/// A link planned from the file; shapes may be added to it until the tree is read (a
/// joint-less body welds its geoms onto its parent's link).
struct PlannedLink {
    parent: Option<usize>,
    joint: Joint,
    shapes: Vec<Shape>,
    body: String,
    /// The element that created it, for messages.
    element: String,
}

struct Parser<'a> {
    path: &'a str,
    opts: &'a MjcfOptions,
    links: Vec<PlannedLink>,
    warnings: Vec<String>,
}

/// The element children of `node` called `tag`, in document order.
fn elements<'a, 'i>(node: Node<'a, 'i>, tag: &'a str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == tag)
}

impl Parser<'_> {
    /// One body (dflex `parse_body`). `last_joint_pos` is the position of the parent link's
    /// joint in the parent body frame (dflex's `last_joint_pos`), `trail` the element path
    /// of the parent body for messages.
    fn parse_body(
        &mut self,
        body: Node,
        parent: Option<usize>,
        last_joint_pos: V3<f64>,
        trail: &str,
        depth: usize,
    ) -> Result<()> {
        let body_name = body.attribute("name").unwrap_or("").to_string();
        let here = if body_name.is_empty() {
            format!("{trail}body (unnamed)")
        } else {
            format!("{trail}body \"{body_name}\"")
        };
        let elem = |what: &str| format!("{here}{what} (line {})", line_of(body));
        if depth > MAX_DEPTH {
            return Err(bad(
                self.path,
                elem(""),
                format!("bodies nested deeper than {MAX_DEPTH}"),
            ));
        }
        let mut body_pos = self.vec_attr(body, "pos", &elem(""))?.unwrap_or([0.0; 3]);
        // trap 2: body `quat` (and euler/axisangle/xyaxes/zaxis) is ignored.
        if elements(body, "freejoint").next().is_some() {
            self.warnings.push(format!(
                "{}: <freejoint> is ignored (dflex reads <joint type=\"free\"> only)",
                elem("")
            ));
        }

        // ---- joints: one link per joint (trap 4)
        let mut parent = parent;
        let mut last = last_joint_pos;
        let mut joints = Vec::new();
        for (k, jn) in elements(body, "joint").enumerate() {
            let jelem = format!(
                "{here} > joint {} (line {})",
                jn.attribute("name")
                    .map(|n| format!("\"{n}\""))
                    .unwrap_or_else(|| format!("#{}", k + 1)),
                line_of(jn)
            );
            let (joint_pos, joint) = self.parse_joint(jn, &jelem)?;
            joints.push((joint_pos, joint, jelem));
        }
        let mut shapes_link = parent;
        if joints.is_empty() {
            match parent {
                // extension: a root body without joints is fixed to the world at its pos
                None => {
                    let name = if body_name.is_empty() {
                        "fixed_base"
                    } else {
                        &body_name
                    };
                    let mut j = Joint::new(
                        name,
                        JointKind::Fixed,
                        [0.0, 0.0, 1.0],
                        Transform {
                            p: body_pos,
                            r: IDENTITY,
                        },
                    );
                    self.apply_common(&mut j);
                    self.links.push(PlannedLink {
                        parent: None,
                        joint: j,
                        shapes: Vec::new(),
                        body: body_name.clone(),
                        element: elem(""),
                    });
                    shapes_link = Some(self.links.len() - 1);
                    last = [0.0; 3];
                }
                // extension: weld onto the parent's link, offset by the body's pos
                Some(_) => {
                    last = sub(last, body_pos);
                }
            }
        }
        for (joint_pos, mut joint, jelem) in joints {
            // dflex: `if parent == -1: body_pos = 0` (trap 2: root body pos dropped)
            if parent.is_none() {
                body_pos = [0.0; 3];
            }
            // trap 2: X_pj = body_pos + joint_pos − last_joint_pos, identity rotation
            joint.x_pj = Transform {
                p: sub(add(body_pos, joint_pos), last),
                r: IDENTITY,
            };
            self.links.push(PlannedLink {
                parent,
                joint,
                shapes: Vec::new(),
                body: body_name.clone(),
                element: jelem,
            });
            parent = Some(self.links.len() - 1);
            shapes_link = parent;
            body_pos = [0.0; 3];
            last = joint_pos;
        }

        // ---- geoms, all on the last joint's link (trap 4), at geom_pos − last_joint_pos
        for (k, gn) in elements(body, "geom").enumerate() {
            let gelem = format!(
                "{here} > geom {} (line {})",
                gn.attribute("name")
                    .map(|n| format!("\"{n}\""))
                    .unwrap_or_else(|| format!("#{}", k + 1)),
                line_of(gn)
            );
            let shape = self.parse_geom(gn, last, &gelem)?;
            match shapes_link {
                Some(l) => self.links[l].shapes.push(shape),
                None => unreachable_root(self.path, &gelem)?,
            }
        }

        // ---- children
        let child_trail = format!("{here} > ");
        for child in elements(body, "body") {
            self.parse_body(child, shapes_link, last, &child_trail, depth + 1)?;
        }
        Ok(())
    }

    /// Parameters shared by every joint: limit stiffness/damping (trap: applied to all).
    fn apply_common(&self, j: &mut Joint) {
        j.limit_ke = self.opts.limit_ke;
        j.limit_kd = self.opts.limit_kd;
        j.target_ke = self.opts.stiffness;
        j.target_kd = self.opts.damping;
        j.armature = self.opts.armature;
    }

    /// A `<joint>`: its position in the body frame and the joint (X_pj set by the caller).
    fn parse_joint(&self, jn: Node, elem: &str) -> Result<(V3<f64>, Joint)> {
        let o = self.opts;
        let name = jn
            .attribute("name")
            .ok_or_else(|| bad(self.path, elem, "missing attribute `name`"))?;
        let kind = match jn.attribute("type").unwrap_or("hinge") {
            "hinge" => JointKind::Revolute,
            "slide" => JointKind::Prismatic,
            "ball" => JointKind::Ball,
            "free" => JointKind::Free,
            "fixed" => JointKind::Fixed,
            other => {
                return Err(bad(
                    self.path,
                    elem,
                    format!(
                        "unsupported joint type `{other}` (expected hinge, slide, ball, free \
                         or fixed)"
                    ),
                ))
            }
        };
        let pos = self.vec_attr(jn, "pos", elem)?.unwrap_or([0.0; 3]);
        let axis = match self.vec_attr(jn, "axis", elem)? {
            Some(a) => {
                let n = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
                if n <= 1e-12 {
                    if kind.is_1dof() {
                        return Err(bad(self.path, elem, "attribute `axis` is the zero vector"));
                    }
                    [0.0, 0.0, 1.0]
                } else {
                    a.map(|v| v / n)
                }
            }
            // extension: MJCF's default axis (dflex would normalise (0, 0, 0))
            None => [0.0, 0.0, 1.0],
        };
        // quirk 6: dflex `parse_bool`: only the exact string "true" is true
        let limited = jn.attribute("limited").map(|s| s == "true").unwrap_or(true);
        let (lower, upper) = if limited {
            let r = match self.num_list(jn, "range", elem)? {
                None => [(-170.0f64).to_radians(), 170.0f64.to_radians()],
                Some(v) if v.len() == 2 => {
                    if o.radians {
                        [v[0], v[1]]
                    } else {
                        [v[0].to_radians(), v[1].to_radians()]
                    }
                }
                Some(v) => {
                    return Err(bad(
                        self.path,
                        elem,
                        format!("attribute `range` needs 2 numbers, has {}", v.len()),
                    ))
                }
            };
            (r[0], r[1])
        } else {
            (-1e6, 1e6)
        };
        if lower > upper {
            return Err(bad(
                self.path,
                elem,
                format!("attribute `range`: lower {lower} > upper {upper}"),
            ));
        }
        let mut j = Joint::new(name, kind, axis, Transform::default());
        self.apply_common(&mut j);
        j.limit_lower = lower;
        j.limit_upper = upper;
        // quirk 7: stiffness only with load_stiffness, armature only with load_armature,
        // damping always from the joint's own attribute (no <default> classes)
        if o.load_stiffness {
            if let Some(v) = self.num_attr(jn, "stiffness", elem)? {
                j.target_ke = v;
            }
        }
        if let Some(v) = self.num_attr(jn, "damping", elem)? {
            j.target_kd = v;
        }
        if o.load_armature {
            if let Some(v) = self.num_attr(jn, "armature", elem)? {
                j.armature = v;
            }
        }
        for (what, v) in [
            ("stiffness", j.target_ke),
            ("damping", j.target_kd),
            ("armature", j.armature),
        ] {
            if v < 0.0 {
                return Err(bad(self.path, elem, format!("negative {what} {v}")));
            }
        }
        Ok((pos, j))
    }

    /// A `<geom>` as a shape in the link frame whose joint sits at `last_joint_pos`.
    fn parse_geom(&self, gn: Node, last_joint_pos: V3<f64>, elem: &str) -> Result<Shape> {
        let o = self.opts;
        let ty = gn
            .attribute("type")
            .ok_or_else(|| bad(self.path, elem, "missing attribute `type`"))?;
        let size = self
            .num_list(gn, "size", elem)?
            .ok_or_else(|| bad(self.path, elem, "missing attribute `size`"))?;
        let need = |n: usize| -> Result<()> {
            if size.len() < n {
                Err(bad(
                    self.path,
                    elem,
                    format!(
                        "attribute `size` of a {ty} needs {n} number{}, has {}",
                        if n > 1 { "s" } else { "" },
                        size.len()
                    ),
                ))
            } else if size[..n].iter().any(|&s| s <= 0.0) {
                Err(bad(
                    self.path,
                    elem,
                    format!("attribute `size` must be positive, is {:?}", &size[..n]),
                ))
            } else {
                Ok(())
            }
        };
        let geom_pos = self.vec_attr(gn, "pos", elem)?.unwrap_or([0.0; 3]);
        let geom_quat = match self.vec_attr::<4>(gn, "quat", elem)? {
            None => None,
            Some(q) => {
                // quirk 5: dflex passes MJCF's (w, x, y, z) on as (x, y, z, w)
                let xyzw = if o.dflex_quat_order {
                    q
                } else {
                    [q[1], q[2], q[3], q[0]]
                };
                Some(quat_matrix(xyzw).ok_or_else(|| {
                    bad(self.path, elem, "attribute `quat` is the zero quaternion")
                })?)
            }
        };
        let has_fromto = gn.attribute("fromto").is_some();
        if has_fromto && ty != "capsule" {
            return Err(bad(
                self.path,
                elem,
                format!("`fromto` is only supported on capsules, not on a {ty}"),
            ));
        }
        let (geometry, pos, rot) = match ty {
            "sphere" => {
                need(1)?;
                (
                    Geometry::Sphere { radius: size[0] },
                    geom_pos,
                    geom_quat.unwrap_or(IDENTITY),
                )
            }
            "box" => {
                // extension: dflex's parse_mjcf skips boxes
                need(3)?;
                (
                    Geometry::Box {
                        half_extents: [size[0], size[1], size[2]],
                    },
                    geom_pos,
                    geom_quat.unwrap_or(IDENTITY),
                )
            }
            "capsule" if has_fromto => {
                need(1)?;
                let ft = self.vec_attr(gn, "fromto", elem)?.unwrap_or([0.0; 6]);
                let (from, to) = ([ft[0], ft[1], ft[2]], [ft[3], ft[4], ft[5]]);
                let (half_width, center, rot) = segment_frame(from, to)
                    .ok_or_else(|| bad(self.path, elem, "attribute `fromto` has zero length"))?;
                (
                    Geometry::Capsule {
                        radius: size[0],
                        half_width,
                    },
                    center,
                    rot,
                )
            }
            "capsule" => {
                need(2)?;
                // quirk 4: MJCF z capsule = (axisangle | quat) · rot(y, −π/2); a quat
                // overrides an axisangle, as in dflex; the angle is used as given
                let mut r = IDENTITY;
                if let Some(aa) = self.vec_attr::<4>(gn, "axisangle", elem)? {
                    r = axis_angle_matrix([aa[0], aa[1], aa[2]], aa[3]).ok_or_else(|| {
                        bad(self.path, elem, "attribute `axisangle` has a zero axis")
                    })?;
                }
                if let Some(q) = geom_quat {
                    r = q;
                }
                let r = mat_mul(&r, &crate::spatial::axis_angle([0.0, 1.0, 0.0], -PI / 2.0));
                (
                    Geometry::Capsule {
                        radius: size[0],
                        half_width: size[1],
                    },
                    geom_pos,
                    r,
                )
            }
            other => {
                return Err(bad(
                    self.path,
                    elem,
                    format!("unsupported geom type `{other}` (expected sphere, capsule or box)"),
                ))
            }
        };
        // trap 2: the geom position relative to the link's joint
        let mut shape = Shape::new(
            geometry,
            Transform {
                p: sub(pos, last_joint_pos),
                r: rot,
            },
        );
        shape.density = o.density;
        shape.material = o.contact;
        Ok(shape)
    }

    fn num_attr(&self, n: Node, key: &str, elem: &str) -> Result<Option<f64>> {
        match n.attribute(key) {
            None => Ok(None),
            Some(s) => parse_num(s)
                .map(Some)
                .map_err(|e| bad(self.path, elem, format!("attribute `{key}`: {e}"))),
        }
    }

    fn num_list(&self, n: Node, key: &str, elem: &str) -> Result<Option<Vec<f64>>> {
        match n.attribute(key) {
            None => Ok(None),
            Some(s) => parse_nums(s)
                .map(Some)
                .map_err(|e| bad(self.path, elem, format!("attribute `{key}`: {e}"))),
        }
    }

    fn vec_attr<const N: usize>(&self, n: Node, key: &str, elem: &str) -> Result<Option<[f64; N]>> {
        match self.num_list(n, key, elem)? {
            None => Ok(None),
            Some(v) => <[f64; N]>::try_from(v.as_slice()).map(Some).map_err(|_| {
                bad(
                    self.path,
                    elem,
                    format!("attribute `{key}` needs {N} numbers, has {}", v.len()),
                )
            }),
        }
    }
}

/// A geom seen before any link exists (cannot happen: a root body always creates one).
fn unreachable_root(path: &str, elem: &str) -> Result<()> {
    Err(bad(path, elem, "geom without a link to attach to"))
}

fn add(a: V3<f64>, b: V3<f64>) -> V3<f64> {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn sub(a: V3<f64>, b: V3<f64>) -> V3<f64> {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
