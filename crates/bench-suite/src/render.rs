//! `mbmix render`: draw a trained policy's rollout so that a person can see what it does.
//!
//! The run's checkpoint is loaded as `mbmix eval` loads it, the deterministic policy is
//! rolled out ([`crate::trainer::Trainer::rollout`], the episodes behind the evaluation),
//! and every kept state is turned into a [`Scene`] by [`Task::scene`] and drawn with an
//! orthographic camera:
//!
//! - `side` view: world x to the right, y up, looking along −z;
//! - `top` view: world x to the right, −z up, looking down along −y.
//!
//! The camera keeps one scale for the whole rollout and follows the scene's focus (the
//! root link) horizontally, or stays put (`fixed_camera`). Capsules are drawn as thick
//! segments with round ends, spheres as circles, boxes as their projected outline, particles
//! as dots, the ground as a line with a tick every metre, over a faint one-metre grid; each
//! frame carries the step and the return so far.
//!
//! Output by extension: `.gif`, an animation; `.png`, a strip (a grid) of the kept frames.

use crate::error::{Error, Result};
use crate::run;
use diff_core::{Prim, Scene, Task};
use mbmix_policy::EvalEpisode;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Default output name inside the run directory.
pub const DEFAULT_OUT: &str = "render.gif";
/// Frames a PNG strip shows by default (when `--every` is not given).
pub const STRIP_FRAMES: usize = 12;
/// Columns of a PNG strip of at least this many frames.
const STRIP_COLUMNS: usize = 4;
/// Largest strip, in pixels, that we agree to allocate.
const MAX_STRIP_PIXELS: u64 = 64 << 20;

/// Projection of the world onto the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// x to the right, y (up) up.
    #[default]
    Side,
    /// x to the right, −z up: seen from above.
    Top,
}

/// What `mbmix render` was asked to do.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Run directory.
    pub run: PathBuf,
    /// Output file (`.gif` or `.png`); default `<run>/render.gif`.
    pub out: Option<PathBuf>,
    /// Checkpoint to load instead of `checkpoints/latest.safetensors`.
    pub checkpoint: Option<PathBuf>,
    /// Episodes drawn one after the other.
    pub episodes: usize,
    /// Steps per episode at most (default: the whole episode).
    pub steps: Option<usize>,
    /// Keep every `every`-th step (default: about 30 frames per second of simulated time
    /// for a GIF, [`STRIP_FRAMES`] frames for a PNG strip).
    pub every: Option<usize>,
    /// Seed of the initial states (default: the run's evaluation seed).
    pub seed: Option<u64>,
    /// Start from the task's deterministic initial state instead of its stochastic reset.
    pub deterministic_init: bool,
    /// Width of one frame in pixels.
    pub width: u32,
    /// Height of one frame in pixels.
    pub height: u32,
    /// Projection.
    pub view: View,
    /// Keep the camera still instead of following the scene's focus.
    pub fixed_camera: bool,
    /// Also write the drawn episodes' states and rewards to this JSON file.
    pub states_out: Option<PathBuf>,
}

impl RenderOptions {
    /// Options with the defaults of the command line for `run`.
    pub fn new(run: PathBuf) -> Self {
        RenderOptions {
            run,
            out: None,
            checkpoint: None,
            episodes: 1,
            steps: None,
            every: None,
            seed: None,
            deterministic_init: false,
            width: 480,
            height: 300,
            view: View::Side,
            fixed_camera: false,
            states_out: None,
        }
    }
}

/// What was drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderReport {
    /// The file written.
    pub out: PathBuf,
    /// Task name.
    pub task: String,
    /// Epochs the drawn policy was trained for.
    pub epoch: usize,
    /// Frames drawn.
    pub frames: usize,
    /// Return of each drawn episode (over the steps drawn).
    pub returns: Vec<f32>,
    /// Image size in pixels (of the whole strip for a PNG).
    pub size: (u32, u32),
}

/// One drawn state.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Episode index (0-based).
    pub episode: usize,
    /// Step within the episode (0: the initial state).
    pub step: usize,
    /// Steps of the episode.
    pub steps: usize,
    /// Return accumulated up to `step`.
    pub ret: f32,
    /// What the state looks like.
    pub scene: Scene,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Gif,
    Png,
}

