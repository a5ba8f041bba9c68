//! End-to-end tests of the `mbmix` commands on the real CartPole swing-up task with small
//! SHAC configurations (8 envs, horizon 8), driven through `bench_suite::cli::run`.

mod common;

use bench_suite::cli::{self, Exit};
use bench_suite::run::{read_metrics, Summary};
use bench_suite::{rollout, Error};
use common::*;

#[test]
fn list_shows_tasks_with_dimensions_and_algorithms() {
    let (result, out) = mbmix(&["list"]);
    assert_eq!(result.expect("list"), Exit::Success);
    let line = out
        .lines()
        .find(|l| l.contains("cartpole-swingup"))
        .unwrap_or_else(|| panic!("no cartpole line in {out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[1..5], ["4", "5", "1", "240"], "{line}");
    for algo in ["shac", "bptt", "ppo"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(algo)),
            "{algo} listed: {out}"
        );
    }
}

#[test]
fn unknown_task_and_algorithm_list_the_known_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("run");
    let (result, _) = mbmix(&[
        "train",
        "--task",
        "pendulum",
        "--algo",
        "shac",
        "--out",
        s(&out),
    ]);
    let msg = result.expect_err("unknown task").to_string();
    assert!(
        msg.contains("unknown task `pendulum`") && msg.contains("cartpole-swingup"),
        "{msg}"
    );
    let (result, _) = mbmix(&[
        "train",
        "--task",
        "cartpole-swingup",
        "--algo",
        "sac",
        "--out",
        s(&out),
    ]);
    let msg = result.expect_err("unknown algorithm").to_string();
    assert!(
        msg.contains("unknown algorithm `sac`") && msg.contains("shac"),
        "{msg}"
    );
    let (result, _) = mbmix(&[
        "rollout",
        "--task",
        "snu-humanoid",
        "--actions",
        "a.json",
        "--out",
        "o.json",
    ]);
    let msg = result.expect_err("unknown rollout task").to_string();
    assert!(msg.contains("cartpole-swingup"), "{msg}");
    assert!(!out.exists(), "no run directory for a failed start");
}

/// `--device cuda` without a usable CUDA path (no `cuda` feature, no GPU, or the
/// incomplete GPU pipeline) is a clear error before anything is written.
#[test]
fn device_cuda_without_a_gpu_path_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("run");
    let (result, _) = mbmix(&[
        "train",
        "--task",
        "cartpole-swingup",
        "--algo",
        "shac",
        "--device",
        "cuda",
        "--out",
        s(&out),
    ]);
    let msg = result.expect_err("no CUDA path").to_string();
    assert!(msg.contains("device `cuda` unavailable"), "{msg}");
    assert!(!out.exists(), "no run directory for a failed start");
    let parsed = <cli::Cli as clap::Parser>::try_parse_from(["mbmix", "train", "--device", "tpu"]);
    let msg = parsed.expect_err("unknown device").to_string();
    assert!(msg.contains("`tpu` is not a device"), "{msg}");
}

#[test]
fn bad_config_file_names_field_and_file_and_creates_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("run");
    for (text, field) in [
        ("[shac]\nhorizonn = 4\n", "shac.horizonn"),
        ("[shac]\nactor_units = \"wide\"\n", "shac.actor_units"),
        ("checkpoint_every = true\n", "checkpoint_every"),
    ] {
        let cfg = write(tmp.path(), "broken.toml", text);
        let (result, _) = mbmix(&[
            "train",
            "--task",
            "cartpole-swingup",
            "--algo",
            "shac",
            "--config",
            s(&cfg),
            "--out",
            s(&out),
        ]);
        let msg = result.expect_err("bad config").to_string();
        assert!(msg.contains(&format!("`{field}`")), "field named: {msg}");
        assert!(msg.contains("broken.toml"), "file named: {msg}");
        assert!(!out.exists());
    }
}

