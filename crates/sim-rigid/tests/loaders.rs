//! The model-file loaders against the values read from dflex's finalized models
//! (tasks.md §8, "Values confirmed by running dflex"), the shipped robot files, and
//! malformed input (every error names the file, the element and the reason; no panics).
#![allow(clippy::needless_range_loop)]
// The URDF writes its limits as decimals (0.7853, 3.1415); the tests compare those.
#![allow(clippy::approx_constant)]

use sim_rigid::loader::{
    load_mjcf, load_urdf, parse_mjcf_str, parse_urdf_str, robot_path, DroppedJoints, LoadedModel,
    MjcfOptions, UrdfOptions,
};
use sim_rigid::model::{Geometry, InertiaTransform, JointKind};
use sim_rigid::spatial::Transform;
use sim_rigid::Articulation;

/// Relative closeness (the published values are rounded to 4–5 digits).
fn rel(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-12)
}

fn assert_mass(art: &Articulation, link: usize, expect: f64) {
    let m = art.links[link].mass;
    assert!(
        rel(m, expect, 1e-3),
        "link {link}: mass {m}, dflex {expect}"
    );
}

fn load(file: &str, opts: &MjcfOptions) -> (LoadedModel, Articulation) {
    let m = load_mjcf(robot_path(file), opts).unwrap_or_else(|e| panic!("{file}: {e}"));
    let art = m.clone().build().unwrap();
    (m, art)
}

// ------------------------------------------------------------------------------ Ant

#[test]
fn ant_matches_dflex() {
    let (m, art) = load("ant.xml", &MjcfOptions::diffrl_ant());
    assert_eq!(
        m.joint_names,
        ["root", "hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3", "hip_4", "ankle_4"]
    );
    assert_eq!((art.n_q, art.n_qd), (15, 14));
    assert_eq!(m.default_q().len(), 15);
    // torso: sphere 65.45 + four aux capsules of 7.83 kg (the aux geoms are on the torso)
    assert_mass(&art, 0, 96.776);
    for leg in 0..4 {
        assert_mass(&art, 1 + 2 * leg, 7.8316);
        assert_mass(&art, 2 + 2 * leg, 13.5184);
    }
    assert_eq!(art.contacts.len(), 25);
    for c in &art.contacts {
        assert_eq!(
            (c.material.ke, c.material.kd, c.material.kf, c.material.mu),
            (4e4, 1e4, 3e3, 0.75)
        );
    }
    let root = &art.links[0].joint;
    assert_eq!(root.kind, JointKind::Free);
    assert_eq!(root.armature, 0.0, "free joints get armature 0 (trap 5)");
    for l in &art.links[1..] {
        let j = &l.joint;
        assert_eq!(j.kind, JointKind::Revolute, "{}", j.name);
        assert_eq!((j.target_ke, j.target_kd), (0.0, 1.0), "{}", j.name);
        assert_eq!(
            (j.limit_ke, j.limit_kd, j.armature),
            (1e3, 10.0, 0.05),
            "{}",
            j.name
        );
    }
    // ranges in degrees → radians; ankle axes as in the XML, normalised
    let deg = |d: f64| d.to_radians();
    let ankle = |name: &str| &art.links[m.link_index(name).unwrap()].joint;
    let a1 = ankle("ankle_1");
    assert!(rel(a1.limit_lower, deg(30.0), 1e-12) && rel(a1.limit_upper, deg(100.0), 1e-12));
    let s = std::f64::consts::FRAC_1_SQRT_2;
    assert!((a1.axis[0] + s).abs() < 1e-12 && (a1.axis[1] - s).abs() < 1e-12);
    let a2 = ankle("ankle_2");
    assert!(rel(a2.limit_lower, deg(-100.0), 1e-12) && rel(a2.limit_upper, deg(-30.0), 1e-12));
    let h1 = ankle("hip_1");
    assert!(rel(h1.limit_upper, deg(40.0), 1e-12) && rel(h1.limit_lower, deg(-40.0), 1e-12));
    // joint frames: hip at the torso's (0.2, 0.2, 0), ankle 0.2·(1, 1, 0) further; the
    // root body's pos (0, 0, 0.75) is dropped (trap 2)
    assert_eq!(art.links[0].joint.x_pj.p, [0.0; 3]);
    assert_eq!(art.links[1].joint.x_pj.p, [0.2, 0.2, 0.0]);
    assert_eq!(art.links[2].joint.x_pj.p, [0.2, 0.2, 0.0]);
}

