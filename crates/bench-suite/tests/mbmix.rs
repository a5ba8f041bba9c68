//! End-to-end tests of `mbmix train --algo mbmix` (and its ablation presets) on the real
//! CartPole swing-up with small configurations, driven through `bench_suite::cli::run`.

mod common;

use bench_suite::cli::Exit;
use bench_suite::run::{read_metrics, Summary};
use bench_suite::Error;
use common::*;
use std::path::{Path, PathBuf};

/// A small MB-MIX run: 8 envs × 8 steps per epoch, a tiny model, model from epoch 2 on,
/// diagnostics every second epoch.
const SMALL_MBMIX: &str = "\
eval_every = 2
eval_episodes = 4
checkpoint_every = 2

[mbmix.shac]
num_envs = 8
horizon = 8
max_epochs = 4
critic_iterations = 2

[mbmix.rollout]
model_warmup_epochs = 1

[mbmix.model]
hidden = [16, 16]
iterations = 1
minibatches = 2
batch_size = 32

[mbmix.diagnostics]
every = 2
grad_variance_groups = 2
model_error_samples = 16
";

fn train_mbmix(tmp: &Path, name: &str, algo: &str, config: &str, extra: &[&str]) -> PathBuf {
    let cfg = write(tmp, &format!("{name}.toml"), config);
    let out = tmp.join(name);
    train_cartpole(algo, &cfg, &out, extra);
    out
}

#[test]
fn mbmix_run_writes_its_diagnostics_and_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = train_mbmix(tmp.path(), "a", "mbmix", SMALL_MBMIX, &["--seed", "3"]);
    let m = read_metrics(&a.join("metrics.jsonl")).expect("metrics");
    assert_eq!(
        m.iter().map(|l| l.epoch).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(m[1].model_used, Some(false), "warm-up epoch");
    assert_eq!(m[2].model_used, Some(true));
    assert!(m[2].model_actor_loss.is_some() && m[2].sim_actor_loss.is_some());
    assert!(m[1..].iter().all(|l| l.model_loss.is_some_and(|v| v > 0.0)));
    for l in &m[1..] {
        let diag = l.epoch % 2 == 0;
        assert_eq!(l.grad_var_mix.is_some(), diag, "epoch {}", l.epoch);
        assert_eq!(l.grad_var_shac.is_some(), diag, "epoch {}", l.epoch);
        assert_eq!(l.model_jacobian_err.is_some(), diag, "epoch {}", l.epoch);
    }
    // The lines of SHAC runs do not carry the MB-MIX fields.
    let text = std::fs::read_to_string(a.join("metrics.jsonl")).expect("metrics");
    assert!(text.contains("\"grad_var_mix\""));
    let shac = train_small(tmp.path(), "shac", &[]);
    let shac_text = std::fs::read_to_string(shac.join("metrics.jsonl")).expect("metrics");
    assert!(!shac_text.contains("model_") && !shac_text.contains("grad_var"));
    assert!(a.join("summary.json").is_file());
    assert!(a.join("checkpoints/epoch-000004.safetensors").is_file());

    let b = train_mbmix(tmp.path(), "b", "mbmix", SMALL_MBMIX, &["--seed", "3"]);
    let mb = read_metrics(&b.join("metrics.jsonl")).expect("metrics");
    assert_eq!(deterministic_part(&m), deterministic_part(&mb));
    let c = train_mbmix(tmp.path(), "c", "mbmix", SMALL_MBMIX, &["--seed", "4"]);
    let mc = read_metrics(&c.join("metrics.jsonl")).expect("metrics");
    assert_ne!(deterministic_part(&m), deterministic_part(&mc));
}

#[test]
fn mbmix_resumes_from_its_checkpoint_and_evaluates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = train_mbmix(tmp.path(), "run", "mbmix", SMALL_MBMIX, &[]);
    let (result, _) = mbmix(&[
        "train",
        "--out",
        s(&run),
        "--resume",
        "--epochs",
        "6",
        "--quiet",
    ]);
    assert_eq!(result.expect("resume"), Exit::Success);
    let m = read_metrics(&run.join("metrics.jsonl")).expect("metrics");
    assert_eq!(
        m.iter().map(|l| l.epoch).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5, 6]
    );
    // The resumed model starts with an empty buffer, one window (64 transitions) after
    // the first resumed epoch; training goes on with the model in use.
    assert_eq!(m[5].model_used, Some(true));
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).expect("summary"))
            .expect("summary parses");
    assert_eq!(summary.epochs, 6);
    assert_eq!(summary.algo, "mbmix");
    let (result, out) = mbmix(&["eval", "--run", s(&run), "--json"]);
    assert_eq!(result.expect("eval"), Exit::Success);
    assert!(out.contains("\"epoch\": 6"), "{out}");
}

#[test]
fn with_checkpoint_buffer_a_resumed_run_reproduces_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = SMALL_MBMIX.replace(
        "[mbmix.shac]",
        "[mbmix]\ncheckpoint_buffer = true\n\n[mbmix.shac]",
    );
    let full = train_mbmix(tmp.path(), "full", "mbmix", &config, &[]);
    let reference = read_metrics(&full.join("metrics.jsonl")).expect("metrics");
    // A crash after epoch 3: the newest checkpoint is epoch 2.
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
    assert_eq!(deterministic_part(&resumed), deterministic_part(&reference));
}

