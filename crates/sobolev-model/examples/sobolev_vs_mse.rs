//! Measurement: a Sobolev-trained dynamics model (`sobolev.form = full` by default) against
//! an MSE-only model (`none`) on one task's transitions (`--task`: cartpole-swingup, hopper,
//! half-cheetah, ant, humanoid), with equal data and equal optimiser steps; both are scored
//! on held-out transitions with full Jacobians.
//!
//! Data: envs start from the task's stochastic resets and take uniformly random actions in
//! [−1, 1] for `--steps` steps; every visited (s, a) is a transition (an env whose state
//! stops being finite is dropped by the transition filter). The held-out set comes from
//! other seeds. Both models see the same transitions (the MSE model without the
//! Jacobian targets), the same normalisation statistics, initial weights and minibatches,
//! and the same learning-rate schedule (linear decay from 1e-3 to `--lr-final`).
//!
//! ```text
//! cargo run --release -p sobolev-model --example sobolev_vs_mse -- --epochs 30
//! cargo run --release -p sobolev-model --example sobolev_vs_mse -- --task ant --steps 64
//! ```

use clap::Parser;
use diff_core::rng::uniform01;
use diff_core::{seeded, Task};
use ndarray::{concatenate, Array2, Axis};
use sim_rigid::tasks::{Ant, HalfCheetah, Hopper, Humanoid};
use sim_rigid::CartPoleSwingUp;
use sobolev_model::{
    collect, evaluate, ModelConfig, NetworkBackend, SobolevConfig, SobolevForm, SobolevTrainer,
    TargetFilter, TargetLayout, TargetSpec, Transitions,
};
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Task: cartpole-swingup, hopper, half-cheetah, ant or humanoid.
    #[arg(long, default_value = "cartpole-swingup")]
    task: String,
    /// Jacobian term of the Sobolev model: full, vjp_proj, jvp_proj or bilinear.
    #[arg(long, default_value = "full")]
    form: String,
    /// Random directions per transition for the projected forms.
    #[arg(long, default_value_t = 1)]
    directions: usize,
    /// Weight β of both Jacobian terms (β_s = β_a), on normalised coordinates.
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// Training envs (each contributes `steps` transitions).
    #[arg(long, default_value_t = 64)]
    train_envs: usize,
    /// Held-out envs.
    #[arg(long, default_value_t = 32)]
    test_envs: usize,
    /// Random-action steps per env.
    #[arg(long, default_value_t = 128)]
    steps: usize,
    /// Training epochs (each `iterations × minibatches` optimiser steps).
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Hidden widths (default: the config default, 3 × 256).
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Learning rate reached by the linear decay at the last epoch (`model.optim`: "linear
    /// decay as SHAC"; SHAC decays to 1e-5). The initial rate is the config's 1e-3.
    #[arg(long, default_value_t = 1e-5)]
    lr_final: f64,
    /// Minibatch size.
    #[arg(long, default_value_t = 512)]
    batch_size: usize,
    /// Seed of the data and the weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `sobolev.target_filter = { clip_norm = C }`: Jacobian targets rescaled to norm ≤ C.
    #[arg(long, conflicts_with = "huber")]
    clip_norm: Option<f64>,
    /// `sobolev.target_filter = { huber = D }`: Huber penalty on the Jacobian residual.
    #[arg(long)]
    huber: Option<f64>,
    /// `model.network_backend` of both models: dfdx or fused (forms vjp_proj and none).
    #[arg(long, default_value = "dfdx")]
    backend: String,
    /// `model.grad_clip_per_term` for the Sobolev model (needs `--backend fused`).
    #[arg(long)]
    clip_per_term: bool,
    /// `model.grad_clip_jacobian` (the Jacobian term's clip norm; needs `--clip-per-term`).
    #[arg(long, requires = "clip_per_term")]
    clip_jacobian: Option<f64>,
    /// `model.normalise = false` for both models: no input/output statistics, so both
    /// losses (and the Jacobian term's Frobenius norm) are in physical coordinates, the
    /// coordinates of the held-out errors.
    #[arg(long)]
    no_normalise: bool,
}

