//! Proofs off the wire: arbitrary bytes never panic the decoder, and a valid proof with any
//! one byte changed either does not decode or does not verify (never passes, never panics).

mod common;

use std::sync::OnceLock;

use cairn_proofs::Hash32;
use cairn_proofs::challenge::Challenge;
use cairn_proofs::proof::{EpochProof, MAX_PROOF_BYTES};
use cairn_proofs::receipt::StorageReceipt;
use common::{Prover, mixed_sizes, nonce};
use proptest::prelude::*;

struct Fixture {
    prover: Prover,
    challenge: Challenge,
    receipts: Vec<StorageReceipt>,
    bytes: Vec<u8>,
}

/// A node of 12 shards, a challenge naming 3 of them, and the valid proof's encoding.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let prover = Prover::with_sizes(1, &mixed_sizes(12, 121), 121, 10);
        let targets = prover.roots().into_iter().step_by(4).map(Hash32).collect();
        let challenge = prover.challenge(9, nonce(121, 0), targets);
        let receipts = prover.receipts(2, 20);
        let proof = prover.prove(&challenge).unwrap();
        proof
            .verify(&challenge, &prover.commitment, &receipts, prover.params)
            .unwrap();
        let bytes = proof.to_bytes();
        assert_eq!(EpochProof::from_bytes(&bytes).unwrap(), proof);
        Fixture {
            prover,
            challenge,
            receipts,
            bytes,
        }
    })
}

/// Decodes and, if that works, verifies: true only if the bytes are a valid answer.
fn passes(f: &Fixture, bytes: &[u8]) -> bool {
    EpochProof::from_bytes(bytes).is_ok_and(|p| {
        p.verify(
            &f.challenge,
            &f.prover.commitment,
            &f.receipts,
            f.prover.params,
        )
        .is_ok()
    })
}

#[test]
fn the_fixture_passes_and_oversized_input_is_refused_unread() {
    let f = fixture();
    assert!(passes(f, &f.bytes));
    let mut big = f.bytes.clone();
    big.resize(MAX_PROOF_BYTES + 1, 0);
    assert!(EpochProof::from_bytes(&big).is_err());
    // Trailing bytes, and every truncation.
    let mut longer = f.bytes.clone();
    longer.push(0);
    assert!(!passes(f, &longer));
    for len in (0..f.bytes.len()).step_by(7) {
        assert!(!passes(f, &f.bytes[..len]), "{len}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let f = fixture();
        prop_assert!(!passes(f, &bytes));
    }

    /// A valid encoding with a random stretch overwritten by random bytes.
    #[test]
    fn spliced_proofs_never_panic(at in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 1..64)) {
        let f = fixture();
        let mut bytes = f.bytes.clone();
        let at = at.index(bytes.len());
        let end = (at + junk.len()).min(bytes.len());
        let before = bytes[at..end].to_vec();
        bytes[at..end].copy_from_slice(&junk[..end - at]);
        prop_assume!(before != bytes[at..end]);
        prop_assert!(!passes(f, &bytes));
    }

    #[test]
    fn one_flipped_byte_never_passes(at in any::<prop::sample::Index>(), x in 1..=255u8) {
        let f = fixture();
        let mut bytes = f.bytes.clone();
        let at = at.index(bytes.len());
        bytes[at] ^= x;
        prop_assert!(!passes(f, &bytes), "byte {} ^ {:#x} passes", at, x);
    }
}