/// The hip link's inertia about its COM, in the link frame (= the MJCF body axes, z up:
/// the joint frame has identity rotation and the body `quat` is ignored).
#[test]
fn ant_hip_inertia_elementwise_and_exact() {
    let opts = MjcfOptions::diffrl_ant();
    assert_eq!(opts.inertia_transform, InertiaTransform::DflexElementwise);
    let (_, art) = load("ant.xml", &opts);
    let hip = &art.links[1];
    // COM in the middle of the capsule from (0, 0, 0) to (0.2, 0.2, 0)
    assert!((hip.com[0] - 0.1).abs() < 1e-12 && (hip.com[1] - 0.1).abs() < 1e-12);
    let expect = [0.01184, 0.0568, 0.11359];
    for i in 0..3 {
        assert!(
            rel(hip.inertia[i][i], expect[i], 1e-3),
            "I[{i}{i}] = {}",
            hip.inertia[i][i]
        );
        for k in 0..3 {
            if k != i {
                assert_eq!(
                    hip.inertia[i][k], 0.0,
                    "element-wise drops off-diagonal terms"
                );
            }
        }
    }
    // the torso's spurious off-diagonal term (the last merge's parallel-axis term)
    let torso = &art.links[0];
    let off = torso.inertia[0][1].abs();
    assert!(
        rel(off, 0.08521, 1e-3),
        "torso I_xy = {}",
        torso.inertia[0][1]
    );

    let exact = MjcfOptions {
        inertia_transform: InertiaTransform::Exact,
        ..MjcfOptions::diffrl_ant()
    };
    let (_, art) = load("ant.xml", &exact);
    for (leg, sign) in [(1usize, -1.0), (3, 1.0), (5, -1.0), (7, 1.0)] {
        let i = &art.links[leg].inertia;
        assert!(
            rel(i[0][0], 0.06864, 1e-3) && rel(i[1][1], 0.06864, 1e-3),
            "{i:?}"
        );
        assert!(
            rel(i[0][1], sign * 0.04495, 1e-3),
            "leg link {leg}: I_xy = {}",
            i[0][1]
        );
        assert!(rel(i[2][2], 0.11359, 1e-3));
        // exact rotation keeps the trace: I_b + 2·I_a of the capsule
        assert!(rel(
            i[0][0] + i[1][1] + i[2][2],
            2.0 * 0.01184 + 2.0 * 0.11359,
            1e-3
        ));
    }
    // the exact torso has no spurious off-diagonal term: the four aux capsules cancel
    assert!(art.links[0].inertia[0][1].abs() < 1e-9);
}

// ------------------------------------------------------------------------------ Hopper

#[test]
fn hopper_matches_dflex() {
    let (m, art) = load("hopper.xml", &MjcfOptions::diffrl_hopper());
    assert_eq!(
        m.joint_names,
        [
            "rootx",
            "rootz",
            "rooty",
            "thigh_joint",
            "leg_joint",
            "foot_joint"
        ]
    );
    assert_eq!((art.n_q, art.n_qd), (6, 6));
    // rootx and rootz are massless chain links (trap 4)
    assert_eq!(art.links[0].mass, 0.0);
    assert_eq!(art.links[1].mass, 0.0);
    assert_mass(&art, 2, 3.6652);
    assert_mass(&art, 3, 4.0579);
    assert_mass(&art, 4, 2.7814);
    assert_mass(&art, 5, 5.3156);
    assert_eq!(art.contacts.len(), 8);
    for (i, l) in art.links.iter().enumerate() {
        let j = &l.joint;
        assert_eq!(
            j.armature, 1.0,
            "{}: armature 1.0 on all 6 DOFs (trap 5)",
            j.name
        );
        assert_eq!(j.target_kd, if i < 3 { 0.0 } else { 2.0 }, "{}", j.name);
        assert_eq!(j.target_ke, 0.0);
        assert_eq!((j.limit_ke, j.limit_kd), (1e3, 10.0), "{}", j.name);
    }
    assert_eq!(art.links[0].joint.kind, JointKind::Prismatic);
    assert_eq!(art.links[2].joint.kind, JointKind::Revolute);
    assert_eq!(art.links[0].joint.limit_upper, 1e6, "unlimited root");
    let thigh = &art.links[3].joint;
    assert_eq!(
        (thigh.limit_lower, thigh.limit_upper),
        (-2.61799, 0.0),
        "radians"
    );
    assert_eq!(thigh.axis, [0.0, -1.0, 0.0]);
    // root frame replaced by −π/2 about x; rootz at +1.25 (the rootx pos −1.25 undone)
    let r = art.links[0].joint.x_pj.r;
    assert!(
        (r[1][2] - 1.0).abs() < 1e-12 && (r[2][1] + 1.0).abs() < 1e-12,
        "{r:?}"
    );
    assert_eq!(art.links[0].joint.x_pj.p, [0.0; 3]);
    assert_eq!(art.links[1].joint.x_pj.p, [0.0, 0.0, 1.25]);
    assert!((art.links[4].joint.x_pj.p[2] + 0.45).abs() < 1e-12);
    // dflex's quirks: torso, thigh and leg come out as diag(0, I_yy, 0) (trap 27)
    for l in 2..5 {
        let i = art.links[l].inertia;
        assert!(
            i[0][0].abs() < 1e-12 && i[2][2].abs() < 1e-12 && i[1][1] > 0.0,
            "{i:?}"
        );
    }
    assert!(
        rel(art.links[2].inertia[1][1], 0.06925, 1e-3),
        "{}",
        art.links[2].inertia[1][1]
    );
    // the foot capsule lies along the foot's x (quat read as (x, y, z, w), trap 2)
    let foot: Vec<_> = art.contacts.iter().filter(|c| c.link == 5).collect();
    assert_eq!(foot.len(), 2);
    for c in foot {
        assert!((c.point[0].abs() - 0.195).abs() < 1e-5 || (c.point[0] - 0.06).abs() > 0.1);
        assert!(
            c.point[1].abs() < 1e-9 && c.point[2].abs() < 1e-9,
            "{:?}",
            c.point
        );
    }
}