#[test]
fn train_writes_the_run_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = train_small(tmp.path(), "run", &["--seed", "3"]);
    let metrics = read_metrics(&dir.join("metrics.jsonl")).expect("metrics");
    // Epoch 0 (untrained evaluation) and one line per epoch.
    assert_eq!(
        metrics.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(metrics[4].env_steps, 4 * 64);
    let evaluated: Vec<usize> = metrics
        .iter()
        .filter(|m| m.eval_return.is_some())
        .map(|m| m.epoch)
        .collect();
    assert_eq!(evaluated, [0, 2, 4]);
    assert!(metrics[1..]
        .iter()
        .all(|m| m.actor_loss.is_some() && m.actor_grad_norm.is_some()));
    for name in [
        "epoch-000002.safetensors",
        "epoch-000004.safetensors",
        "latest.safetensors",
    ] {
        assert!(dir.join("checkpoints").join(name).is_file(), "{name}");
    }
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary"))
            .expect("summary parses");
    assert_eq!(
        (summary.epochs, summary.env_steps, summary.seed),
        (4, 256, 3)
    );
    assert_eq!(summary.final_eval.episodes, 4);
    assert_eq!(summary.final_eval.returns.len(), 4);
    assert_eq!(Some(summary.final_eval.mean_return), metrics[4].eval_return);
    assert_eq!(summary.initial_eval_return, metrics[0].eval_return);
    let config = std::fs::read_to_string(dir.join("config.toml")).expect("config.toml");
    assert!(
        config.contains("seed = 3") && config.contains("num_envs = 8"),
        "{config}"
    );
    let svg = std::fs::read_to_string(dir.join("learning_curve.svg")).expect("plot");
    assert!(svg.contains("<svg") && svg.contains("eval return"));

    // `eval` reproduces the final evaluation with the run's evaluation seed.
    let (result, out) = mbmix(&["eval", "--run", s(&dir), "--json"]);
    assert_eq!(result.expect("eval"), Exit::Success);
    let report: serde_json::Value = serde_json::from_str(&out).expect("eval --json");
    assert_eq!(
        report["mean_return"].as_f64().map(|x| x as f32),
        Some(summary.final_eval.mean_return)
    );
    let (result, out) = mbmix(&["eval", "--run", s(&dir), "--episodes", "2", "--seed", "9"]);
    assert_eq!(result.expect("eval"), Exit::Success);
    assert!(
        out.contains("2 episodes (stochastic initial states, seed 9)") && out.contains('±'),
        "{out}"
    );
    // From the deterministic initial state every episode is the same one.
    let (result, out) = mbmix(&[
        "eval",
        "--run",
        s(&dir),
        "--episodes",
        "3",
        "--deterministic-init",
        "--json",
    ]);
    assert_eq!(result.expect("eval"), Exit::Success);
    let report: serde_json::Value = serde_json::from_str(&out).expect("eval --json");
    assert_eq!(report["stochastic_init"], serde_json::Value::Bool(false));
    let returns: Vec<f64> = report["returns"]
        .as_array()
        .expect("returns")
        .iter()
        .map(|r| r.as_f64().expect("number"))
        .collect();
    assert_eq!(returns.len(), 3);
    assert!(
        returns.iter().all(|r| *r == returns[0]),
        "identical episodes: {returns:?}"
    );
    assert_ne!(
        report["mean_return"].as_f64().map(|x| x as f32),
        Some(summary.final_eval.mean_return)
    );
}

#[test]
fn existing_out_without_resume_is_refused_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("taken");
    std::fs::create_dir(&out).expect("mkdir");
    write(&out, "notes.txt", "mine");
    let before = snapshot(&out);
    let (result, _) = mbmix(&[
        "train",
        "--task",
        "cartpole-swingup",
        "--algo",
        "shac",
        "--out",
        s(&out),
    ]);
    let err = result.expect_err("refused");
    assert!(matches!(err, Error::RunDirExists(_)), "{err}");
    assert!(err.to_string().contains("--resume"), "{err}");
    assert_eq!(snapshot(&out), before);
}