/// Transitions of `envs` random-action rollouts of `steps` steps from stochastic resets,
/// with the targets `spec` asks for.
fn rollouts(
    task: &dyn Task,
    envs: usize,
    steps: usize,
    seed: u64,
    spec_t: &TargetSpec,
) -> Transitions {
    let spec = task.spec().clone();
    let mut rng = seeded(seed, 1);
    let mut s = Array2::<f32>::zeros((envs, spec.state_dim));
    for mut row in s.rows_mut() {
        task.reset_state(&mut rng, true, row.view_mut());
    }
    let mut parts = Vec::new();
    for _ in 0..steps {
        let a = Array2::from_shape_fn((envs, spec.act_dim), |_| {
            (2.0 * uniform01(&mut rng) - 1.0) as f32
        });
        let b = collect(task, s.view(), a.view(), spec_t, &mut rng).expect("collect");
        if b.dropped > 0 {
            println!(
                "  {} transitions with non-finite targets dropped",
                b.dropped
            );
        }
        // Continue from the stepped states (rows of dropped transitions included).
        let mut next = s.clone();
        task.step(s.view(), a.view(), next.view_mut());
        s = next;
        parts.push(b);
    }
    let cat = |f: &dyn Fn(&Transitions) -> &Array2<f32>| {
        let views: Vec<_> = parts.iter().map(|p| f(p).view()).collect();
        concatenate(Axis(0), &views).unwrap()
    };
    Transitions::from_parts(
        parts[0].layout,
        cat(&|p| &p.s),
        cat(&|p| &p.a),
        cat(&|p| &p.s_next),
        cat(&|p| &p.targets),
    )
    .unwrap()
}

