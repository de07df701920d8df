//! Helpers shared by the core's unit tests.

use proptest::prelude::ProptestConfig;

/// Proptest configuration: a fixed seed unless `PROPTEST_RNG_SEED` is set, so that CI runs
/// the same cases every time; explore with `PROPTEST_RNG_SEED=<n> PROPTEST_CASES=<many>`.
pub(crate) fn fixed_seed_config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    if config.rng_seed == proptest::test_runner::RngSeed::Random {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(0x0b0b);
    }
    config
}