// ------------------------------------------------------------------------------ Cheetah

#[test]
fn cheetah_joints_match_diffrl() {
    let (m, art) = load("half_cheetah.xml", &MjcfOptions::diffrl_cheetah());
    assert_eq!(art.links.len(), 9);
    assert_eq!((art.n_q, art.n_qd), (9, 9));
    let expect = [
        ("ignorex", 0.0, 0.0),
        ("ignorez", 0.0, 0.0),
        ("ignorey", 0.0, 0.0),
        ("bthigh", 240.0, 6.0),
        ("bshin", 180.0, 4.5),
        ("bfoot", 120.0, 3.0),
        ("fthigh", 180.0, 4.5),
        ("fshin", 120.0, 3.0),
        ("ffoot", 60.0, 1.5),
    ];
    for (l, (name, ke, kd)) in art.links.iter().zip(expect) {
        let j = &l.joint;
        assert_eq!(j.name, name);
        assert_eq!((j.target_ke, j.target_kd), (ke, kd), "{name}");
        assert_eq!(
            (j.limit_ke, j.limit_kd, j.armature),
            (1e3, 10.0, 0.1),
            "{name}"
        );
    }
    assert_eq!(m.joint_names[8], "ffoot");
    let ffoot = &art.links[8].joint;
    assert_eq!(
        (ffoot.limit_lower, ffoot.limit_upper),
        (-3.1, -0.3),
        "trap 19"
    );
    assert_eq!(art.links[0].joint.x_pj.p, [0.0, 1.0, 0.0]);
    // 8 capsules (torso, head and six leg segments), 2 points each; masses from the
    // capsules at density 1000: 21.184 kg, not settotalmass's 14 (trap 1)
    assert_eq!(art.contacts.len(), 16);
    let total: f64 = art.links.iter().map(|l| l.mass).sum();
    assert!(rel(total, 21.1837, 1e-4), "total {total}");
}

// ------------------------------------------------------------------------------ Humanoid

#[test]
fn humanoid_matches_dflex() {
    let (m, art) = load("humanoid.xml", &MjcfOptions::diffrl_humanoid());
    assert_eq!(art.links.len(), 22);
    assert_eq!((art.n_q, art.n_qd), (28, 27));
    assert_mass(&art, 0, 8.907);
    assert_eq!(art.contacts.len(), 35);
    for c in &art.contacts {
        assert_eq!(
            (c.material.ke, c.material.kd, c.material.kf, c.material.mu),
            (2e4, 5e3, 1e3, 0.75)
        );
    }
    // the chain links of multi-joint bodies are massless (trap 4)
    let massless: Vec<&str> = art
        .links
        .iter()
        .filter(|l| l.mass == 0.0)
        .map(|l| l.joint.name.as_str())
        .collect();
    assert_eq!(
        massless,
        [
            "abdomen_z",
            "right_hip_x",
            "right_hip_z",
            "right_ankle_y",
            "left_hip_x",
            "left_hip_z",
            "left_ankle_y",
            "right_shoulder1",
            "left_shoulder1"
        ]
    );
    let j = |n: &str| &art.links[m.link_index(n).unwrap()].joint;
    for knee in ["right_knee", "left_knee"] {
        let k = j(knee);
        assert_eq!(
            (k.target_ke, k.target_kd, k.armature),
            (5.0, 0.1, 0.007),
            "{knee}"
        );
        assert!(rel(k.limit_lower, (-160f64).to_radians(), 1e-12));
        assert!(rel(k.limit_upper, 2f64.to_radians(), 1e-12));
    }
    let ay = j("abdomen_y");
    assert_eq!((ay.target_ke, ay.target_kd, ay.armature), (20.0, 5.0, 0.01));
    let ankle = j("left_ankle_x");
    assert_eq!(
        (ankle.target_ke, ankle.target_kd, ankle.armature),
        (2.0, 1.0, 0.006)
    );
    assert_eq!(art.links[0].joint.armature, 0.0);
    // hip_z, a second joint at the same place: X_pj = 0 (joint pos − previous joint pos)
    assert_eq!(j("right_hip_z").x_pj.p, [0.0; 3]);
    // the first thigh joint: pelvis body pos (0, −.1, −.04) minus abdomen_x pos (0, 0, .1)
    let p = j("right_hip_x").x_pj.p;
    assert!(
        (p[1] + 0.1).abs() < 1e-12 && (p[2] + 0.14).abs() < 1e-12,
        "{p:?}"
    );
    assert_eq!(
        m.body_names[m.link_index("right_hip_y").unwrap()],
        "right_thigh"
    );
    assert_eq!(m.body_link("right_thigh"), m.link_index("right_hip_y"));
}