#[test]
fn ablation_presets_and_config_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Each ablation runs and its resolved config shows its change.
    for (algo, marker) in [
        ("mbmix-nomix", "lambda = 1.0"),
        ("mbmix-nomodel", "reading = \"sim_only\""),
        ("mbmix-mse", "form = \"none\""),
    ] {
        let two = SMALL_MBMIX.replace("max_epochs = 4", "max_epochs = 2");
        let run = train_mbmix(tmp.path(), algo, algo, &two, &[]);
        let config = std::fs::read_to_string(run.join("config.toml")).expect("config");
        assert!(config.contains(marker), "{algo}: {config}");
        assert!(config.contains(&format!("algo = \"{algo}\"")), "{config}");
    }
    let full = std::fs::read_to_string(tmp.path().join("mbmix-mse/config.toml")).expect("c");
    assert!(full.contains("[mbmix.model.sobolev]"), "{full}");

    let bad = |name: &str, text: &str| -> String {
        let cfg = write(tmp.path(), name, text);
        let (result, _) = mbmix(&[
            "train",
            "--task",
            "cartpole-swingup",
            "--algo",
            "mbmix",
            "--config",
            s(&cfg),
            "--out",
            s(&tmp.path().join(format!("{name}-run"))),
            "--quiet",
        ]);
        assert!(!tmp.path().join(format!("{name}-run")).exists());
        result.expect_err("invalid config").to_string()
    };
    let msg = bad("lambda.toml", "[mbmix.mix]\nlambda = 2.0\n");
    assert!(
        msg.contains("mix.lambda") && msg.contains("lambda.toml"),
        "{msg}"
    );
    let msg = bad("typo.toml", "[mbmix.rollout]\nreadin = \"B\"\n");
    assert!(msg.contains("`mbmix.rollout.readin`"), "{msg}");
    let msg = bad("reading.toml", "[mbmix.rollout]\nreading = \"D\"\n");
    assert!(msg.contains("mbmix.rollout.reading"), "{msg}");
    let msg = bad(
        "prefix.toml",
        "[mbmix.rollout]\nreading = \"B\"\nsim_prefix = 40\n",
    );
    assert!(msg.contains("rollout.sim_prefix"), "{msg}");
    let msg = bad("shac.toml", "[shac]\nnum_envs = 8\n");
    assert!(msg.contains("[shac]") && msg.contains("mbmix"), "{msg}");
    let msg = bad("model.toml", "[mbmix.model]\nhidden = [0]\n");
    assert!(msg.contains("model.hidden[0]"), "{msg}");
}

#[test]
fn short_mbmix_run_improves_the_cartpole_policy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = "\
seed = 2
eval_every = 100
eval_episodes = 8
checkpoint_every = 100

[mbmix.shac]
num_envs = 16
horizon = 32
max_epochs = 100
critic_iterations = 8

[mbmix.rollout]
model_warmup_epochs = 10

[mbmix.model]
hidden = [32, 32]
iterations = 2
minibatches = 2
batch_size = 128

[mbmix.diagnostics]
every = 50
";
    let t0 = std::time::Instant::now();
    let run = train_mbmix(tmp.path(), "learn", "mbmix", config, &[]);
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).expect("summary"))
            .expect("summary parses");
    let untrained = summary.initial_eval_return.expect("epoch-0 evaluation");
    let trained = summary.final_eval.mean_return;
    let still = do_nothing_return(8, summary.final_eval.seed);
    let m = read_metrics(&run.join("metrics.jsonl")).expect("metrics");
    let last = m.last().expect("lines");
    eprintln!(
        "MB-MIX CartPole: trained {trained:.1} ({:?} upright), untrained {untrained:.1}, \
         zero action {still:.1}; {:.1} s; model errors {:?} / {:?}; grad var mix {:?} shac {:?}",
        summary.final_eval.success_rate,
        t0.elapsed().as_secs_f64(),
        last.model_next_state_err,
        last.model_jacobian_err,
        last.grad_var_mix,
        last.grad_var_shac,
    );
    assert!(
        trained > untrained + 500.0 && trained > still,
        "trained {trained:.1}, untrained {untrained:.1}, zero action {still:.1}"
    );
    assert!(m.iter().any(|l| l.model_used == Some(true)));
    assert!(m.iter().all(|l| l.model_nonfinite.unwrap_or(0) == 0));
}

#[test]
fn nonfinite_gradient_in_mbmix_stops_the_run_with_the_epoch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        tmp.path(),
        "boom.toml",
        "eval_every = 1\neval_episodes = 2\ncheckpoint_every = 1\n\
         [mbmix.shac]\nnum_envs = 4\nhorizon = 4\nmax_epochs = 20\nactor_lr = 1e8\n\
         truncate_grads = false\nobs_rms = false\n\
         [mbmix.model]\nhidden = [8]\niterations = 1\nminibatches = 1\nbatch_size = 16\n\
         [mbmix.diagnostics]\ngrad_variance_groups = 0\n",
    );
    let dir = tmp.path().join("boom");
    let (result, _) = mbmix(&[
        "train",
        "--task",
        "cartpole-swingup",
        "--algo",
        "mbmix",
        "--config",
        s(&cfg),
        "--out",
        s(&dir),
        "--quiet",
    ]);
    let err = result.expect_err("the run must abort");
    let msg = err.to_string();
    let Error::Training { epoch, .. } = err else {
        panic!("expected a training error, got {msg}");
    };
    assert!(msg.contains("gradient"), "{msg}");
    let metrics = read_metrics(&dir.join("metrics.jsonl")).expect("metrics");
    assert_eq!(metrics.last().map(|m| m.epoch), Some(epoch - 1));
}
