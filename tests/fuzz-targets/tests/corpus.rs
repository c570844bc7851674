//! The fuzz targets on stable Rust: every committed seed of `fuzz/corpus/<target>/`, then
//! inputs proptest generates (random bytes, and seeds with bytes flipped, inserted,
//! deleted or spliced from another seed), through the same function the libFuzzer
//! binary calls. A failing input is shrunk and printed in hex.
//!
//! Bounds: `RECEPTOR_FUZZ_CASES` generated inputs per round (default 256), and rounds
//! with fresh seeds until `RECEPTOR_FUZZ_SECONDS` have passed per target (default 0: one
//! round). CI without a nightly toolchain runs this with a time budget (`scripts/fuzz.sh`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

/// One change applied to a seed.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Splice(usize, usize, usize, usize),
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn load_corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus folder {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus folder entry").path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("corpus file {}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

fn mutate(corpus: &[Vec<u8>], base: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut data = corpus[base % corpus.len()].clone();
    for m in mutations {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::FlipBit(i, bit) if !data.is_empty() => {
                let i = at(*i, data.len());
                data[i] ^= 1 << (bit % 8);
            }
            Mutation::SetByte(i, b) if !data.is_empty() => {
                let i = at(*i, data.len());
                data[i] = *b;
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i, data.len() + 1);
                data.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) if !data.is_empty() => {
                let i = at(*i, data.len());
                let end = (i + n % 64).min(data.len());
                data.drain(i..end);
            }
            Mutation::Truncate(n) => data.truncate(at(*n, data.len() + 1)),
            Mutation::Splice(other, from, len, to) => {
                let other = &corpus[other % corpus.len()];
                let from = at(*from, other.len());
                let piece = &other[from..(from + len % 256).min(other.len())];
                let to = at(*to, data.len() + 1);
                data.splice(to..to, piece.iter().copied());
            }
            _ => {}
        }
    }
    data
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            any::<usize>(),
            any::<usize>(),
            any::<usize>()
        )
            .prop_map(|(o, f, l, t)| Mutation::Splice(o, f, l, t)),
    ]
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}")),
        Err(_) => default,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn run_target(name: &str) {
    let (_, target) = receptor_fuzz_targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"));
    let corpus = load_corpus(name);
    assert!(!corpus.is_empty(), "{name}: the corpus is empty");
    for (path, bytes) in &corpus {
        if catch_unwind(AssertUnwindSafe(|| target(bytes))).is_err() {
            panic!("{name}: seed {} fails", path.display());
        }
    }
    let seeds: Vec<Vec<u8>> = corpus.into_iter().map(|(_, b)| b).collect();
    let cases = u32::try_from(env_number("RECEPTOR_FUZZ_CASES", 256)).unwrap_or(u32::MAX);
    let budget = Duration::from_secs(env_number("RECEPTOR_FUZZ_SECONDS", 0));
    let started = Instant::now();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1024),
        (any::<usize>(), prop::collection::vec(mutation(), 1..8))
            .prop_map(move |(base, ms)| mutate(&seeds, base, &ms)),
    ];
    let mut total = 0u64;
    for round in 0u64.. {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&round.to_le_bytes());
        seed[8..8 + name.len().min(24)].copy_from_slice(&name.as_bytes()[..name.len().min(24)]);
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
        );
        let outcome = runner.run(&strategy, |input| {
            target(&input);
            Ok(())
        });
        match outcome {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => panic!(
                "{name}: round {round} fails ({reason}) on {} bytes: {}",
                input.len(),
                hex(&input)
            ),
            Err(TestError::Abort(reason)) => panic!("{name}: aborted: {reason}"),
        }
        total += u64::from(cases);
        if started.elapsed() >= budget {
            break;
        }
    }
    println!(
        "{name}: seeds and {total} generated inputs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_target(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in receptor_fuzz_targets::TARGETS {
                assert!(tested.contains(name), "no test runs fuzz target {name}");
            }
        }
    };
}

targets!(
    frame,
    message,
    mesh_node,
    control_line,
    config_yaml,
    config_cli,
    unit_status,
    work_signature,
    plugin_config,
    quic_datagrams,
);

/// The seeds reach past the first checks: the recorded session makes the node establish
/// its peer and learn the advertisements, a real QUIC Initial gets an answer, and a token
/// signed with the test key for the target's node is accepted.
#[test]
fn seeds_reach_the_deep_paths() {
    let script = std::fs::read(corpus_dir("mesh_node").join("connect-and-advertise"))
        .expect("seed connect-and-advertise");
    let status = receptor_fuzz_targets::mesh_node_status(&script);
    assert!(
        status.connections.iter().any(|(peer, _)| peer == "peer"),
        "{status:?}"
    );
    assert!(status.routing_table.contains_key("far"), "{status:?}");
    assert!(
        status
            .advertisements
            .iter()
            .any(|ad| ad.node_id == "far" && ad.service == "svc"),
        "{status:?}"
    );

    let dir = corpus_dir("quic_datagrams");
    let initial = std::fs::read(dir.join("initial")).expect("seed initial");
    assert!(receptor_fuzz_targets::quic_replies_to(&initial) > 0);
    assert_eq!(receptor_fuzz_targets::quic_replies_to(&[]), 0);

    let pem = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../core/src/work/testdata/sign_public.pem"),
    )
    .expect("test key");
    let verifier = receptor_core::work::signing::SignatureVerifier::from_pem(&pem, "fuzz")
        .expect("test key loads");
    let at =
        std::time::UNIX_EPOCH + Duration::from_secs(receptor_fuzz_targets::SIGNATURE_CHECK_TIME);
    let dir = corpus_dir("work_signature");
    let token = |name: &str| std::fs::read_to_string(dir.join(name)).expect("seed token");
    assert_eq!(verifier.verify_at(&token("valid"), at), Ok(()));
    assert_eq!(verifier.verify_at(&token("valid-pkcs8"), at), Ok(()));
    assert!(verifier.verify_at(&token("other-key"), at).is_err());
    assert!(verifier.verify_at(&token("expired"), at).is_err());
}