/// Runs `mbmix render`.
pub fn render(opts: &RenderOptions) -> Result<RenderReport> {
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| opts.run.join(DEFAULT_OUT));
    let format = match out.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("gif") => Format::Gif,
        Some(e) if e.eq_ignore_ascii_case("png") => Format::Png,
        _ => {
            return Err(Error::Usage(format!(
                "--out `{}`: the output must end in .gif (animation) or .png (frame strip)",
                out.display()
            )))
        }
    };
    for (flag, v) in [("--episodes", Some(opts.episodes)), ("--every", opts.every)] {
        if v == Some(0) {
            return Err(Error::Usage(format!("{flag} must be at least 1")));
        }
    }
    for (flag, v) in [("--width", opts.width), ("--height", opts.height)] {
        if !(64..=4096).contains(&v) {
            return Err(Error::Usage(format!(
                "{flag} {v}: must be between 64 and 4096 pixels"
            )));
        }
    }
    let (cfg, trainer) = run::load_run(&opts.run, opts.checkpoint.as_deref())?;
    let task = crate::registry::make_run_task(&cfg, diff_core::Device::Cpu)?;
    let spec = task.spec().clone();
    let steps = match opts.steps {
        None => spec.episode_length,
        Some(0) => return Err(Error::Usage("--steps must be at least 1".into())),
        Some(n) if n > spec.episode_length => {
            return Err(Error::Usage(format!(
                "--steps {n} exceeds the episode length {} of {}",
                spec.episode_length, spec.name
            )))
        }
        Some(n) => n,
    };
    let seed = opts
        .seed
        .unwrap_or_else(|| crate::trainer::eval_seed(cfg.seed));
    let episodes = trainer.rollout(opts.episodes, seed, !opts.deterministic_init, steps)?;
    if let Some(path) = &opts.states_out {
        let json = serde_json::json!({
            "task": spec.name,
            "state_names": spec.state_names,
            "dt": spec.dt,
            "episodes": episodes.iter().map(|e| serde_json::json!({
                "states": e.states.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
                "rewards": e.rewards,
            })).collect::<Vec<_>>(),
        });
        crate::run::write_atomic(path, json.to_string().as_bytes())?;
    }
    let longest = episodes.iter().map(|e| e.rewards.len()).max().unwrap_or(0);
    let every = opts.every.unwrap_or(match format {
        // about 30 frames per simulated second
        Format::Gif => ((1.0 / (30.0 * spec.dt)).round() as usize).max(1),
        Format::Png => longest.div_ceil(STRIP_FRAMES - 1).max(1),
    });
    let frames = collect_frames(task.as_ref(), &episodes, every)?;
    let style = Style {
        width: opts.width,
        height: opts.height,
        view: opts.view,
        fixed_camera: opts.fixed_camera,
        title: spec.name.clone(),
        episodes: episodes.len(),
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
    }
    let size = match format {
        Format::Gif => {
            let delay_ms = ((every as f64 * spec.dt * 1000.0).round() as u32).max(20);
            write_gif(&frames, &style, &out, delay_ms)?
        }
        Format::Png => write_strip(&frames, &style, &out)?,
    };
    Ok(RenderReport {
        out,
        task: spec.name,
        epoch: trainer.epoch(),
        frames: frames.len(),
        returns: episodes.iter().map(EvalEpisode::total_return).collect(),
        size,
    })
}

/// The frames to draw: steps `0, every, 2·every, …` and the last step of each episode,
/// episodes one after the other. An error when the task has no scene.
pub fn collect_frames(
    task: &dyn Task,
    episodes: &[EvalEpisode],
    every: usize,
) -> Result<Vec<Frame>> {
    let every = every.max(1);
    let mut frames = Vec::new();
    for (e, ep) in episodes.iter().enumerate() {
        let steps = ep.rewards.len();
        let mut ret = 0.0f32;
        for t in 0..=steps {
            if t > 0 {
                ret += ep.rewards[t - 1];
            }
            if t % every != 0 && t != steps {
                continue;
            }
            let scene = task
                .scene(ep.states.row(t))
                .ok_or_else(|| Error::NotRenderable(task.spec().name.clone()))?;
            frames.push(Frame {
                episode: e,
                step: t,
                steps,
                ret,
                scene,
            });
        }
    }
    Ok(frames)
}

/// Drawing settings shared by all frames.
#[derive(Clone, Debug)]
pub struct Style {
    /// Width of one frame in pixels.
    pub width: u32,
    /// Height of one frame in pixels.
    pub height: u32,
    /// Projection.
    pub view: View,
    /// Keep the camera still instead of following the scenes' focus.
    pub fixed_camera: bool,
    /// First words of each caption (the task name).
    pub title: String,
    /// Episodes among the frames (captions name the episode when there are several).
    pub episodes: usize,
}

fn render_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Render {
        path: path.to_path_buf(),
        reason,
    }
}

/// A temporary name next to `path` with the same extension (the PNG encoder picks the
/// format from it).
fn tmp_sibling(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "render".into(), |n| n.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or_else(String::new, |e| e.to_string_lossy().into_owned());
    path.with_file_name(format!(".{stem}.tmp.{ext}"))
}

