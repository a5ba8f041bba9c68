//! What an articulation looks like: link world transforms from the joint coordinates (the
//! [`Articulation::kinematics`] stage) and every collision shape as a
//! [`diff_core::Prim`]. Visualisation only: nothing here is differentiated.

use crate::batch::{RigidEnv, RigidTask};
use crate::dynamics::{SimParams, Workspace};
use crate::model::{Articulation, Geometry};
use crate::spatial::{Transform, M3, V3};
use diff_core::{Prim, Scene};
use ndarray::ArrayView1;

impl Articulation {
    /// World transform of every link (link frame → world) at the joint coordinates `q`
    /// (`[n_q]`), computed by the [`Articulation::kinematics`] stage.
    ///
    /// # Panics
    /// When `q.len() != n_q`.
    pub fn link_transforms(&self, q: &[f64]) -> Vec<Transform<f64>> {
        assert_eq!(
            q.len(),
            self.n_q,
            "link_transforms: q must have n_q entries"
        );
        let params = SimParams {
            dt: 1.0,
            substeps: 1,
            mm_freq: 1,
        };
        let mut ws = Workspace::<f64>::new(self, &params);
        let sub = &mut ws.subs[0];
        sub.q.copy_from_slice(q);
        self.kinematics(sub);
        sub.links.iter().map(|l| l.x_sc).collect()
    }

    /// Height above the ground (y) of the lowest ground-contact point at coordinates `q`,
    /// its shape's thickness taken off (negative: that deep in the ground); +∞ without
    /// contact points.
    pub fn lowest_contact(&self, q: &[f64]) -> f64 {
        let xs = self.link_transforms(q);
        self.contacts
            .iter()
            .map(|c| xs[c.link].point(c.point)[1] - c.thickness)
            .fold(f64::INFINITY, f64::min)
    }

    /// The articulation at coordinates `q` as a [`Scene`]: one primitive per shape in
    /// [`Articulation::shapes`] (links without shapes draw nothing), the ground plane
    /// `y = 0` when the articulation has ground contacts, and the root link's origin as
    /// the focus.
    pub fn scene(&self, q: &[f64]) -> Scene {
        let xs = self.link_transforms(q);
        let prims = self
            .shapes
            .iter()
            .map(|ls| {
                let x = xs[ls.link].mul(&ls.shape.pose);
                shape_prim(&ls.shape.geometry, &x)
            })
            .collect();
        Scene {
            prims,
            ground_y: (!self.contacts.is_empty()).then_some(0.0),
            focus: xs.first().map(|x| v3_f32(x.p)),
        }
    }
}

fn v3_f32(v: V3<f64>) -> [f32; 3] {
    [v[0] as f32, v[1] as f32, v[2] as f32]
}

fn m3_f32(m: &M3<f64>) -> [[f32; 3]; 3] {
    [v3_f32(m[0]), v3_f32(m[1]), v3_f32(m[2])]
}

/// A shape with world pose `x` as a primitive (capsules lie along their local x axis).
fn shape_prim(g: &Geometry, x: &Transform<f64>) -> Prim {
    match *g {
        Geometry::Box { half_extents } => Prim::Box {
            center: v3_f32(x.p),
            rot: m3_f32(&x.r),
            half_extents: v3_f32(half_extents),
        },
        Geometry::Sphere { radius } => Prim::Sphere {
            center: v3_f32(x.p),
            radius: radius as f32,
        },
        Geometry::Capsule { radius, half_width } => Prim::Capsule {
            a: v3_f32(x.point([-half_width, 0.0, 0.0])),
            b: v3_f32(x.point([half_width, 0.0, 0.0])),
            radius: radius as f32,
        },
    }
}

/// The scene of a state row `[q (n_q), q̇ (n_qd)]` of a rigid task (only `q` matters);
/// `None` when the row is shorter than `n_q`.
pub fn state_scene<D: RigidTask>(env: &RigidEnv<D>, state: ArrayView1<f32>) -> Option<Scene> {
    let art = env.def().articulation();
    if state.len() < art.n_q {
        return None;
    }
    let q: Vec<f64> = state.iter().take(art.n_q).map(|&v| f64::from(v)).collect();
    Some(art.scene(&q))
}

#[cfg(test)]
mod tests {
    use crate::model::{ArticulationBuilder, Joint, JointKind, Shape};
    use crate::spatial::Transform;
    use crate::tasks::CartPoleSwingUp;
    use crate::Geometry;
    use diff_core::{Prim, Task};
    use ndarray::arr1;
    use std::f64::consts::FRAC_PI_2;

    /// `(center, rot, half_extents)` of a box primitive.
    type BoxPrim = ([f32; 3], [[f32; 3]; 3], [f32; 3]);

