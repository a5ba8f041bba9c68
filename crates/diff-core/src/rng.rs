//! Seeded random numbers: one seed fixes a CPU run.

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// The project's RNG: ChaCha8, reproducible across platforms and serialisable for resume.
pub type SeededRng = rand_chacha::ChaCha8Rng;

/// An RNG for `seed` on an independent `stream` (e.g. one stream for resets, one for
/// exploration noise, one for minibatch shuffling), so that adding draws to one
/// consumer does not shift the numbers another sees.
pub fn seeded(seed: u64, stream: u64) -> SeededRng {
    let mut rng = SeededRng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Fills `out` with standard normal samples.
pub fn fill_normal(rng: &mut SeededRng, out: &mut [f32]) {
    for x in out {
        *x = StandardNormal.sample(rng);
    }
}

/// A uniform sample in [0, 1).
pub fn uniform01(rng: &mut SeededRng) -> f64 {
    use rand::Rng;
    rng.gen::<f64>()
}
