//! The seed loop the simulators share: which seeds a run takes (from the environment), running each, the
//! line that replays a failing one, the totals of the run and the list of failures.
//!
//! A module of its own (not part of `common/mod.rs`) so that a test that uses only this loop, or only the
//! vote scheme stand-in, does not compile the other one as dead code.

use std::fmt::{Debug, Display};

/// What a simulator counts in one seed, summed over the seeds of a run.
pub trait Totals: Default + Debug {
    /// Adds the counts of one more seed to these totals.
    fn add(&mut self, seed: &Self);
}

/// A number from the environment, if it is set and parses.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The seeds of this run: `HUDS_SIM_SEED` alone, or `HUDS_SIM_SEEDS` (default 500) from
/// `HUDS_SIM_FIRST_SEED`; `part` of `parts` of them, so that test threads can share the work (a single seed
/// goes to part 0).
pub fn seeds(part: u64, parts: u64) -> Vec<u64> {
    match env_u64("HUDS_SIM_SEED") {
        Some(seed) => (part == 0).then_some(seed).into_iter().collect(),
        None => {
            let first = env_u64("HUDS_SIM_FIRST_SEED").unwrap_or(0);
            (first..first + env_u64("HUDS_SIM_SEEDS").unwrap_or(500))
                .filter(|s| s % parts == part)
                .collect()
        }
    }
}

/// Runs `run` on every seed and returns the totals of the seeds that passed. A single seed prints its trace
/// and counts; a failing seed prints its error with the command that replays it (`test` is the name of the
/// integration test, for `cargo test --test`); any failure panics at the end with the list of failing seeds.
/// The caller then checks that the totals show the run did what it claims.
pub fn run_seeds<T, S, E>(
    seeds: &[u64],
    test: &str,
    mut run: impl FnMut(u64) -> Result<(T, S), E>,
) -> S
where
    T: AsRef<[u8]>,
    S: Totals,
    E: Display,
{
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut total = S::default();
    for &seed in seeds {
        match run(seed) {
            Ok((trace, stats)) => {
                if seeds.len() == 1 {
                    println!(
                        "seed {seed}: trace {} {stats:?}",
                        trace
                            .as_ref()
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    );
                }
                total.add(&stats);
            }
            Err(e) => {
                eprintln!(
                    "seed {seed} FAILED: {e} (replay: HUDS_SIM_SEED={seed} cargo test -p chain --release --test {test})"
                );
                failures.push(seed);
            }
        }
    }
    println!(
        "{} seeds in {:.1?}: {total:?}",
        seeds.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    total
}