// ------------------------------------------------------------------------------ Bruce

const BRUCE_TOTAL: f64 = 4.6459;
const BRUCE_ARMS: f64 = 0.04931686 * 2.0 + 0.024 + 0.03136525 + 0.05244037 * 2.0;

fn total_mass(art: &Articulation) -> f64 {
    art.links.iter().map(|l| l.mass).sum()
}

/// World pose of each link at q = 0 (joint motion identity): the chain of joint frames.
fn rest_poses(art: &Articulation) -> Vec<Transform<f64>> {
    let mut out: Vec<Transform<f64>> = Vec::new();
    for l in &art.links {
        let x = match l.parent {
            None => l.joint.x_pj,
            Some(p) => out[p].mul(&l.joint.x_pj),
        };
        out.push(x);
    }
    out
}

#[test]
fn bruce_loads_with_urdf_masses() {
    let opts = UrdfOptions {
        floating: true,
        ..Default::default()
    };
    let m = load_urdf(robot_path("bruce.urdf"), &opts).unwrap();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let art = m.clone().build().unwrap();
    assert_eq!(art.links.len(), 17);
    assert_eq!((art.n_q, art.n_qd), (7 + 16, 6 + 16));
    assert_eq!(art.links[0].joint.kind, JointKind::Free);
    assert_eq!(m.joint_names[0], "root");
    assert_eq!(m.body_names[0], "base_link");
    assert!(
        rel(total_mass(&art), BRUCE_TOTAL, 1e-3),
        "{}",
        total_mass(&art)
    );
    // URDF inertials are used as written (rpy 0): thigh mass, COM and the full tensor
    let thigh = &art.links[m.link_index("hip_pitch_r").unwrap()];
    assert_eq!(thigh.mass, 0.72848988);
    for (c, e) in thigh.com.iter().zip([0.14071429, -0.0086817, 0.00167429]) {
        assert!((c - e).abs() < 1e-15, "{:?}", thigh.com);
    }
    assert!((thigh.inertia[0][1] + 0.00065644).abs() < 1e-15);
    assert!((thigh.inertia[1][0] + 0.00065644).abs() < 1e-15);
    // joints: axis z, limits and dflex's URDF defaults
    let hip_roll_l = &art.links[m.link_index("hip_roll_l").unwrap()].joint;
    assert_eq!(
        (hip_roll_l.limit_lower, hip_roll_l.limit_upper),
        (-0.7853, 2.3561)
    );
    for l in &art.links[1..] {
        assert_eq!(l.joint.axis, [0.0, 0.0, 1.0]);
        assert_eq!(
            (l.joint.armature, l.joint.limit_ke, l.joint.limit_kd),
            (0.01, 100.0, 1.0)
        );
    }
    // one foot box per foot: 8 corners each, on the ankle links
    assert_eq!(art.contacts.len(), 16);
    let feet = [
        m.body_link("ankle_pitch_link_r"),
        m.body_link("ankle_pitch_link_l"),
    ];
    assert!(art.contacts.iter().all(|c| feet.contains(&Some(c.link))));
    // at the zero pose the legs hang straight down, the soles are flat 0.4285 m below the
    // hips (thigh + shank + 0.0235) and the toes (+y of the foot frame) point along +x
    let poses = rest_poses(&art);
    for (side, foot) in [(-1.0, feet[0].unwrap()), (1.0, feet[1].unwrap())] {
        let x = &poses[foot];
        assert!(
            (x.p[1] - side * 0.075855745).abs() < 1e-6,
            "{side}: {:?}",
            x.p
        );
        assert!(
            (x.p[2] - (-0.039765 - 0.204949408 - 0.199880614)).abs() < 1e-6,
            "{:?}",
            x.p
        );
        let corners: Vec<[f64; 3]> = art
            .contacts
            .iter()
            .filter(|c| c.link == foot)
            .map(|c| x.point(c.point))
            .collect();
        let zmin = corners.iter().map(|c| c[2]).fold(f64::INFINITY, f64::min);
        let on_sole: Vec<_> = corners
            .iter()
            .filter(|c| (c[2] - zmin).abs() < 1e-9)
            .collect();
        assert_eq!(on_sole.len(), 4, "flat sole");
        assert!((zmin - (x.p[2] - 0.0235)).abs() < 1e-6);
        let xmax = corners
            .iter()
            .map(|c| c[0])
            .fold(f64::NEG_INFINITY, f64::max);
        let xmin = corners.iter().map(|c| c[0]).fold(f64::INFINITY, f64::min);
        assert!(
            (xmax - (x.p[0] + 0.058)).abs() < 1e-6,
            "toe {xmax} vs ankle {}",
            x.p[0]
        );
        assert!((xmin - (x.p[0] - 0.042)).abs() < 1e-6, "heel {xmin}");
    }
}