/// Writes through a temporary file and a rename, removing the temporary on error.
fn write_via_tmp(path: &Path, draw: impl FnOnce(&Path) -> Result<(), String>) -> Result<()> {
    let tmp = tmp_sibling(path);
    if let Err(reason) = draw(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(render_error(path)(reason));
    }
    fs::rename(&tmp, path).map_err(|cause| {
        let _ = fs::remove_file(&tmp);
        Error::Io {
            action: "cannot write",
            path: path.to_path_buf(),
            cause,
        }
    })
}

/// Draws `frames` as an animated GIF (looping, `delay_ms` per frame) into `path`, written
/// through a temporary file; returns the image size.
pub fn write_gif(
    frames: &[Frame],
    style: &Style,
    path: &Path,
    delay_ms: u32,
) -> Result<(u32, u32)> {
    let size = (style.width, style.height);
    let camera = Camera::fit(frames, style, size);
    write_via_tmp(path, |tmp| {
        let root = BitMapBackend::gif(tmp, size, delay_ms)
            .map_err(|e| e.to_string())?
            .into_drawing_area();
        for (i, frame) in frames.iter().enumerate() {
            draw_frame(&root, frame, &camera, i, style).map_err(|e| e.to_string())?;
            root.present().map_err(|e| e.to_string())?;
        }
        Ok(())
    })?;
    Ok(size)
}

/// Draws `frames` as a grid (row by row) into the PNG file `path`, written through a
/// temporary file; returns the image size.
pub fn write_strip(frames: &[Frame], style: &Style, path: &Path) -> Result<(u32, u32)> {
    let n = frames.len().max(1);
    let cols = if n < STRIP_COLUMNS {
        n
    } else {
        STRIP_COLUMNS.max((n as f64).sqrt().ceil() as usize)
    };
    let rows = n.div_ceil(cols);
    let size = (style.width * cols as u32, style.height * rows as u32);
    if u64::from(size.0) * u64::from(size.1) > MAX_STRIP_PIXELS {
        return Err(Error::Usage(format!(
            "a strip of {n} frames of {}×{} pixels is too large; keep fewer frames (--every) or \
             make them smaller (--width, --height)",
            style.width, style.height
        )));
    }
    let (w, h) = (style.width, style.height);
    let camera = Camera::fit(frames, style, (w, h));
    write_via_tmp(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        for (i, frame) in frames.iter().enumerate() {
            // each frame in its own buffer, so that nothing spills into its neighbours
            let mut buf = vec![0u8; 3 * (w * h) as usize];
            {
                let area = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
                draw_frame(&area, frame, &camera, i, style).map_err(|e| e.to_string())?;
                area.present().map_err(|e| e.to_string())?;
            }
            let (x0, y0) = ((i % cols) as u32 * w, (i / cols) as u32 * h);
            let (x0, y0) = (x0 as i32, y0 as i32);
            let cell = BitMapElement::with_owned_buffer((x0, y0), (w, h), buf)
                .ok_or_else(|| "frame buffer of the wrong size".to_string())?;
            root.draw(&cell).map_err(|e| e.to_string())?;
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + w as i32 - 1, y0 + h as i32 - 1)],
                RGBColor(160, 160, 160).stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
        Ok(())
    })?;
    Ok(size)
}

// ---------------------------------------------------------------------------- camera

/// `(u, v, depth)` of a world point: image right, image up, towards the viewer.
fn project(view: View, p: [f32; 3]) -> (f64, f64, f64) {
    let [x, y, z] = p.map(f64::from);
    match view {
        View::Side => (x, y, z),
        View::Top => (x, -z, y),
    }
}

/// Height of the caption band at the top of each frame, in pixels.
fn caption_height(style: &Style) -> i32 {
    2 * LINE_HEIGHT * font_scale(style.width) + 6
}

/// One scale for the whole rollout; the horizontal centre per frame (following) or fixed.
struct Camera {
    view: View,
    /// Pixels per metre.
    scale: f64,
    /// Horizontal world coordinate at the image centre, per frame.
    center_u: Vec<f64>,
    /// Vertical world coordinate at the centre of the drawing band.
    center_v: f64,
    /// Pixel position of the centre.
    origin: (f64, f64),
}