/// The share of Σ_r ‖J_r‖² held by the 1 % of held-out transitions with the largest ‖J_r‖.
fn top_share(held: &Transitions) -> f64 {
    let mut sq: Vec<f64> = held
        .targets
        .outer_iter()
        .map(|row| row.iter().map(|&x| (x as f64).powi(2)).sum())
        .collect();
    sq.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sq.iter().sum();
    let k = (sq.len() / 100).max(1);
    sq[..k].iter().sum::<f64>() / total.max(1e-30)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let task: Box<dyn Task> = match args.task.as_str() {
        "cartpole-swingup" => Box::new(CartPoleSwingUp::new()),
        "hopper" => Box::new(Hopper::hopper()),
        "half-cheetah" => Box::new(HalfCheetah::half_cheetah()),
        "ant" => Box::new(Ant::ant()),
        "humanoid" => Box::new(Humanoid::humanoid()),
        other => return Err(format!("unknown task `{other}`").into()),
    };
    let form: SobolevForm = toml::Value::String(args.form.clone()).try_into()?;
    let backend: NetworkBackend = toml::Value::String(args.backend.clone()).try_into()?;
    if form == SobolevForm::None {
        return Err("--form must name a Jacobian term (the MSE model is the baseline)".into());
    }
    let sob_cfg = SobolevConfig {
        form,
        directions: args.directions,
        beta_s: args.beta,
        beta_a: args.beta,
        target_filter: match (args.clip_norm, args.huber) {
            (Some(c), _) => TargetFilter::ClipNorm(c),
            (_, Some(d)) => TargetFilter::Huber(d),
            _ => TargetFilter::DropNonFinite,
        },
        ..SobolevConfig::default()
    };
    let task = task.as_ref();
    let (ds, da) = (task.spec().state_dim, task.spec().act_dim);
    let t0 = Instant::now();
    let train = rollouts(
        task,
        args.train_envs,
        args.steps,
        args.seed,
        &TargetSpec::from_config(&sob_cfg),
    );
    let held = rollouts(
        task,
        args.test_envs,
        args.steps,
        args.seed + 1_000_003,
        &TargetSpec::unit(SobolevForm::Full, 1),
    );
    println!(
        "data: {} train / {} held-out {} transitions ({:.1} s)",
        train.len(),
        held.len(),
        args.task,
        t0.elapsed().as_secs_f64()
    );
    let mse_data = Transitions::from_parts(
        TargetLayout::new(SobolevForm::None, ds, da, 1),
        train.s.clone(),
        train.a.clone(),
        train.s_next.clone(),
        Array2::zeros((train.len(), 0)),
    )?;

    let mut rows = Vec::new();
    for (form, data) in [(form, &train), (SobolevForm::None, &mse_data)] {
        let base = ModelConfig::default();
        let cfg = ModelConfig {
            hidden: args.hidden.clone().unwrap_or(base.hidden.clone()),
            batch_size: args.batch_size,
            seed: args.seed,
            network_backend: backend,
            grad_clip_per_term: args.clip_per_term && form != SobolevForm::None,
            grad_clip_jacobian: args.clip_jacobian.filter(|_| form != SobolevForm::None),
            normalise: !args.no_normalise,
            sobolev: SobolevConfig {
                form,
                ..sob_cfg.clone()
            },
            ..base
        };
        let mut trainer = SobolevTrainer::new(cfg, ds, da)?;
        trainer.add(data)?;
        let mut rng = seeded(args.seed, 2);
        let t = Instant::now();
        let mut last = None;
        let lr0 = trainer.config().lr;
        for epoch in 0..args.epochs {
            let frac = epoch as f64 / args.epochs as f64;
            trainer.set_lr(lr0 + (args.lr_final - lr0) * frac);
            let st = trainer.train_epoch(&mut rng)?;
            if epoch == 0 || (epoch + 1) % 10 == 0 || epoch + 1 == args.epochs {
                let ev = evaluate(trainer.model(), &held)?;
                println!(
                    "  {:>4} epoch {:>3}: loss {:.4e} (value {:.4e}, jacobian {:.4e}), grad {:.3}; held-out next-state {:.4}, jacobian {:.4}",
                    form.name(),
                    epoch + 1,
                    st.loss,
                    st.value_loss,
                    st.jacobian_loss,
                    st.grad_norm,
                    ev.next_state_rel_err,
                    ev.jacobian_rel_err
                );
            }
            last = Some(st);
        }
        let secs = t.elapsed().as_secs_f64();
        let ev = evaluate(trainer.model(), &held)?;
        println!(
            "  {:>4}: per-transition Jacobian error median {:.4}, mean {:.4}",
            form.name(),
            ev.jacobian_rel_err_median,
            ev.jacobian_rel_err_mean
        );
        let steps = last.map_or(0, |s| s.steps) * args.epochs;
        rows.push((form, ev, steps, secs));
    }
    println!();
    println!("| model | optimiser steps | train s | next-state rel err | Jacobian rel err | Jacobian rel err (vs ‖J_F − [I,0]‖) |");
    println!("|---|---|---|---|---|---|");
    for (form, ev, steps, secs) in &rows {
        println!(
            "| {} | {} | {:.0} | {:.4} | {:.4} | {:.4} |",
            if *form == SobolevForm::None {
                "MSE only (none)".to_string()
            } else {
                format!("Sobolev ({})", form.name())
            },
            steps,
            secs,
            ev.next_state_rel_err,
            ev.jacobian_rel_err,
            ev.jacobian_delta_rel_err
        );
    }
    let (sob, mse) = (rows[0].1, rows[1].1);
    let jr = sob.jacobian_rel_err / mse.jacobian_rel_err;
    let nr = sob.next_state_rel_err / mse.next_state_rel_err;
    println!();
    println!(
        "The 1 % of held-out transitions with the largest Jacobians hold {:.1} % of Σ‖J‖²",
        100.0 * top_share(&held)
    );
    println!(
        "Sobolev / MSE: Jacobian error ×{jr:.3} (target ≤ 0.5: {}), next-state error ×{nr:.3} (target ≤ 1.1: {})",
        if jr <= 0.5 { "met" } else { "NOT met" },
        if nr <= 1.1 { "met" } else { "NOT met" }
    );
    Ok(())
}