#[test]
fn two_runs_with_the_same_seed_agree_except_wall_clock() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = train_small(tmp.path(), "a", &["--seed", "5"]);
    let b = train_small(tmp.path(), "b", &["--seed", "5"]);
    let ma = read_metrics(&a.join("metrics.jsonl")).expect("a");
    let mb = read_metrics(&b.join("metrics.jsonl")).expect("b");
    assert_eq!(deterministic_part(&ma), deterministic_part(&mb));
    let c = train_small(tmp.path(), "c", &["--seed", "6"]);
    let mc = read_metrics(&c.join("metrics.jsonl")).expect("c");
    assert_ne!(
        deterministic_part(&ma),
        deterministic_part(&mc),
        "the seed matters"
    );
}

#[test]
fn resume_truncates_metrics_to_the_checkpoint_and_continues_the_same_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let full = train_small(tmp.path(), "full", &[]);
    let reference = read_metrics(&full.join("metrics.jsonl")).expect("metrics");
    // Simulate a crash after epoch 3: the newest checkpoint is epoch 2, the metrics run
    // to epoch 4 and there is no summary yet.
    let ckpt = full.join("checkpoints");
    std::fs::copy(
        ckpt.join("epoch-000002.safetensors"),
        ckpt.join("latest.safetensors"),
    )
    .expect("copy");
    std::fs::remove_file(ckpt.join("epoch-000004.safetensors")).expect("rm");
    std::fs::remove_file(full.join("summary.json")).expect("rm");
    let (result, _) = mbmix(&["train", "--out", s(&full), "--resume", "--quiet"]);
    assert_eq!(result.expect("resume"), Exit::Success);
    let resumed = read_metrics(&full.join("metrics.jsonl")).expect("metrics");
    assert_eq!(resumed.len(), 5, "epochs 0..=4, each once");
    assert_eq!(deterministic_part(&resumed), deterministic_part(&reference));
    assert!(full.join("summary.json").is_file());
    assert!(ckpt.join("epoch-000004.safetensors").is_file());

    // Resuming a finished run with more epochs extends it.
    let (result, _) = mbmix(&[
        "train",
        "--out",
        s(&full),
        "--resume",
        "--epochs",
        "6",
        "--quiet",
    ]);
    assert_eq!(result.expect("extend"), Exit::Success);
    let extended = read_metrics(&full.join("metrics.jsonl")).expect("metrics");
    assert_eq!(
        extended.iter().map(|m| m.epoch).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5, 6]
    );
    let config = std::fs::read_to_string(full.join("config.toml")).expect("config");
    assert!(config.contains("max_epochs = 6"), "{config}");

    let before = snapshot(&full);
    let (result, _) = mbmix(&["train", "--out", s(&full), "--resume", "--epochs", "3"]);
    let msg = result.expect_err("cannot shrink").to_string();
    assert!(
        msg.contains("--epochs 3") && msg.contains("6 epochs"),
        "{msg}"
    );
    assert_eq!(snapshot(&full), before);

    // A resumed run keeps its own configuration.
    let (result, _) = mbmix(&["train", "--out", s(&full), "--resume", "--seed", "99"]);
    let msg = result.expect_err("seed conflict").to_string();
    assert!(
        msg.contains("--seed") && msg.contains("config.toml"),
        "{msg}"
    );
}

#[test]
fn corrupt_checkpoint_on_resume_is_an_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = train_small(tmp.path(), "run", &["--epochs", "2"]);
    std::fs::write(
        dir.join("checkpoints").join("latest.safetensors"),
        b"not a checkpoint",
    )
    .expect("corrupt");
    let before = snapshot(&dir);
    let (result, _) = mbmix(&[
        "train",
        "--out",
        s(&dir),
        "--resume",
        "--epochs",
        "4",
        "--quiet",
    ]);
    let msg = result.expect_err("corrupt checkpoint").to_string();
    assert!(msg.contains("checkpoint") && msg.contains(s(&dir)), "{msg}");
    assert_eq!(snapshot(&dir), before, "nothing overwritten");
    let (result, _) = mbmix(&["eval", "--run", s(&dir)]);
    assert!(result.is_err(), "eval of a corrupt checkpoint fails");
}