impl Camera {
    fn fit(frames: &[Frame], style: &Style, (w, h): (u32, u32)) -> Camera {
        let view = style.view;
        let bounds: Vec<Option<[f64; 4]>> = frames
            .iter()
            .map(|f| scene_bounds(&f.scene, view))
            .collect();
        let (mut u0, mut u1, mut v0, mut v1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for b in bounds.iter().flatten() {
            u0 = u0.min(b[0]);
            u1 = u1.max(b[1]);
            v0 = v0.min(b[2]);
            v1 = v1.max(b[3]);
        }
        if u0 > u1 {
            (u0, u1, v0, v1) = (-1.0, 1.0, -1.0, 1.0);
        }
        if view == View::Side {
            for g in frames.iter().filter_map(|f| f.scene.ground_y) {
                v0 = v0.min(f64::from(g) - 0.1);
                v1 = v1.max(f64::from(g));
            }
        }
        let fixed = 0.5 * (u0 + u1);
        let center_u: Vec<f64> = frames
            .iter()
            .zip(&bounds)
            .map(|(f, b)| {
                if style.fixed_camera {
                    fixed
                } else if let Some(p) = f.scene.focus {
                    project(view, p).0
                } else {
                    b.map_or(fixed, |b| 0.5 * (b[0] + b[1]))
                }
            })
            .collect();
        // a following camera only needs to fit each frame around its own centre (not the
        // distance travelled over the rollout); a fixed one fits everything
        let half_u = if style.fixed_camera {
            0.5 * (u1 - u0)
        } else {
            center_u
                .iter()
                .zip(&bounds)
                .filter_map(|(c, b)| b.map(|b| (b[1] - c).abs().max((c - b[0]).abs())))
                .fold(0.0, f64::max)
        };
        let half_v = 0.5 * (v1 - v0);
        let top = f64::from(caption_height(style));
        let band = (f64::from(h) - top).max(1.0);
        let margin = 1.12;
        let scale = (f64::from(w) / (2.0 * margin * half_u.max(0.05)))
            .min(band / (2.0 * margin * half_v.max(0.05)));
        Camera {
            view,
            scale,
            center_u,
            center_v: 0.5 * (v0 + v1),
            origin: (0.5 * f64::from(w), top + 0.5 * band),
        }
    }

    /// Pixel position of `(u, v)` in frame `i`.
    fn px(&self, i: usize, u: f64, v: f64) -> (f64, f64) {
        (
            self.origin.0 + (u - self.center_u[i]) * self.scale,
            self.origin.1 - (v - self.center_v) * self.scale,
        )
    }

    /// The world `u` range visible in frame `i` of width `w`.
    fn visible_u(&self, i: usize, w: f64) -> (f64, f64) {
        let half = 0.5 * w / self.scale;
        (self.center_u[i] - half, self.center_u[i] + half)
    }

    fn visible_v(&self, h: f64) -> (f64, f64) {
        let below = (h - self.origin.1) / self.scale;
        let above = self.origin.1 / self.scale;
        (self.center_v - below, self.center_v + above)
    }
}

/// `[u_min, u_max, v_min, v_max]` of everything in a scene, radii included.
fn scene_bounds(scene: &Scene, view: View) -> Option<[f64; 4]> {
    let mut b: Option<[f64; 4]> = None;
    for prim in &scene.prims {
        let r = f64::from(prim.radius());
        for p in prim.key_points() {
            let (u, v, _) = project(view, p);
            if !(u.is_finite() && v.is_finite()) {
                continue;
            }
            let e = b.get_or_insert([u, u, v, v]);
            e[0] = e[0].min(u - r);
            e[1] = e[1].max(u + r);
            e[2] = e[2].min(v - r);
            e[3] = e[3].max(v + r);
        }
    }
    b
}

// ---------------------------------------------------------------------------- drawing

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult<'a> =
    std::result::Result<(), DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

/// Fill colours of the primitives, in order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(66, 114, 196),
    RGBColor(230, 126, 34),
    RGBColor(46, 160, 67),
    RGBColor(192, 57, 43),
    RGBColor(142, 68, 173),
    RGBColor(22, 160, 160),
];
const OUTLINE: RGBColor = RGBColor(40, 40, 40);
const GRID: RGBColor = RGBColor(232, 232, 232);
const GROUND: RGBColor = RGBColor(110, 96, 80);
const GROUND_FILL: RGBColor = RGBColor(222, 214, 200);

fn ipt((x, y): (f64, f64)) -> (i32, i32) {
    (x.round() as i32, y.round() as i32)
}

