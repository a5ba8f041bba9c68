//! `mbmix rollout`: replay an action sequence through a task's dynamics, and optionally
//! differentiate the summed reward with respect to the actions and the initial state by
//! a reverse sweep through the task's VJPs.
//!
//! The replay uses [`Task::step`] directly: no resets, no time limit, no termination.

use crate::error::{Error, Result};
use diff_core::Task;
use ndarray::{Array2, Array3, ArrayD, ArrayView2, ArrayView3, Axis};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A replayed trajectory.
#[derive(Clone, Debug)]
pub struct Trajectory {
    /// `[steps + 1, N, state_dim]`, the initial state first.
    pub states: Array3<f32>,
    /// `[steps + 1, N, obs_dim]`.
    pub observations: Array3<f32>,
    /// `[steps, N]`: reward of the transition from `states[t]` under `actions[t]`.
    pub rewards: Array2<f32>,
}

/// Gradients of the summed reward `Σ_t Σ_i r_t,i` of a trajectory.
#[derive(Clone, Debug)]
pub struct RolloutGrad {
    /// `[steps, N, act_dim]`.
    pub actions: Array3<f32>,
    /// `[N, state_dim]`.
    pub initial_state: Array2<f32>,
}

/// Replays `actions` `[steps, N, act_dim]` from `state0` `[N, state_dim]`
/// ([`diff_core::open_loop_rollout`]) and observes every visited state.
pub fn replay(
    task: &dyn Task,
    state0: ArrayView2<f32>,
    actions: ArrayView3<f32>,
) -> Result<Trajectory> {
    let window = diff_core::open_loop_rollout(task, state0, actions)?;
    let (steps, n, _) = actions.dim();
    let mut observations = Array3::zeros((steps + 1, n, task.spec().obs_dim));
    for t in 0..=steps {
        task.observe(
            window.states.index_axis(Axis(0), t),
            observations.index_axis_mut(Axis(0), t),
        );
    }
    Ok(Trajectory {
        states: window.states,
        observations,
        rewards: window.rewards,
    })
}

/// The gradient of the summed reward of `traj` (replayed from `actions`) with respect to
/// the actions and the initial state ([`diff_core::open_loop_vjp`] with unit weights).
pub fn summed_reward_grad(
    task: &dyn Task,
    traj: &Trajectory,
    actions: ArrayView3<f32>,
) -> Result<RolloutGrad> {
    let weights = Array2::<f32>::ones(traj.rewards.dim());
    let (actions_grad, initial_state) =
        diff_core::open_loop_vjp(task, traj.states.view(), actions, weights.view())?;
    Ok(RolloutGrad {
        actions: actions_grad,
        initial_state,
    })
}

/// What `mbmix rollout` writes (as nested JSON arrays).
pub struct RolloutOutput {
    /// Task name.
    pub task: String,
    /// Names of the state columns.
    pub state_names: Vec<String>,
    /// Names of the observation columns.
    pub obs_names: Vec<String>,
    /// `[steps + 1, N, state_dim]`.
    pub states: Array3<f32>,
    /// `[steps + 1, N, obs_dim]`.
    pub observations: Array3<f32>,
    /// `[steps, N]`.
    pub rewards: Array2<f32>,
    /// With `--grad`: ∂(Σ rewards)/∂actions, `[steps, N, act_dim]`.
    pub grad_actions: Option<Array3<f32>>,
    /// With `--grad`: ∂(Σ rewards)/∂(initial state), `[N, state_dim]`.
    pub grad_initial_state: Option<Array2<f32>>,
}

/// Options of `mbmix rollout`.
#[derive(Clone, Debug)]
pub struct RolloutOptions {
    /// Task name.
    pub task: String,
    /// Actions, JSON or `.npy`, `[steps, N, act_dim]`.
    pub actions: PathBuf,
    /// Initial state, JSON `[N, state_dim]`; default: a seeded stochastic reset.
    pub state: Option<PathBuf>,
    /// Seed of the reset when no state is given.
    pub seed: u64,
    /// Also compute gradients.
    pub grad: bool,
    /// Output JSON file.
    pub out: PathBuf,
}

/// Runs `mbmix rollout`: loads the inputs, replays, optionally differentiates, writes the
/// output JSON.
pub fn run(opts: &RolloutOptions) -> Result<RolloutOutput> {
    let task = crate::registry::make_task(&opts.task)?;
    let spec = task.spec().clone();
    let actions = load_actions(&opts.actions, spec.act_dim)?;
    let n = actions.dim().1;
    let state0 = match &opts.state {
        Some(path) => load_state(path, n, spec.state_dim)?,
        None => {
            let mut rng = diff_core::seeded(opts.seed, 0);
            let mut s = Array2::zeros((n, spec.state_dim));
            for row in s.rows_mut() {
                task.reset_state(&mut rng, true, row);
            }
            s
        }
    };
    let traj = replay(task.as_ref(), state0.view(), actions.view())?;
    let grad = if opts.grad {
        Some(summed_reward_grad(task.as_ref(), &traj, actions.view())?)
    } else {
        None
    };
    let (grad_actions, grad_initial_state) = match grad {
        Some(g) => (Some(g.actions), Some(g.initial_state)),
        None => (None, None),
    };
    let out = RolloutOutput {
        task: spec.name.clone(),
        state_names: spec.state_names.clone(),
        obs_names: spec.obs_names.clone(),
        states: traj.states,
        observations: traj.observations,
        rewards: traj.rewards,
        grad_actions,
        grad_initial_state,
    };
    let json = serde_json::to_string(&NestedOutput(&out)).map_err(|e| Error::Serialise {
        path: opts.out.clone(),
        reason: e.to_string(),
    })?;
    crate::run::write_atomic(&opts.out, json.as_bytes())?;
    Ok(out)
}