#[test]
fn ctrl_c_checkpoints_at_the_epoch_boundary_and_resume_finishes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write(tmp.path(), "small.toml", SMALL);
    let dir = tmp.path().join("run");
    let args = [
        "train",
        "--task",
        "cartpole-swingup",
        "--algo",
        "shac",
        "--config",
        s(&cfg),
        "--out",
        s(&dir),
        "--quiet",
    ];
    let (result, out) = mbmix_with_stop(&args, true);
    let exit = result.expect("interrupted cleanly");
    assert_eq!(exit, Exit::Interrupted);
    assert_eq!(exit.code(), cli::EXIT_INTERRUPTED);
    assert!(out.contains("--resume"), "{out}");
    assert!(dir.join("checkpoints/latest.safetensors").is_file());
    assert!(!dir.join("summary.json").exists());
    let (result, _) = mbmix(&["train", "--out", s(&dir), "--resume", "--quiet"]);
    assert_eq!(result.expect("resume"), Exit::Success);
    assert_eq!(
        read_metrics(&dir.join("metrics.jsonl"))
            .expect("metrics")
            .len(),
        5
    );
}

/// Rollout inputs: 3 steps × 2 envs of actions inside (−1, 1), and initial states away
/// from the angle wrap at θ = ±π (where the reward's derivative jumps).
const ACTIONS: [[[f32; 1]; 2]; 3] = [[[0.3], [-0.6]], [[-0.2], [0.5]], [[0.7], [0.1]]];
const STATE0: [[f32; 4]; 2] = [[0.2, -2.0, 0.5, 1.0], [-0.4, 1.2, -0.3, -0.8]];

fn cartpole() -> std::sync::Arc<dyn diff_core::Task> {
    bench_suite::registry::make_task("cartpole-swingup").expect("cartpole")
}