fn draw_frame<'a>(
    area: &Area<'a>,
    frame: &Frame,
    cam: &Camera,
    i: usize,
    style: &Style,
) -> DrawResult<'a> {
    area.fill(&WHITE)?;
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (f64::from(w), f64::from(h));
    // a one-metre grid fixed to the world, so that motion shows under a following camera
    let (u0, u1) = cam.visible_u(i, w);
    let (v0, v1) = cam.visible_v(h);
    let step = grid_step(cam.scale);
    for k in (u0 / step).floor() as i64..=(u1 / step).ceil() as i64 {
        let (x, _) = cam.px(i, k as f64 * step, 0.0);
        area.draw(&PathElement::new(
            vec![ipt((x, 0.0)), ipt((x, h))],
            GRID.stroke_width(1),
        ))?;
    }
    for k in (v0 / step).floor() as i64..=(v1 / step).ceil() as i64 {
        let (_, y) = cam.px(i, 0.0, k as f64 * step);
        area.draw(&PathElement::new(
            vec![ipt((0.0, y)), ipt((w, y))],
            GRID.stroke_width(1),
        ))?;
    }
    // the ground: a filled band below y = ground_y, a line and a tick every grid step
    if let (View::Side, Some(g)) = (cam.view, frame.scene.ground_y) {
        let (_, y) = cam.px(i, 0.0, f64::from(g));
        area.draw(&Rectangle::new(
            [ipt((0.0, y)), ipt((w, h))],
            GROUND_FILL.filled(),
        ))?;
        area.draw(&PathElement::new(
            vec![ipt((0.0, y)), ipt((w, y))],
            GROUND.stroke_width(2),
        ))?;
        for k in (u0 / step).floor() as i64..=(u1 / step).ceil() as i64 {
            let (x, _) = cam.px(i, k as f64 * step, 0.0);
            area.draw(&PathElement::new(
                vec![ipt((x, y)), ipt((x, y + 6.0))],
                GROUND.stroke_width(2),
            ))?;
        }
    }
    // primitives, far to near
    let mut order: Vec<(f64, usize)> = frame
        .scene
        .prims
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let pts = p.key_points();
            let d =
                pts.iter().map(|&q| project(cam.view, q).2).sum::<f64>() / pts.len().max(1) as f64;
            (if d.is_finite() { d } else { 0.0 }, k)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, k) in order {
        draw_prim(
            area,
            &frame.scene.prims[k],
            PALETTE[k % PALETTE.len()],
            cam,
            i,
        )?;
    }
    // caption
    let s = font_scale(style.width);
    area.draw(&Rectangle::new(
        [(0, 0), (w as i32, caption_height(style) - 2)],
        WHITE.mix(0.85).filled(),
    ))?;
    let mut line1 = format!("{}  step {}/{}", style.title, frame.step, frame.steps);
    if style.episodes > 1 {
        line1 = format!(
            "{}  ep {}/{}  step {}/{}",
            style.title,
            frame.episode + 1,
            style.episodes,
            frame.step,
            frame.steps
        );
    }
    draw_text(area, &line1, (4, 3), s, &BLACK)?;
    draw_text(
        area,
        &format!("return {:.2}", frame.ret),
        (4, 3 + LINE_HEIGHT * s),
        s,
        &BLACK,
    )?;
    Ok(())
}

/// Grid spacing in metres: 1 m, or a coarser power of ten when 1 m is under 8 pixels.
fn grid_step(scale: f64) -> f64 {
    let mut step = 1.0;
    while step * scale < 8.0 && step < 1e6 {
        step *= 10.0;
    }
    step
}

fn draw_prim<'a>(
    area: &Area<'a>,
    prim: &Prim,
    color: RGBColor,
    cam: &Camera,
    i: usize,
) -> DrawResult<'a> {
    let to_px = |p: [f32; 3]| {
        let (u, v, _) = project(cam.view, p);
        cam.px(i, u, v)
    };
    let finite = |p: (f64, f64)| p.0.is_finite() && p.1.is_finite();
    match prim {
        Prim::Sphere { center, radius } => {
            let c = to_px(*center);
            if finite(c) {
                let r = (f64::from(*radius) * cam.scale).max(1.0);
                disc(area, c, r, color)?;
            }
        }
        Prim::Capsule { a, b, radius } => {
            let (pa, pb) = (to_px(*a), to_px(*b));
            if finite(pa) && finite(pb) {
                let r = (f64::from(*radius) * cam.scale).max(1.0);
                let outline = capsule_outline(pa, pb, r);
                polygon(area, &outline, color)?;
            }
        }
        Prim::Box { .. } => {
            let pts: Vec<(f64, f64)> = prim
                .key_points()
                .into_iter()
                .map(to_px)
                .filter(|&p| finite(p))
                .collect();
            let hull = convex_hull(pts);
            if hull.len() >= 3 {
                polygon(area, &hull, color)?;
            } else if hull.len() == 2 {
                area.draw(&PathElement::new(
                    vec![ipt(hull[0]), ipt(hull[1])],
                    OUTLINE.stroke_width(2),
                ))?;
            }
        }
        Prim::Points { positions, radius } => {
            let r = (f64::from(*radius) * cam.scale).max(1.5);
            for &p in positions {
                let c = to_px(p);
                if finite(c) {
                    area.draw(&Circle::new(ipt(c), r.round() as i32, color.filled()))?;
                }
            }
        }
    }
    Ok(())
}

fn disc<'a>(area: &Area<'a>, c: (f64, f64), r: f64, color: RGBColor) -> DrawResult<'a> {
    let r = r.round().max(1.0) as i32;
    area.draw(&Circle::new(ipt(c), r, color.filled()))?;
    area.draw(&Circle::new(ipt(c), r, OUTLINE.stroke_width(1)))?;
    Ok(())
}

