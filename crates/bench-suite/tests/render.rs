//! `mbmix render` on a small CartPole run: the GIF and the PNG strip decode, have the
//! requested sizes and show motion; bad inputs are clear errors.

mod common;

use bench_suite::cli::Exit;
use common::*;
use std::path::Path;

/// Every frame of a GIF as RGBA, with the image size.
fn gif_frames(path: &Path) -> ((u16, u16), Vec<Vec<u8>>) {
    let bytes = std::fs::read(path).expect("gif written");
    assert_eq!(&bytes[..6], b"GIF89a", "GIF header");
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(bytes.as_slice()).expect("gif decodes");
    let size = (dec.width(), dec.height());
    let mut frames = Vec::new();
    while let Some(frame) = dec.read_next_frame().expect("gif frame decodes") {
        assert_eq!((frame.width, frame.height), size, "full-size frames");
        frames.push(frame.buffer.to_vec());
    }
    (size, frames)
}

/// A PNG as `(width, height, RGB bytes)`.
fn png_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(path).expect("png written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let mut reader = png::Decoder::new(bytes.as_slice())
        .read_info()
        .expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png data");
    let channels = info.color_type.samples();
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|px| px[..3].to_vec())
        .collect();
    (info.width, info.height, rgb)
}

/// The pixels of cell `(row, col)` of a strip of `cw × ch` cells.
fn cell(rgb: &[u8], width: u32, (cw, ch): (u32, u32), (row, col): (u32, u32)) -> Vec<u8> {
    let mut out = Vec::new();
    for y in row * ch..(row + 1) * ch {
        let start = 3 * (y * width + col * cw) as usize;
        out.extend_from_slice(&rgb[start..start + 3 * cw as usize]);
    }
    out
}

#[test]
fn render_writes_an_animated_gif_and_a_png_strip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = train_small(tmp.path(), "run", &[]);

    // GIF, default path: 60 steps, every 2nd → steps 0, 2, …, 60
    let (result, out) = mbmix(&[
        "render",
        "--run",
        s(&run),
        "--steps",
        "60",
        "--width",
        "200",
        "--height",
        "120",
    ]);
    assert_eq!(result.expect("render succeeds"), Exit::Success);
    let gif = run.join("render.gif");
    assert!(
        out.contains("render.gif: 31 frames (200×120 px) of cartpole-swingup at epoch 4"),
        "{out}"
    );
    let (size, frames) = gif_frames(&gif);
    assert_eq!(size, (200, 120));
    assert_eq!(frames.len(), 31);
    assert_ne!(frames[0], frames[30], "the first and last frames differ");
    let distinct = frames.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        distinct >= 25,
        "the pole moves: {distinct} of 30 frame pairs differ"
    );

    // PNG strip from the deterministic initial state: steps 0, 20, 40, 60 in one row
    let strip = tmp.path().join("pictures").join("strip.png");
    let (result, out) = mbmix(&[
        "render",
        "--run",
        s(&run),
        "--out",
        s(&strip),
        "--steps",
        "60",
        "--every",
        "20",
        "--deterministic-init",
        "--width",
        "160",
        "--height",
        "100",
    ]);
    assert_eq!(result.expect("render succeeds"), Exit::Success);
    assert!(out.contains("4 frames (640×100 px)"), "{out}");
    let (w, h, rgb) = png_rgb(&strip);
    assert_eq!((w, h), (640, 100));
    let cells: Vec<Vec<u8>> = (0..4).map(|c| cell(&rgb, w, (160, 100), (0, c))).collect();
    assert_ne!(cells[0], cells[3], "the first and last frames differ");
    assert!(
        cells
            .iter()
            .all(|c| c.chunks(3).any(|p| p != [255, 255, 255])),
        "every cell has a drawing"
    );
    // the same request draws the same picture (deterministic policy, fixed start state)
    let again = tmp.path().join("again.png");
    let args = [
        "render",
        "--run",
        s(&run),
        "--out",
        s(&again),
        "--steps",
        "60",
        "--every",
        "20",
        "--deterministic-init",
        "--width",
        "160",
        "--height",
        "100",
    ];
    assert_eq!(mbmix(&args).0.expect("render succeeds"), Exit::Success);
    assert_eq!(png_rgb(&again).2, rgb);
    // no temporary files are left behind
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("pictures"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["strip.png"]);
}

#[test]
fn render_errors_are_clear() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = train_small(tmp.path(), "run", &[]);
    let err = |args: &[&str]| match mbmix(args).0 {
        Ok(exit) => panic!("{args:?} should fail, ended with {exit:?}"),
        Err(e) => e.to_string(),
    };

    let missing = tmp.path().join("no-such-run");
    let msg = err(&["render", "--run", s(&missing)]);
    assert!(
        msg.contains("no-such-run") && msg.contains("no such directory"),
        "{msg}"
    );

    let msg = err(&["render", "--run", s(&run), "--out", "x.jpg"]);
    assert!(msg.contains(".gif") && msg.contains(".png"), "{msg}");

    let msg = err(&["render", "--run", s(&run), "--steps", "1000"]);
    assert!(
        msg.contains("--steps 1000 exceeds the episode length 240"),
        "{msg}"
    );

    let absent = tmp.path().join("absent.safetensors");
    let msg = err(&["render", "--run", s(&run), "--checkpoint", s(&absent)]);
    assert!(
        msg.contains("no checkpoint at") && msg.contains("absent.safetensors"),
        "{msg}"
    );

    let corrupt = write(tmp.path(), "corrupt.safetensors", "not a checkpoint");
    let msg = err(&["render", "--run", s(&run), "--checkpoint", s(&corrupt)]);
    assert!(msg.contains("cannot load checkpoint"), "{msg}");

    // a numbered checkpoint is accepted
    let epoch2 = run.join("checkpoints").join("epoch-000002.safetensors");
    let out_gif = tmp.path().join("epoch2.gif");
    let (result, out) = mbmix(&[
        "render",
        "--run",
        s(&run),
        "--checkpoint",
        s(&epoch2),
        "--out",
        s(&out_gif),
        "--steps",
        "4",
        "--width",
        "64",
        "--height",
        "64",
    ]);
    assert_eq!(result.expect("render succeeds"), Exit::Success);
    assert!(out.contains("at epoch 2"), "{out}");

    // a run whose task the registry does not know
    let config = run.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("task = \"cartpole-swingup\"", "task = \"warp-drive\""),
    )
    .expect("edit config");
    let msg = err(&["render", "--run", s(&run)]);
    assert!(msg.contains("unknown task `warp-drive`"), "{msg}");
}

#[test]
fn the_binary_exits_non_zero_on_a_missing_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nothing-here");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mbmix"))
        .args(["render", "--run", s(&missing)])
        .output()
        .expect("mbmix runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mbmix render failed") && stderr.contains("nothing-here"),
        "{stderr}"
    );
}