#[test]
fn bruce_legs_only() {
    let legs: Vec<String> = [
        "hip_yaw",
        "hip_roll",
        "hip_pitch",
        "knee_pitch",
        "ankle_pitch",
    ]
    .iter()
    .flat_map(|j| [format!("{j}_r"), format!("{j}_l")])
    .collect();
    let merge = UrdfOptions {
        floating: true,
        keep_joints: Some(legs.clone()),
        ..Default::default()
    };
    let m = load_urdf(robot_path("bruce.urdf"), &merge).unwrap();
    let art = m.clone().build().unwrap();
    assert_eq!(art.links.len(), 11);
    assert_eq!((art.n_q, art.n_qd), (17, 16));
    // arms welded onto the base: mass kept, base COM moves up toward the shoulders
    assert!(rel(total_mass(&art), BRUCE_TOTAL, 1e-3));
    assert!(rel(art.links[0].mass, 1.31688922 + BRUCE_ARMS, 1e-9));
    assert!(art.links[0].com[2] > 0.0614);
    assert!(m.link_index("shoulder_pitch_r").is_none());

    let remove = UrdfOptions {
        dropped_joints: DroppedJoints::Remove,
        ..merge
    };
    let art = load_urdf(robot_path("bruce.urdf"), &remove)
        .unwrap()
        .build()
        .unwrap();
    assert_eq!((art.n_q, art.n_qd), (17, 16));
    assert!(
        rel(total_mass(&art), BRUCE_TOTAL - BRUCE_ARMS, 1e-3),
        "{}",
        total_mass(&art)
    );
    assert!(rel(art.links[0].mass, 1.31688922, 1e-9));

    let bad = UrdfOptions {
        keep_joints: Some(vec!["tail".into()]),
        ..Default::default()
    };
    let e = load_urdf(robot_path("bruce.urdf"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tail") && e.contains("keep_joints"), "{e}");
}

/// dflex's `urdf_load` (trap 3) on DiffRL's cart-pole dimensions reproduces the values
/// read from dflex: cart 50 kg, pole 2.5 kg with COM (0, 0, 0.5).
#[test]
fn urdf_dflex_mode_takes_mass_from_collision_boxes() {
    let text = r#"<robot name="cartpole">
      <link name="slideBar"/>
      <link name="cart">
        <inertial><mass value="1"/><inertia ixx="1" ixy="0" ixz="0" iyy="1" iyz="0" izz="1"/></inertial>
        <collision><geometry><box size="0.5 0.5 0.2"/></geometry></collision>
      </link>
      <joint name="slider_to_cart" type="prismatic">
        <axis xyz="1 0 0"/><parent link="slideBar"/><child link="cart"/>
        <limit effort="1000" lower="-4" upper="4" velocity="100"/>
      </joint>
      <link name="pole">
        <inertial><mass value="10"/><inertia ixx="1" ixy="0" ixz="0" iyy="1" iyz="0" izz="1"/></inertial>
        <collision><origin xyz="0 0 0.5"/><geometry><box size="0.05 0.05 1.0"/></geometry></collision>
      </link>
      <joint name="cart_to_pole" type="continuous">
        <axis xyz="0 1 0"/><parent link="cart"/><child link="pole"/>
      </joint>
    </robot>"#;
    let opts = UrdfOptions {
        ground: false,
        ..UrdfOptions::dflex()
    };
    let m = parse_urdf_str(text, "cartpole.urdf", &opts).unwrap();
    assert_eq!(m.joint_names, ["root", "slider_to_cart", "cart_to_pole"]);
    let art = m.build().unwrap();
    assert_eq!(art.links[0].joint.kind, JointKind::Fixed);
    assert_eq!(art.links[0].mass, 0.0);
    assert!(rel(art.links[1].mass, 50.0, 1e-12));
    let expect = [1.20833, 1.20833, 2.08333];
    for i in 0..3 {
        assert!(rel(art.links[1].inertia[i][i], expect[i], 1e-4));
    }
    let pole = &art.links[2];
    assert!(rel(pole.mass, 2.5, 1e-12));
    assert_eq!(pole.com, [0.0, 0.0, 0.5]);
    let expect = [0.20885, 0.20885, 0.00104];
    for i in 0..3 {
        assert!(
            (pole.inertia[i][i] - expect[i]).abs() < 1e-5,
            "{}",
            pole.inertia[i][i]
        );
    }
    let cart = &art.links[1].joint;
    assert_eq!((cart.limit_lower, cart.limit_upper), (-4.0, 4.0));
    let pole = &art.links[2].joint;
    assert_eq!(
        (pole.limit_lower, pole.limit_upper),
        (-1e3, 1e3),
        "no <limit>: ±1e3"
    );
    assert_eq!(
        (pole.armature, pole.limit_ke, pole.limit_kd),
        (0.01, 100.0, 1.0)
    );
    assert!(art.contacts.is_empty());

    // with the URDF's inertials instead
    let art = parse_urdf_str(text, "cartpole.urdf", &UrdfOptions::default())
        .unwrap()
        .build()
        .unwrap();
    assert_eq!((art.links[1].mass, art.links[2].mass), (1.0, 10.0));
}

#[test]
fn urdf_world_link_floating_joint_and_cylinders() {
    let text = r#"<robot name="r">
      <link name="world"/>
      <link name="base">
        <inertial><origin xyz="0 0 0.1" rpy="0 0 1.5707963267948966"/><mass value="2"/>
          <inertia ixx="1" ixy="0" ixz="0" iyy="2" iyz="0" izz="3"/></inertial>
        <collision><origin xyz="0 0 0"/><geometry><cylinder radius="0.1" length="0.4"/></geometry></collision>
        <collision><geometry><mesh filename="base.stl"/></geometry></collision>
      </link>
      <joint name="free" type="floating"><parent link="world"/><child link="base"/></joint>
    </robot>"#;
    let m = parse_urdf_str(text, "r.urdf", &UrdfOptions::default()).unwrap();
    assert_eq!(m.warnings.len(), 1, "the mesh is reported");
    let art = m.build().unwrap();
    assert_eq!(art.links.len(), 1);
    assert_eq!(art.links[0].joint.kind, JointKind::Free);
    // inertial rpy rotates the tensor: yaw π/2 swaps xx and yy
    let i = art.links[0].inertia;
    assert!((i[0][0] - 2.0).abs() < 1e-12 && (i[1][1] - 1.0).abs() < 1e-12);
    assert_eq!(art.links[0].com, [0.0, 0.0, 0.1]);
    // the cylinder is a capsule along z: contact points at z = ±0.2
    match art.shapes[0].shape.geometry {
        Geometry::Capsule { radius, half_width } => assert_eq!((radius, half_width), (0.1, 0.2)),
        g => panic!("{g:?}"),
    }
    let mut z: Vec<f64> = art.contacts.iter().map(|c| c.point[2]).collect();
    z.sort_by(f64::total_cmp);
    assert!(
        (z[0] + 0.2).abs() < 1e-12 && (z[1] - 0.2).abs() < 1e-12,
        "{z:?}"
    );
}

// ------------------------------------------------------------------------------ errors

fn mjcf_err(text: &str) -> String {
    parse_mjcf_str(text, "bad.xml", &MjcfOptions::default())
        .unwrap_err()
        .to_string()
}

fn urdf_err(text: &str) -> String {
    parse_urdf_str(text, "bad.urdf", &UrdfOptions::default())
        .unwrap_err()
        .to_string()
}

fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{msg}` does not mention `{p}`");
    }
}

const BODY_OPEN: &str = r#"<mujoco><worldbody><body name="torso" pos="0 0 1">
  <joint name="root" type="free"/>"#;
const BODY_CLOSE: &str = "</body></worldbody></mujoco>";

#[test]
fn mjcf_errors_name_file_element_and_reason() {
    // unclosed tag
    let e = mjcf_err(r#"<mujoco><worldbody><body name="torso"></worldbody></mujoco>"#);
    assert_names(&e, &["bad.xml", "XML at line 1", "malformed XML"]);
    // unknown geom type
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<geom type="sphere" size="0.1"/><geom type="cylinder" size="0.1 0.2"/>{BODY_CLOSE}"#
    ));
    assert_names(
        &e,
        &[
            "bad.xml",
            "body \"torso\" > geom #2",
            "unsupported geom type `cylinder`",
        ],
    );
    // missing attribute
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<geom name="head" type="sphere"/>{BODY_CLOSE}"#
    ));
    assert_names(
        &e,
        &[
            "bad.xml",
            "body \"torso\" > geom \"head\"",
            "missing attribute `size`",
        ],
    );
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<body><joint type="hinge"/></body>{BODY_CLOSE}"#
    ));
    assert_names(&e, &["bad.xml", "joint #1", "missing attribute `name`"]);
    // bad number
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<body name="leg" pos="0 0 0"><joint name="hip_1" range="-40 forty"/></body>{BODY_CLOSE}"#
    ));
    assert_names(
        &e,
        &[
            "bad.xml",
            "body \"torso\" > body \"leg\" > joint \"hip_1\"",
            "line 2",
            "`range`",
            "`forty` is not a number",
        ],
    );
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<geom type="sphere" size="nan"/>{BODY_CLOSE}"#
    ));
    assert_names(&e, &["bad.xml", "geom #1", "not a finite number"]);
    // wrong counts and degenerate geometry
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<geom type="capsule" fromto="0 0 0 1 0" size="0.1"/>{BODY_CLOSE}"#
    ));
    assert_names(
        &e,
        &["bad.xml", "geom #1", "`fromto` needs 6 numbers, has 5"],
    );
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<geom type="capsule" fromto="1 0 0 1 0 0" size="0.1"/>{BODY_CLOSE}"#
    ));
    assert_names(&e, &["geom #1", "zero length"]);
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<geom type="capsule" size="0.1"/>{BODY_CLOSE}"#
    ));
    assert_names(&e, &["geom #1", "needs 2 numbers, has 1"]);
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<body name="b"><joint name="j" type="weld"/></body>{BODY_CLOSE}"#
    ));
    assert_names(&e, &["joint \"j\"", "unsupported joint type `weld`"]);
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<body name="b"><joint name="j" range="10 -10"/></body>{BODY_CLOSE}"#
    ));
    assert_names(&e, &["joint \"j\"", "lower"]);
    // a free joint below the root (the builder's error, with the element)
    let e = mjcf_err(&format!(
        r#"{BODY_OPEN}<body name="b"><joint name="j2" type="free"/></body>{BODY_CLOSE}"#
    ));
    assert_names(&e, &["bad.xml", "joint \"j2\"", "free joint"]);
    // structure
    assert_names(
        &mjcf_err("<robot/>"),
        &["bad.xml", "<robot>", "must be <mujoco>"],
    );
    assert_names(&mjcf_err("<mujoco/>"), &["bad.xml", "no <worldbody>"]);
    assert_names(&mjcf_err("<mujoco><worldbody/></mujoco>"), &["no body"]);
    // a missing file
    let e = load_mjcf("/nonexistent/robot.xml", &MjcfOptions::default())
        .unwrap_err()
        .to_string();
    assert_names(&e, &["/nonexistent/robot.xml", "cannot read"]);
}

/// Extensions where dflex would crash: a body without joints is welded to its parent's
/// link (geoms and child bodies offset by its pos); a joint-less root body is a fixed
/// link at its pos; boxes are supported.
#[test]
fn mjcf_jointless_bodies_and_boxes() {
    let text = r#"<mujoco><worldbody>
      <body name="base" pos="0 0 0.5"><geom type="box" size="0.1 0.2 0.3"/></body>
      <body name="torso" pos="0 0 1">
        <joint name="root" type="free"/>
        <geom type="sphere" size="0.1"/>
        <body name="aux" pos="0.2 0 0">
          <geom type="sphere" size="0.1" pos="0.1 0 0"/>
          <body name="leg" pos="0.1 0 0">
            <joint name="hip" axis="0 0 2"/>
            <geom type="sphere" size="0.05"/>
          </body>
        </body>
      </body>
    </worldbody></mujoco>"#;
    let m = parse_mjcf_str(text, "x.xml", &MjcfOptions::default()).unwrap();
    assert_eq!(m.joint_names, ["base", "root", "hip"]);
    assert_eq!(m.body_names, ["base", "torso", "leg"]);
    let art = m.build().unwrap();
    assert_eq!(art.links[0].joint.kind, JointKind::Fixed);
    assert_eq!(art.links[0].joint.x_pj.p, [0.0, 0.0, 0.5]);
    assert!(rel(art.links[0].mass, 1000.0 * 0.2 * 0.4 * 0.6, 1e-12));
    let torso_shapes: Vec<_> = art.shapes.iter().filter(|s| s.link == 1).collect();
    assert_eq!(torso_shapes.len(), 2);
    assert!((torso_shapes[1].shape.pose.p[0] - 0.3).abs() < 1e-12);
    let hip = &art.links[2].joint;
    assert!((hip.x_pj.p[0] - 0.3).abs() < 1e-12 && hip.axis == [0.0, 0.0, 1.0]);
    assert_eq!(art.links[2].parent, Some(1));
    // 8 box corners + 3 spheres
    assert_eq!(art.contacts.len(), 11);
}

const URDF_HEAD: &str = r#"<robot name="r"><link name="base"/><link name="leg"/>"#;

#[test]
fn urdf_errors_name_file_element_and_reason() {
    let e = urdf_err(r#"<robot name="r"><link name="base"></robot>"#);
    assert_names(&e, &["bad.urdf", "XML at line 1", "malformed XML"]);
    // unknown parent
    let e = urdf_err(&format!(
        r#"{URDF_HEAD}<joint name="hip_1" type="fixed"><parent link="torso"/><child link="leg"/></joint></robot>"#
    ));
    assert_names(
        &e,
        &[
            "bad.urdf",
            "<joint name=\"hip_1\">",
            "parent link \"torso\" is not defined",
        ],
    );
    // missing attribute
    let e = urdf_err(&format!(
        r#"{URDF_HEAD}<joint name="hip_1"><parent link="base"/><child link="leg"/></joint></robot>"#
    ));
    assert_names(
        &e,
        &[
            "bad.urdf",
            "<joint name=\"hip_1\">",
            "missing attribute `type`",
        ],
    );
    // bad number
    let e = urdf_err(&format!(
        r#"{URDF_HEAD}<joint name="hip_1" type="revolute"><origin xyz="0 0 x"/><parent link="base"/><child link="leg"/><axis xyz="0 0 1"/><limit lower="-1" upper="1" effort="1" velocity="1"/></joint></robot>"#
    ));
    assert_names(
        &e,
        &[
            "bad.urdf",
            "<joint name=\"hip_1\">",
            "<origin>",
            "`xyz`",
            "`x` is not a number",
        ],
    );
    let e = urdf_err(
        r#"<robot name="r"><link name="base"><inertial><mass value="-1"/><inertia ixx="1" ixy="0" ixz="0" iyy="1" iyz="0" izz="1"/></inertial></link></robot>"#,
    );
    assert_names(&e, &["<link name=\"base\">", "<mass>", "negative mass"]);
    // unknown geometry
    let e = urdf_err(
        r#"<robot name="r"><link name="base"><collision><geometry><cone radius="1"/></geometry></collision></link></robot>"#,
    );
    assert_names(
        &e,
        &[
            "bad.urdf",
            "<link name=\"base\">",
            "<collision> #1",
            "unsupported geometry <cone>",
        ],
    );
    let e = urdf_err(
        r#"<robot name="r"><link name="base"><collision><geometry><box size="1 0 1"/></geometry></collision></link></robot>"#,
    );
    assert_names(&e, &["<box>", "must be positive"]);
    // tree structure
    let e = urdf_err(&format!(
        r#"{URDF_HEAD}<link name="arm"/><joint name="a" type="fixed"><parent link="base"/><child link="leg"/></joint><joint name="b" type="fixed"><parent link="arm"/><child link="leg"/></joint></robot>"#
    ));
    assert_names(
        &e,
        &["<joint name=\"b\">", "already the child of joint \"a\""],
    );
    let e = urdf_err(&format!(r#"{URDF_HEAD}</robot>"#));
    assert_names(&e, &["bad.urdf", "several root links (base, leg)"]);
    let e = urdf_err(&format!(
        r#"{URDF_HEAD}<joint name="p" type="planar"><parent link="base"/><child link="leg"/></joint></robot>"#
    ));
    assert_names(&e, &["<joint name=\"p\">", "planar"]);
    let e = urdf_err(&format!(
        r#"{URDF_HEAD}<joint name="f" type="floating"><parent link="base"/><child link="leg"/></joint></robot>"#
    ));
    assert_names(&e, &["<joint name=\"f\">", "floating joint"]);
    assert_names(
        &urdf_err("<mujoco/>"),
        &["bad.urdf", "<mujoco>", "must be <robot>"],
    );
}

/// Every prefix of the shipped files parses to a model or an error, never a panic.
#[test]
fn truncated_files_never_panic() {
    for (file, is_urdf) in [
        ("hopper.xml", false),
        ("humanoid.xml", false),
        ("bruce.urdf", true),
    ] {
        let text = std::fs::read_to_string(robot_path(file)).unwrap();
        let mut cut = 0;
        while cut < text.len() {
            if text.is_char_boundary(cut) {
                let part = &text[..cut];
                let r = std::panic::catch_unwind(|| {
                    if is_urdf {
                        parse_urdf_str(part, file, &UrdfOptions::default()).map(|_| ())
                    } else {
                        parse_mjcf_str(part, file, &MjcfOptions::default()).map(|_| ())
                    }
                });
                let r = r.unwrap_or_else(|_| panic!("{file} cut at {cut} panicked"));
                if let Err(e) = r {
                    assert!(e.to_string().starts_with(file), "{e}");
                }
            }
            cut += 37;
        }
    }
}

#[test]
fn options_round_trip_through_serde() {
    let o = MjcfOptions::diffrl_hopper();
    let s = serde_json::to_string(&o).unwrap();
    let back: MjcfOptions = serde_json::from_str(&s).unwrap();
    let (a, b) = (back.root_x_pj.unwrap().r, o.root_x_pj.unwrap().r);
    for i in 0..3 {
        for k in 0..3 {
            assert!((a[i][k] - b[i][k]).abs() < 1e-15);
        }
    }
    assert_eq!(back.contact, o.contact);
    let partial: MjcfOptions = serde_json::from_str(r#"{"density": 500.0}"#).unwrap();
    assert_eq!(
        (partial.density, partial.damping, partial.armature),
        (500.0, 1.0, 0.01)
    );
    let u: UrdfOptions =
        serde_json::from_str(r#"{"keep_joints": ["a"], "dropped_joints": "remove"}"#).unwrap();
    assert_eq!(u.dropped_joints, DroppedJoints::Remove);
    assert!(parse_mjcf_str("<mujoco/>", "x", &MjcfOptions { density: -1.0, ..o }).is_err());
}