fn polygon<'a>(area: &Area<'a>, pts: &[(f64, f64)], color: RGBColor) -> DrawResult<'a> {
    let px: Vec<(i32, i32)> = pts.iter().copied().map(ipt).collect();
    area.draw(&Polygon::new(px.clone(), color.filled()))?;
    let mut closed = px;
    if let Some(&first) = closed.first() {
        closed.push(first);
    }
    area.draw(&PathElement::new(closed, OUTLINE.stroke_width(1)))?;
    Ok(())
}

/// The outline of a capsule in the image: two half circles joined by straight sides.
fn capsule_outline(a: (f64, f64), b: (f64, f64), r: f64) -> Vec<(f64, f64)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let theta = if dx.hypot(dy) < 1e-9 {
        0.0
    } else {
        dy.atan2(dx)
    };
    let n = 12;
    let mut pts = Vec::with_capacity(2 * (n + 1));
    // half circle around b from θ − π/2 to θ + π/2, then around a from θ + π/2 to θ + 3π/2
    for (c, start) in [
        (b, theta - std::f64::consts::FRAC_PI_2),
        (a, theta + std::f64::consts::FRAC_PI_2),
    ] {
        for k in 0..=n {
            let phi = start + std::f64::consts::PI * k as f64 / n as f64;
            pts.push((c.0 + r * phi.cos(), c.1 + r * phi.sin()));
        }
    }
    pts
}