    fn boxes(scene: &diff_core::Scene) -> Vec<BoxPrim> {
        scene
            .prims
            .iter()
            .filter_map(|p| match p {
                Prim::Box {
                    center,
                    rot,
                    half_extents,
                } => Some((*center, *rot, *half_extents)),
                _ => None,
            })
            .collect()
    }

    fn close(a: [f32; 3], b: [f32; 3]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    /// The box's long local axis (the one with the largest half extent) in the world.
    fn long_axis(rot: &[[f32; 3]; 3], h: &[f32; 3]) -> [f32; 3] {
        let k = (0..3).max_by(|&i, &j| h[i].total_cmp(&h[j])).unwrap_or(0);
        [rot[0][k], rot[1][k], rot[2][k]]
    }

    #[test]
    fn cartpole_scene_has_the_cart_at_x_and_the_pole_up() {
        let task = CartPoleSwingUp::new();
        // x = 1, θ = 0 (upright)
        let scene = task
            .scene(arr1(&[1.0f32, 0.0, 0.0, 0.0]).view())
            .expect("scene");
        let b = boxes(&scene);
        assert_eq!(
            b.len(),
            2,
            "cart and pole boxes; the fixed base draws nothing"
        );
        assert_eq!(scene.prims.len(), 2);
        assert_eq!(scene.ground_y, None, "CartPole has no ground");
        let (cart_c, _, cart_h) = b[0];
        let (pole_c, pole_r, pole_h) = b[1];
        assert!(cart_h[0] > pole_h[0], "first box is the cart: {cart_h:?}");
        assert!(close(cart_c, [1.0, 2.5, 0.0]), "cart centre {cart_c:?}");
        // the pole's local +z (its long axis, 0.5 m half length, centre 0.5 m up the
        // pole) maps to world +y through the root's −π/2 rotation about x
        let up = long_axis(&pole_r, &pole_h);
        assert!(close(up, [0.0, 1.0, 0.0]), "pole axis {up:?}");
        assert!(close(pole_c, [1.0, 3.0, 0.0]), "pole centre {pole_c:?}");
        let top = Prim::Box {
            center: pole_c,
            rot: pole_r,
            half_extents: pole_h,
        }
        .key_points()
        .iter()
        .map(|p| p[1])
        .fold(f32::MIN, f32::max);
        assert!((top - 3.5).abs() < 1e-5, "pole tip at y = {top}");
        assert_eq!(scene.focus, Some([0.0, 2.5, 0.0]), "fixed base origin");

        // θ = −π: hanging down; θ = π/2: horizontal, along ±x
        let down = task
            .scene(arr1(&[-0.5f32, -std::f32::consts::PI, 0.0, 0.0]).view())
            .expect("scene");
        let (c, _, _) = boxes(&down)[1];
        assert!(close(c, [-0.5, 2.0, 0.0]), "hanging pole centre {c:?}");
        let side = task
            .scene(arr1(&[0.0f32, std::f32::consts::FRAC_PI_2, 0.0, 0.0]).view())
            .expect("scene");
        let (c, r, h) = boxes(&side)[1];
        assert!(
            (c[1] - 2.5).abs() < 1e-5 && (c[0].abs() - 0.5).abs() < 1e-5,
            "{c:?}"
        );
        assert!((long_axis(&r, &h)[0].abs() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn capsules_spheres_and_ground() {
        // a revolute link about z at the origin holding a capsule along its x and a sphere
        let mut b = ArticulationBuilder::default();
        let j = Joint::new(
            "hinge",
            JointKind::Revolute,
            [0.0, 0.0, 1.0],
            Transform::default(),
        );
        let capsule = Shape::new(
            Geometry::Capsule {
                radius: 0.1,
                half_width: 0.5,
            },
            Transform {
                p: [0.5, 0.0, 0.0],
                ..Transform::default()
            },
        );
        let ball = Shape::new(
            Geometry::Sphere { radius: 0.2 },
            Transform {
                p: [1.0, 0.0, 0.0],
                ..Transform::default()
            },
        );
        b.add_link(None, j, &[capsule, ball]).expect("link");
        let art = b.build().expect("build");
        assert!(!art.contacts.is_empty());
        let scene = art.scene(&[FRAC_PI_2]);
        assert_eq!(scene.ground_y, Some(0.0));
        match &scene.prims[0] {
            Prim::Capsule { a, b, radius } => {
                assert!(close(*a, [0.0, 0.0, 0.0]), "{a:?}");
                assert!(close(*b, [0.0, 1.0, 0.0]), "{b:?}");
                assert!((radius - 0.1).abs() < 1e-7);
            }
            p => panic!("expected a capsule, got {p:?}"),
        }
        match &scene.prims[1] {
            Prim::Sphere { center, radius } => {
                assert!(close(*center, [0.0, 1.0, 0.0]), "{center:?}");
                assert!((radius - 0.2).abs() < 1e-7);
            }
            p => panic!("expected a sphere, got {p:?}"),
        }
    }
}