/// Serialises the arrays of a [`RolloutOutput`] as nested JSON arrays (ndarray's own
/// serde format is a `{v, dim, data}` object).
struct NestedOutput<'a>(&'a RolloutOutput);

impl Serialize for NestedOutput<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let o = self.0;
        let mut map = ser.serialize_map(None)?;
        map.serialize_entry("task", &o.task)?;
        map.serialize_entry("state_names", &o.state_names)?;
        map.serialize_entry("obs_names", &o.obs_names)?;
        map.serialize_entry("states", &nested3(o.states.view()))?;
        map.serialize_entry("observations", &nested3(o.observations.view()))?;
        map.serialize_entry("rewards", &nested2(o.rewards.view()))?;
        if let Some(g) = &o.grad_actions {
            map.serialize_entry("grad_actions", &nested3(g.view()))?;
        }
        if let Some(g) = &o.grad_initial_state {
            map.serialize_entry("grad_initial_state", &nested2(g.view()))?;
        }
        map.end()
    }
}

fn nested2(a: ArrayView2<f32>) -> Vec<Vec<f32>> {
    a.rows().into_iter().map(|r| r.to_vec()).collect()
}

fn nested3(a: ArrayView3<f32>) -> Vec<Vec<Vec<f32>>> {
    a.outer_iter().map(nested2).collect()
}

/// Loads actions `[steps, N, act_dim]` from a `.npy` file (f32 or f64) or a JSON nested
/// array.
pub fn load_actions(path: &Path, act_dim: usize) -> Result<Array3<f32>> {
    let array = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        read_npy_f32(path)?
    } else {
        read_json_array(path)?
    };
    let shape = array.shape().to_vec();
    if shape.len() != 3 || shape[2] != act_dim || shape[0] == 0 || shape[1] == 0 {
        return Err(Error::Shape {
            path: path.to_path_buf(),
            what: "actions".into(),
            expected: format!("[steps ≥ 1, N ≥ 1, {act_dim}]"),
            got: format!("{shape:?}"),
        });
    }
    let (steps, n) = (shape[0], shape[1]);
    array
        .into_shape_with_order((steps, n, act_dim))
        .map_err(|e| Error::BadInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Loads an initial state `[n, state_dim]` from a JSON nested array.
pub fn load_state(path: &Path, n: usize, state_dim: usize) -> Result<Array2<f32>> {
    let array = read_json_array(path)?;
    let shape = array.shape().to_vec();
    if shape != [n, state_dim] {
        return Err(Error::Shape {
            path: path.to_path_buf(),
            what: "initial state".into(),
            expected: format!("[{n}, {state_dim}] (N from the actions)"),
            got: format!("{shape:?}"),
        });
    }
    array
        .into_shape_with_order((n, state_dim))
        .map_err(|e| Error::BadInput {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn read_npy_f32(path: &Path) -> Result<ArrayD<f32>> {
    use ndarray_npy::{read_npy, ReadNpyError};
    let bad = |e: ReadNpyError| Error::BadInput {
        path: path.to_path_buf(),
        reason: format!("not a readable .npy array of f32 or f64: {e}"),
    };
    let array = match read_npy::<_, ArrayD<f32>>(path) {
        Ok(a) => a,
        Err(ReadNpyError::WrongDescriptor(_)) => read_npy::<_, ArrayD<f64>>(path)
            .map_err(bad)?
            .mapv(|x| x as f32),
        Err(ReadNpyError::Io(cause)) => {
            return Err(Error::Io {
                action: "cannot read",
                path: path.to_path_buf(),
                cause,
            })
        }
        Err(e) => return Err(bad(e)),
    };
    check_finite(path, array)
}

fn read_json_array(path: &Path) -> Result<ArrayD<f32>> {
    let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadInput {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })?;
    let mut shape = Vec::new();
    let mut probe = &value;
    while let serde_json::Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut data = Vec::with_capacity(shape.iter().product());
    flatten(&value, &shape, &mut Vec::new(), &mut data).map_err(|reason| Error::BadInput {
        path: path.to_path_buf(),
        reason,
    })?;
    let array = ArrayD::from_shape_vec(shape, data).map_err(|e| Error::BadInput {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    check_finite(path, array)
}

/// Flattens a rectangular nested JSON array of numbers with the given shape.
fn flatten(
    v: &serde_json::Value,
    shape: &[usize],
    at: &mut Vec<usize>,
    out: &mut Vec<f32>,
) -> Result<(), String> {
    let depth = at.len();
    match (v, shape.get(depth)) {
        (serde_json::Value::Array(items), Some(&len)) => {
            if items.len() != len {
                return Err(format!(
                    "ragged array: element {at:?} has {} entries, expected {len}",
                    items.len()
                ));
            }
            for (i, item) in items.iter().enumerate() {
                at.push(i);
                flatten(item, shape, at, out)?;
                at.pop();
            }
            Ok(())
        }
        (serde_json::Value::Number(x), None) => {
            out.push(x.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        (other, _) => Err(format!(
            "expected a nested array of numbers of depth {}, found {} at {at:?}",
            shape.len(),
            match other {
                serde_json::Value::Array(_) => "a deeper array",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Null => "null",
                serde_json::Value::Object(_) => "an object",
            }
        )),
    }
}

fn check_finite(path: &Path, array: ArrayD<f32>) -> Result<ArrayD<f32>> {
    if let Some((i, _)) = array.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::BadInput {
            path: path.to_path_buf(),
            reason: format!("non-finite value at flat index {i}"),
        });
    }
    Ok(array)
}