/// Convex hull (Andrew's monotone chain), counter-clockwise, without repeated points.
fn convex_hull(mut pts: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    pts.dedup_by(|a, b| (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9);
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(2 * pts.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f64, f64)>> = if pass == 0 {
            Box::new(pts.iter())
        } else {
            Box::new(pts.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

// ---------------------------------------------------------------------------- text

/// Pixel rows of a glyph cell, and the advance, in font pixels.
const GLYPH_ROWS: usize = 7;
const ADVANCE: i32 = 6;
const LINE_HEIGHT: i32 = 9;

/// Font pixel size for a frame width: 1 up to 400 px, 2 above.
fn font_scale(width: u32) -> i32 {
    if width > 400 {
        2
    } else {
        1
    }
}

/// A 5×7 bitmap font for the captions (plotters' bitmap backend draws text only with a
/// system font library, which we do not want to depend on). Rows top to bottom, `#` on.
fn glyph(c: char) -> [&'static str; GLYPH_ROWS] {
    match c.to_ascii_lowercase() {
        '0' => [
            ".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###.",
        ],
        '1' => [
            "..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ],
        '2' => [
            ".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####",
        ],
        '3' => [
            "#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###.",
        ],
        '4' => [
            "...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#.",
        ],
        '5' => [
            "#####", "#....", "####.", "....#", "....#", "#...#", ".###.",
        ],
        '6' => [
            "..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###.",
        ],
        '7' => [
            "#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#...",
        ],
        '8' => [
            ".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###.",
        ],
        '9' => [
            ".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##..",
        ],
        'a' => [
            ".....", ".....", ".###.", "....#", ".####", "#...#", ".####",
        ],
        'b' => [
            "#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####.",
        ],
        'c' => [
            ".....", ".....", ".###.", "#....", "#....", "#...#", ".###.",
        ],
        'd' => [
            "....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####",
        ],
        'e' => [
            ".....", ".....", ".###.", "#...#", "#####", "#....", ".###.",
        ],
        'f' => [
            "..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#...",
        ],
        'g' => [
            ".....", ".####", "#...#", "#...#", ".####", "....#", ".###.",
        ],
        'h' => [
            "#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#",
        ],
        'i' => [
            "..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###.",
        ],
        'j' => [
            "...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##..",
        ],
        'k' => [
            "#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#.",
        ],
        'l' => [
            ".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###.",
        ],
        'm' => [
            ".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#",
        ],
        'n' => [
            ".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#",
        ],
        'o' => [
            ".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###.",
        ],
        'p' => [
            ".....", ".....", "####.", "#...#", "####.", "#....", "#....",
        ],
        'q' => [
            ".....", ".....", ".##.#", "#..##", ".####", "....#", "....#",
        ],
        'r' => [
            ".....", ".....", "#.##.", "##..#", "#....", "#....", "#....",
        ],
        's' => [
            ".....", ".....", ".###.", "#....", ".###.", "....#", "####.",
        ],
        't' => [
            ".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##.",
        ],
        'u' => [
            ".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#",
        ],
        'v' => [
            ".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#..",
        ],
        'w' => [
            ".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#.",
        ],
        'x' => [
            ".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#",
        ],
        'y' => [
            ".....", ".....", "#...#", "#...#", ".####", "....#", ".###.",
        ],
        'z' => [
            ".....", ".....", "#####", "...#.", "..#..", ".#...", "#####",
        ],
        ' ' => [
            ".....", ".....", ".....", ".....", ".....", ".....", ".....",
        ],
        '-' => [
            ".....", ".....", ".....", "#####", ".....", ".....", ".....",
        ],
        '.' => [
            ".....", ".....", ".....", ".....", ".....", ".##..", ".##..",
        ],
        ',' => [
            ".....", ".....", ".....", ".....", ".##..", "..#..", ".#...",
        ],
        ':' => [
            ".....", ".##..", ".##..", ".....", ".##..", ".##..", ".....",
        ],
        '/' => [
            ".....", "....#", "...#.", "..#..", ".#...", "#....", ".....",
        ],
        '+' => [
            ".....", "..#..", "..#..", "#####", "..#..", "..#..", ".....",
        ],
        '=' => [
            ".....", ".....", "#####", ".....", "#####", ".....", ".....",
        ],
        '(' => [
            "...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#.",
        ],
        ')' => [
            ".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#...",
        ],
        '_' => [
            ".....", ".....", ".....", ".....", ".....", ".....", "#####",
        ],
        '%' => [
            "##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##",
        ],
        _ => [
            ".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#..",
        ],
    }
}

/// Draws `text` with its top-left corner at `at`, each font pixel `scale` pixels wide.
fn draw_text<'a>(
    area: &Area<'a>,
    text: &str,
    at: (i32, i32),
    scale: i32,
    color: &RGBColor,
) -> DrawResult<'a> {
    for (k, c) in text.chars().enumerate() {
        let x0 = at.0 + k as i32 * ADVANCE * scale;
        for (r, row) in glyph(c).iter().enumerate() {
            for (col, bit) in row.bytes().enumerate() {
                if bit != b'#' {
                    continue;
                }
                let (x, y) = (x0 + col as i32 * scale, at.1 + r as i32 * scale);
                for dy in 0..scale {
                    for dx in 0..scale {
                        area.draw_pixel((x + dx, y + dy), color)?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use diff_core::{SeededRng, TaskSpec};
    use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
    use sim_rigid::CartPoleSwingUp;

    /// CartPole without a scene: every method but `scene` delegates.
    struct Blind(CartPoleSwingUp);

    impl Task for Blind {
        fn spec(&self) -> &TaskSpec {
            self.0.spec()
        }
        fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, n: ArrayViewMut2<f32>) {
            self.0.step(s, a, n)
        }
        fn step_vjp(
            &self,
            s: ArrayView2<f32>,
            a: ArrayView2<f32>,
            adj_next: ArrayView2<f32>,
            adj_s: ArrayViewMut2<f32>,
            adj_a: ArrayViewMut2<f32>,
        ) {
            self.0.step_vjp(s, a, adj_next, adj_s, adj_a)
        }
        fn step_jvp(
            &self,
            s: ArrayView2<f32>,
            a: ArrayView2<f32>,
            ds: ArrayView2<f32>,
            da: ArrayView2<f32>,
            ds_next: ArrayViewMut2<f32>,
        ) {
            self.0.step_jvp(s, a, ds, da, ds_next)
        }
        fn observe(&self, s: ArrayView2<f32>, obs: ArrayViewMut2<f32>) {
            self.0.observe(s, obs)
        }
        fn observe_vjp(&self, s: ArrayView2<f32>, adj: ArrayView2<f32>, out: ArrayViewMut2<f32>) {
            self.0.observe_vjp(s, adj, out)
        }
        fn reward(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, r: ArrayViewMut1<f32>) {
            self.0.reward(s, a, r)
        }
        fn reward_vjp(
            &self,
            s: ArrayView2<f32>,
            a: ArrayView2<f32>,
            adj_r: ArrayView1<f32>,
            adj_s: ArrayViewMut2<f32>,
            adj_a: ArrayViewMut2<f32>,
        ) {
            self.0.reward_vjp(s, a, adj_r, adj_s, adj_a)
        }
        fn terminated(&self, s: ArrayView2<f32>, out: &mut [bool]) {
            self.0.terminated(s, out)
        }
        fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, s: ArrayViewMut1<f32>) {
            self.0.reset_state(rng, stochastic, s)
        }
    }

    fn episode(steps: usize) -> EvalEpisode {
        let mut states = Array2::zeros((steps + 1, 4));
        for t in 0..=steps {
            states[(t, 0)] = 0.1 * t as f32;
            states[(t, 1)] = -std::f32::consts::PI + 0.2 * t as f32;
        }
        EvalEpisode {
            states,
            rewards: vec![-1.0; steps],
        }
    }

    #[test]
    fn frames_keep_every_kth_step_and_the_last() {
        let task = CartPoleSwingUp::new();
        let frames = collect_frames(&task, &[episode(10), episode(4)], 4).expect("frames");
        let steps: Vec<(usize, usize)> = frames.iter().map(|f| (f.episode, f.step)).collect();
        assert_eq!(steps, [(0, 0), (0, 4), (0, 8), (0, 10), (1, 0), (1, 4)]);
        assert_eq!(frames[2].ret, -8.0);
        assert_eq!(frames[3].ret, -10.0);
        assert_eq!(frames[4].ret, 0.0);
        assert_ne!(frames[0].scene, frames[1].scene);
    }

    #[test]
    fn a_task_without_a_scene_cannot_be_rendered() {
        let task = Blind(CartPoleSwingUp::new());
        let err = collect_frames(&task, &[episode(3)], 1).expect_err("no scene");
        assert_eq!(
            err.to_string(),
            "task `cartpole-swingup` cannot be rendered (it describes no scene)"
        );
    }

    #[test]
    fn convex_hull_of_a_projected_box() {
        let hull = convex_hull(vec![
            (0.0, 0.0),
            (1.0, 0.0),
            (0.0, 1.0),
            (1.0, 1.0),
            (0.5, 0.5),
            (1.0, 1.0),
            (0.0, 0.0),
        ]);
        assert_eq!(hull.len(), 4, "{hull:?}");
        assert!(!hull.contains(&(0.5, 0.5)));
    }

    /// Decodes an RGB(A) PNG into `(width, height, rgb bytes)`.
    fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
        let file = std::fs::File::open(path).expect("png written");
        let mut reader = png::Decoder::new(file).read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("png data");
        let channels = info.color_type.samples();
        let rgb = buf[..info.buffer_size()]
            .chunks(channels)
            .flat_map(|px| px[..3].to_vec())
            .collect();
        (info.width, info.height, rgb)
    }

    #[test]
    fn primitives_and_ground_land_where_the_camera_puts_them() {
        let rot45 = {
            let (c, s) = (
                std::f32::consts::FRAC_1_SQRT_2,
                std::f32::consts::FRAC_1_SQRT_2,
            );
            [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
        };
        let scene = Scene {
            prims: vec![
                Prim::Capsule {
                    a: [-0.5, 0.5, 0.0],
                    b: [0.5, 0.5, 0.0],
                    radius: 0.1,
                },
                Prim::Sphere {
                    center: [0.0, 1.2, 0.0],
                    radius: 0.2,
                },
                Prim::Box {
                    center: [1.2, 0.5, 0.0],
                    rot: rot45,
                    half_extents: [0.2, 0.2, 0.2],
                },
                Prim::Points {
                    positions: vec![[-1.2, 0.3, 0.0], [-1.2, 0.9, 0.0]],
                    radius: 0.05,
                },
            ],
            ground_y: Some(0.0),
            focus: Some([0.0, 0.5, 0.0]),
        };
        let frames = vec![Frame {
            episode: 0,
            step: 0,
            steps: 1,
            ret: 0.0,
            scene,
        }];
        let style = Style {
            width: 320,
            height: 240,
            view: View::Side,
            fixed_camera: false,
            title: "test".into(),
            episodes: 1,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("scene.png");
        assert_eq!(
            write_strip(&frames, &style, &path).expect("drawn"),
            (320, 240)
        );
        let (w, h, rgb) = decode_png(&path);
        assert_eq!((w, h), (320, 240));
        let cam = Camera::fit(&frames, &style, (w, h));
        let at = |u: f64, v: f64| {
            let (x, y) = ipt(cam.px(0, u, v));
            let k = 3 * (y as usize * w as usize + x as usize);
            RGBColor(rgb[k], rgb[k + 1], rgb[k + 2])
        };
        assert_eq!(at(0.3, 0.5), PALETTE[0], "capsule body");
        assert_eq!(at(0.55, 0.5), PALETTE[0], "capsule round end");
        assert_eq!(at(0.0, 1.2), PALETTE[1], "sphere");
        // the box turned 45°: its corner reaches 0.2·√2 ≈ 0.28 m along x
        assert_eq!(at(1.2 + 0.25, 0.5), PALETTE[2], "box corner");
        assert_eq!(at(1.2 + 0.18, 0.5 + 0.18), WHITE, "outside the turned box");
        assert_eq!(at(-1.2, 0.9), PALETTE[3], "particle");
        assert_eq!(at(0.5, -0.05), GROUND_FILL, "below the ground");
        assert_eq!(at(0.6, 1.35), WHITE, "empty space");
        // the capsule is the widest thing: the scene fills the width with a margin
        let (x_left, _) = cam.px(0, -1.25, 0.0);
        assert!(x_left > 0.0 && x_left < 0.15 * f64::from(w), "{x_left}");
    }

    #[test]
    fn glyphs_are_five_by_seven() {
        for c in "0123456789abcdefghijklmnopqrstuvwxyz -.,:/+=()_%?".chars() {
            for row in glyph(c) {
                assert_eq!(row.len(), 5, "{c:?}");
                assert!(row.bytes().all(|b| b == b'#' || b == b'.'), "{c:?}");
            }
        }
    }
}