#[test]
fn rollout_reads_json_and_npy_and_checks_shapes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let actions_json = write(
        tmp.path(),
        "actions.json",
        &serde_json::to_string(&ACTIONS).expect("json"),
    );
    let state_json = write(
        tmp.path(),
        "state.json",
        &serde_json::to_string(&STATE0).expect("json"),
    );
    let out_json = tmp.path().join("from-json.json");
    let (result, _) = mbmix(&[
        "rollout",
        "--task",
        "cartpole-swingup",
        "--actions",
        s(&actions_json),
        "--state",
        s(&state_json),
        "--out",
        s(&out_json),
    ]);
    assert_eq!(result.expect("rollout"), Exit::Success);
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).expect("out")).expect("json");
    assert_eq!(a["state_names"][1], "pole_theta");
    assert_eq!(a["states"].as_array().map(Vec::len), Some(4));
    let start: Vec<Vec<f32>> = serde_json::from_value(a["states"][0].clone()).expect("[N, S]");
    assert_eq!(start, STATE0.map(|r| r.to_vec()).to_vec());
    assert_eq!(a["observations"][3][1].as_array().map(Vec::len), Some(5));
    assert_eq!(a["rewards"].as_array().map(Vec::len), Some(3));
    assert!(a.get("grad_actions").is_none());

    // The same actions as an f64 .npy give the same trajectory.
    let npy = tmp.path().join("actions.npy");
    let arr = ndarray::Array3::from_shape_fn((3, 2, 1), |(t, i, _)| f64::from(ACTIONS[t][i][0]));
    ndarray_npy::write_npy(&npy, &arr).expect("npy");
    let out_npy = tmp.path().join("from-npy.json");
    let (result, _) = mbmix(&[
        "rollout",
        "--task",
        "cartpole-swingup",
        "--actions",
        s(&npy),
        "--state",
        s(&state_json),
        "--out",
        s(&out_npy),
    ]);
    assert_eq!(result.expect("rollout npy"), Exit::Success);
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_npy).expect("out")).expect("json");
    assert_eq!(a["states"], b["states"]);
    assert_eq!(a["rewards"], b["rewards"]);

    // Without --state, a seeded reset: same seed, same start.
    let (r1, _) = mbmix(&[
        "rollout",
        "--task",
        "cartpole-swingup",
        "--actions",
        s(&npy),
        "--seed",
        "4",
        "--out",
        s(&out_npy),
    ]);
    r1.expect("seeded");
    let c1 = std::fs::read_to_string(&out_npy).expect("out");
    let (r2, _) = mbmix(&[
        "rollout",
        "--task",
        "cartpole-swingup",
        "--actions",
        s(&npy),
        "--seed",
        "4",
        "--out",
        s(&out_npy),
    ]);
    r2.expect("seeded");
    assert_eq!(c1, std::fs::read_to_string(&out_npy).expect("out"));

    // Wrong shapes name the file, the expected and the actual shape.
    let two_d = write(tmp.path(), "flat.json", "[[0.1, 0.2], [0.3, 0.4]]");
    let (result, _) = mbmix(&[
        "rollout",
        "--task",
        "cartpole-swingup",
        "--actions",
        s(&two_d),
        "--out",
        s(&out_npy),
    ]);
    let msg = result.expect_err("2-D actions").to_string();
    assert!(
        msg.contains("flat.json") && msg.contains("[2, 2]") && msg.contains("1]"),
        "{msg}"
    );
    let bad_state = write(tmp.path(), "state3.json", "[[0, 0, 0], [0, 0, 0]]");
    let (result, _) = mbmix(&[
        "rollout",
        "--task",
        "cartpole-swingup",
        "--actions",
        s(&npy),
        "--state",
        s(&bad_state),
        "--out",
        s(&out_npy),
    ]);
    let msg = result.expect_err("bad state").to_string();
    assert!(
        msg.contains("state3.json") && msg.contains("[2, 4]") && msg.contains("[2, 3]"),
        "{msg}"
    );
    let ragged = write(tmp.path(), "ragged.json", "[[[0.1]], [[0.2], [0.3]]]");
    let (result, _) = mbmix(&[
        "rollout",
        "--task",
        "cartpole-swingup",
        "--actions",
        s(&ragged),
        "--out",
        s(&out_npy),
    ]);
    let msg = result.expect_err("ragged").to_string();
    assert!(
        msg.contains("ragged.json") && msg.contains("ragged"),
        "{msg}"
    );
}

