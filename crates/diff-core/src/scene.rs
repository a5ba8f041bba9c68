//! A renderer-neutral description of what a task's state looks like: a list of primitive
//! shapes in world coordinates (metres, **Y up**) and an optional ground plane.
//!
//! Tasks produce it through [`crate::Task::scene`]; renderers (the `mbmix render` command)
//! project it however they like. Nothing here depends on a drawing library.

use serde::{Deserialize, Serialize};

/// One drawable primitive in world coordinates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Prim {
    /// A capsule: the segment `a`–`b` swept by a sphere of `radius`.
    Capsule {
        a: [f32; 3],
        b: [f32; 3],
        radius: f32,
    },
    /// A sphere.
    Sphere { center: [f32; 3], radius: f32 },
    /// An oriented box: its corners are `center + rot · (±hx, ±hy, ±hz)`, with `rot` the
    /// row-major world rotation of the box frame (its columns are the box axes in the
    /// world).
    Box {
        center: [f32; 3],
        rot: [[f32; 3]; 3],
        half_extents: [f32; 3],
    },
    /// A cloud of particles of one radius (deformable and fluid tasks).
    Points {
        positions: Vec<[f32; 3]>,
        radius: f32,
    },
}

/// What a state looks like: primitives plus, for tasks with ground contact, the height of
/// the ground plane `y = ground_y`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// The primitives, in no particular order.
    pub prims: Vec<Prim>,
    /// Height of the ground plane (its normal is +Y), when the task has one.
    pub ground_y: Option<f32>,
    /// A point that moves with the system (for articulations, the root link's origin),
    /// which a following camera keeps centred; `None` when nothing is a natural centre.
    pub focus: Option<[f32; 3]>,
}

impl Prim {
    /// The points that bound the primitive's extent (without its radius, see
    /// [`Prim::radius`]): the capsule's end points, the sphere's centre, the box's eight
    /// corners, the particles.
    pub fn key_points(&self) -> Vec<[f32; 3]> {
        match self {
            Prim::Capsule { a, b, .. } => vec![*a, *b],
            Prim::Sphere { center, .. } => vec![*center],
            Prim::Box {
                center,
                rot,
                half_extents: h,
            } => {
                let mut out = Vec::with_capacity(8);
                for sx in [-1.0f32, 1.0] {
                    for sy in [-1.0f32, 1.0] {
                        for sz in [-1.0f32, 1.0] {
                            let l = [sx * h[0], sy * h[1], sz * h[2]];
                            let mut p = *center;
                            for (r, pr) in p.iter_mut().enumerate() {
                                *pr += rot[r][0] * l[0] + rot[r][1] * l[1] + rot[r][2] * l[2];
                            }
                            out.push(p);
                        }
                    }
                }
                out
            }
            Prim::Points { positions, .. } => positions.clone(),
        }
    }

    /// The radius swept around [`Prim::key_points`] (0 for boxes).
    pub fn radius(&self) -> f32 {
        match self {
            Prim::Capsule { radius, .. }
            | Prim::Sphere { radius, .. }
            | Prim::Points { radius, .. } => *radius,
            Prim::Box { .. } => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_corners_follow_the_rotation() {
        // 90° about z: local x → world y
        let b = Prim::Box {
            center: [1.0, 2.0, 3.0],
            rot: [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
            half_extents: [0.5, 0.1, 0.2],
        };
        let pts = b.key_points();
        assert_eq!(pts.len(), 8);
        let max_y = pts.iter().map(|p| p[1]).fold(f32::MIN, f32::max);
        let max_x = pts.iter().map(|p| p[0]).fold(f32::MIN, f32::max);
        assert!((max_y - 2.5).abs() < 1e-6, "{max_y}");
        assert!((max_x - 1.1).abs() < 1e-6, "{max_x}");
        assert_eq!(b.radius(), 0.0);
    }
}