#[test]
fn rollout_gradient_matches_finite_differences() {
    use diff_core::gradcheck::{fd_gradient, rel_err};
    let task = cartpole();
    let actions = ndarray::Array3::from_shape_fn((3, 2, 1), |(t, i, _)| ACTIONS[t][i][0]);
    let state0 = ndarray::Array2::from_shape_fn((2, 4), |(i, j)| STATE0[i][j]);
    let traj = rollout::replay(task.as_ref(), state0.view(), actions.view()).expect("replay");
    let grad = rollout::summed_reward_grad(task.as_ref(), &traj, actions.view()).expect("grad");
    let summed = |s0: &ndarray::Array2<f32>, a: &ndarray::Array3<f32>| -> f64 {
        let t = rollout::replay(task.as_ref(), s0.view(), a.view()).expect("replay");
        t.rewards.iter().map(|&r| f64::from(r)).sum()
    };

    let a0: Vec<f64> = actions.iter().map(|&x| f64::from(x)).collect();
    let fd_a = fd_gradient(
        &mut |x| {
            summed(
                &state0,
                &ndarray::Array3::from_shape_fn((3, 2, 1), |(t, i, _)| x[2 * t + i] as f32),
            )
        },
        &a0,
        1e-2,
    );
    let an_a: Vec<f64> = grad.actions.iter().map(|&x| f64::from(x)).collect();
    let err = rel_err(&an_a, &fd_a, 1e-3);
    assert!(
        err < 1e-2,
        "d/d actions: rel err {err:.2e}\n adjoint {an_a:?}\n fd      {fd_a:?}"
    );

    let s0: Vec<f64> = state0.iter().map(|&x| f64::from(x)).collect();
    let fd_s = fd_gradient(
        &mut |x| {
            summed(
                &ndarray::Array2::from_shape_fn((2, 4), |(i, j)| x[4 * i + j] as f32),
                &actions,
            )
        },
        &s0,
        1e-2,
    );
    let an_s: Vec<f64> = grad.initial_state.iter().map(|&x| f64::from(x)).collect();
    let err = rel_err(&an_s, &fd_s, 1e-3);
    assert!(
        err < 1e-2,
        "d/d state: rel err {err:.2e}\n adjoint {an_s:?}\n fd      {fd_s:?}"
    );
    assert!(
        an_s.iter().any(|g| g.abs() > 1e-2),
        "a non-trivial gradient: {an_s:?}"
    );

    // The CLI writes the same gradients.
    let tmp = tempfile::tempdir().expect("tempdir");
    let actions_json = write(
        tmp.path(),
        "a.json",
        &serde_json::to_string(&ACTIONS).expect("json"),
    );
    let state_json = write(
        tmp.path(),
        "s.json",
        &serde_json::to_string(&STATE0).expect("json"),
    );
    let out = tmp.path().join("out.json");
    let (result, _) = mbmix(&[
        "rollout",
        "--task",
        "cartpole-swingup",
        "--actions",
        s(&actions_json),
        "--state",
        s(&state_json),
        "--grad",
        "--out",
        s(&out),
    ]);
    result.expect("rollout --grad");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("out")).expect("json");
    let flat = |v: &serde_json::Value| -> Vec<f32> {
        let mut out = Vec::new();
        let mut stack = vec![v];
        while let Some(x) = stack.pop() {
            match x {
                serde_json::Value::Array(items) => stack.extend(items.iter().rev()),
                other => out.push(other.as_f64().unwrap_or(f64::NAN) as f32),
            }
        }
        out
    };
    assert_eq!(
        flat(&v["grad_actions"]),
        grad.actions.iter().copied().collect::<Vec<_>>()
    );
    assert_eq!(
        flat(&v["grad_initial_state"]),
        grad.initial_state.iter().copied().collect::<Vec<_>>()
    );
}

#[test]
fn short_shac_run_learns_to_swing() {
    // 200 epochs of 16 envs × 32 steps (102,400 env steps): a few seconds. Over seeds
    // 0..6 this setting ends between −580 and −910 with 62–100% of the evaluation
    // episodes upright at the end (the full 500-epoch preset reaches about −520).
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        tmp.path(),
        "learn.toml",
        "seed = 2\neval_every = 100\neval_episodes = 8\ncheckpoint_every = 200\n\
         [shac]\nnum_envs = 16\nhorizon = 32\nmax_epochs = 200\ncritic_iterations = 8\n",
    );
    let dir = tmp.path().join("learn");
    let (result, _) = mbmix(&[
        "train",
        "--task",
        "cartpole-swingup",
        "--algo",
        "shac",
        "--config",
        s(&cfg),
        "--out",
        s(&dir),
        "--quiet",
    ]);
    assert_eq!(result.expect("training"), Exit::Success);
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary"))
            .expect("summary parses");
    let untrained = summary.initial_eval_return.expect("epoch-0 evaluation");
    let trained = summary.final_eval.mean_return;
    let success = summary
        .final_eval
        .success_rate
        .expect("cartpole defines success");
    let still = do_nothing_return(8, summary.final_eval.seed);
    eprintln!("trained {trained:.1} ({success} upright), untrained {untrained:.1}, zero action {still:.1}");
    // Same start states for all three returns. Beating the untrained policy alone could
    // mean "stopped flailing"; beating the zero-action policy (pole left hanging, about
    // −2200) by 1000 and holding the pole upright at the end of at least half of the
    // episodes means it swings the pole up.
    assert!(
        trained > untrained + 1000.0 && trained > still + 1000.0 && success >= 0.5,
        "trained {trained:.1} ({success} upright), untrained {untrained:.1}, zero action {still:.1}"
    );
}

#[test]
fn exploding_gradient_stops_with_the_epoch_and_keeps_what_was_written() {
    // An absurd actor learning rate without gradient clipping makes SHAC's abort rule fire
    // (actor gradient norm NaN or above 1e6) within a few epochs.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        tmp.path(),
        "boom.toml",
        "eval_every = 1\neval_episodes = 2\ncheckpoint_every = 1\n\
         [shac]\nnum_envs = 4\nhorizon = 4\nmax_epochs = 20\nactor_lr = 1e8\n\
         truncate_grads = false\nobs_rms = false\n",
    );
    let dir = tmp.path().join("boom");
    let (result, _) = mbmix(&[
        "train",
        "--task",
        "cartpole-swingup",
        "--algo",
        "shac",
        "--config",
        s(&cfg),
        "--out",
        s(&dir),
        "--quiet",
    ]);
    let err = result.expect_err("the run must abort");
    let msg = err.to_string();
    let Error::Training {
        epoch, checkpoint, ..
    } = err
    else {
        panic!("expected a training error, got {msg}");
    };
    assert!(
        msg.contains(&format!("epoch {epoch}")) && msg.contains("gradient"),
        "{msg}"
    );
    assert!(epoch >= 2, "the first epoch's gradient is finite: {msg}");
    // Every epoch before the failing one is recorded and checkpointed; nothing after.
    let metrics = read_metrics(&dir.join("metrics.jsonl")).expect("metrics");
    assert_eq!(metrics.last().map(|m| m.epoch), Some(epoch - 1));
    assert_eq!(checkpoint, Some(epoch - 1));
    assert!(dir
        .join(format!("checkpoints/epoch-{:06}.safetensors", epoch - 1))
        .is_file());
    assert!(!dir.join("summary.json").exists());
}

/// A binary run without its robot files (`MBMIX_ROBOTS_DIR` pointing nowhere) reports the
/// missing file and exits non-zero instead of panicking; `mbmix list` still lists the rest.
#[test]
fn missing_robot_files_are_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nowhere = tmp.path().join("no-robots");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mbmix"))
        .env("MBMIX_ROBOTS_DIR", &nowhere)
        .args(["train", "--task", "ant", "--algo", "shac", "--out"])
        .arg(tmp.path().join("run"))
        .output()
        .expect("run mbmix");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("ant.xml") && !err.contains("panicked"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mbmix"))
        .env("MBMIX_ROBOTS_DIR", &nowhere)
        .arg("list")
        .output()
        .expect("run mbmix");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cartpole-swingup")
            && text.contains("ant")
            && text.contains("cannot be built"),
        "{text}"
    );
}

/// `mbmix train --task cartpole-swingup --algo <bptt|ppo> --epochs 2` with the task's
/// presets (DiffRL's CartPole configs: BPTT 64 envs × 240 steps, PPO 32 envs × 240 steps).
#[test]
fn baselines_train_cartpole_with_their_presets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (algo, steps_per_epoch, has_critic) in [("bptt", 64 * 240, false), ("ppo", 32 * 240, true)]
    {
        let out = tmp.path().join(algo);
        let (result, _) = mbmix(&[
            "train",
            "--task",
            "cartpole-swingup",
            "--algo",
            algo,
            "--epochs",
            "2",
            "--out",
            s(&out),
            "--quiet",
        ]);
        assert_eq!(result.expect("training succeeds"), Exit::Success, "{algo}");
        let metrics = read_metrics(&out.join("metrics.jsonl")).expect("metrics");
        assert_eq!(
            metrics.iter().map(|m| m.epoch).collect::<Vec<_>>(),
            [0, 1, 2],
            "{algo}"
        );
        assert_eq!(metrics[2].env_steps, 2 * steps_per_epoch, "{algo}");
        assert!(metrics[1..].iter().all(|m| m.actor_loss.is_some()
            && m.actor_grad_norm.is_some()
            && m.critic_loss.is_some() == has_critic
            && m.critic_lr.is_some() == has_critic));
        assert!(metrics[2].eval_return.is_some());
        let config = std::fs::read_to_string(out.join("config.toml")).expect("config.toml");
        assert!(
            config.contains(&format!("[{algo}]")) && !config.contains("[shac]"),
            "{config}"
        );
        assert!(out.join("checkpoints").join("latest.safetensors").is_file());
        let (result, text) = mbmix(&["eval", "--run", s(&out), "--episodes", "2"]);
        assert_eq!(result.expect("eval"), Exit::Success, "{algo}: {text}");
    }
}

/// Small BPTT and PPO configurations: 8 envs × 8 steps per epoch.
const SMALL_BASELINES: &str = "\
eval_every = 2
eval_episodes = 4
checkpoint_every = 2

[bptt]
num_envs = 8
horizon = 8
max_epochs = 4

[ppo]
num_envs = 8
horizon = 8
max_epochs = 4
num_minibatches = 2
mini_epochs = 2
";

fn train_small_baseline(tmp: &std::path::Path, algo: &str, name: &str) -> std::path::PathBuf {
    // Only the section of the algorithm that runs may appear.
    let text: String = SMALL_BASELINES
        .split("\n\n")
        .filter(|part| !part.starts_with('[') || part.starts_with(&format!("[{algo}]")))
        .collect::<Vec<_>>()
        .join("\n\n");
    let cfg = write(tmp, &format!("small-{algo}.toml"), &text);
    let out = tmp.join(name);
    train_cartpole(algo, &cfg, &out, &[]);
    out
}

#[test]
fn baseline_runs_are_deterministic_and_resume_the_same_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for algo in ["bptt", "ppo"] {
        let full = train_small_baseline(tmp.path(), algo, &format!("{algo}-full"));
        let twin = train_small_baseline(tmp.path(), algo, &format!("{algo}-twin"));
        let reference = read_metrics(&full.join("metrics.jsonl")).expect("metrics");
        let again = read_metrics(&twin.join("metrics.jsonl")).expect("metrics");
        assert_eq!(
            deterministic_part(&reference),
            deterministic_part(&again),
            "{algo}: same seed, same run"
        );
        assert_eq!(reference.len(), 5);
        // Crash after epoch 3: resume from the epoch-2 checkpoint.
        let ckpt = full.join("checkpoints");
        std::fs::copy(
            ckpt.join("epoch-000002.safetensors"),
            ckpt.join("latest.safetensors"),
        )
        .expect("copy");
        std::fs::remove_file(ckpt.join("epoch-000004.safetensors")).expect("rm");
        std::fs::remove_file(full.join("summary.json")).expect("rm");
        let (result, _) = mbmix(&["train", "--out", s(&full), "--resume", "--quiet"]);
        assert_eq!(result.expect("resume"), Exit::Success, "{algo}");
        let resumed = read_metrics(&full.join("metrics.jsonl")).expect("metrics");
        assert_eq!(
            deterministic_part(&resumed),
            deterministic_part(&reference),
            "{algo}: resumed run"
        );
        // A checkpoint of another algorithm is refused.
        let other = if algo == "bptt" { "ppo" } else { "bptt" };
        let foreign = train_small_baseline(tmp.path(), other, &format!("{algo}-foreign"));
        std::fs::copy(
            foreign.join("checkpoints").join("latest.safetensors"),
            ckpt.join("latest.safetensors"),
        )
        .expect("copy");
        let (result, _) = mbmix(&["eval", "--run", s(&full)]);
        let msg = result.expect_err("foreign checkpoint").to_string();
        assert!(msg.contains("checkpoint"), "{msg}");
    }
}
