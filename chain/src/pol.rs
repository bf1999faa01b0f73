//! Proof of Likelihood: how much say each validator has, and which validators sit on which shard's
//! committee in an epoch. Everything here is a pure function of on-chain data, so anyone can recompute it.
//! The normative text, with the reasons, is `specs/consensus.md`.
//!
//! - reputation (parts per million, 0..=1,000,000) from verifiable signals: the share of certificates the
//!   validator's vote is in, the share of its proposer slots that produced a certified block, halved for each
//!   fault proven against it;
//! - likelihood weight = stake x (1 + reputation);
//! - epoch randomness = blake3 of the epoch number and the previous epoch's final aggregate BLS signature;
//! - committees: keep the previous committee, rotate out at most a third of it at random, and fill free seats
//!   by weighted sampling without replacement from validators not seated elsewhere.

use crate::address::Address;
use crate::amount::Amount;
use crate::crypto::{Hash, domain, hash_with};
use std::collections::BTreeSet;

pub const PPM: u64 = 1_000_000;

/// The committee size for a public network: with one vote per seat, an adversary holding 20% of all weight
/// halts a committee this size in fewer than one epoch in 5 billion, and finalises alone never in practice
/// (`specs/consensus.md` §1.4.1 has the table; `tests::public_committee_size_bounds_capture` checks it).
pub const COMMITTEE_SIZE_PUBLIC: usize = 400;

/// The probability that an adversary winning each of `n` seats with probability `f` independently holds at
/// least `k` of them: the binomial tail, summed in log space so that large committees do not underflow.
pub fn capture_probability(n: u32, f: f64, k: u32) -> f64 {
    let ln_choose = |n: u32, i: u32| -> f64 {
        (1..=i)
            .map(|j| f64::from(n - i + j).ln() - f64::from(j).ln())
            .sum()
    };
    (k..=n)
        .map(|i| {
            (ln_choose(n, i) + f64::from(i) * f.ln() + f64::from(n - i) * (1.0 - f).ln()).exp()
        })
        .sum()
}

/// What the chain has recorded about a validator during an epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// Certificates of the validator's committee that carry its vote.
    pub votes_in_certificates: u64,
    /// Certificates its committee produced while it was a member.
    pub certificates: u64,
    /// Its proposer slots that ended in a certified block.
    pub blocks_proposed: u64,
    /// Its proposer slots.
    pub proposer_slots: u64,
    /// Faults (double votes, equivocating proposals) proven on chain.
    pub faults_proven: u32,
    /// Periods whose storage proofs the validator's account missed as a storage node (one per shard and
    /// period with a missed slot, `specs/economics.md` §5.7).
    pub storage_faults: u32,
}

fn ratio_ppm(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        (u128::from(part.min(whole)) * u128::from(PPM) / u128::from(whole)) as u64
    }
}

/// reputation = (0.7 x vote participation + 0.3 x proposal success) / 2^(faults + storage faults), in parts
/// per million.
pub fn reputation_ppm(s: &Signals) -> u64 {
    let participation = ratio_ppm(s.votes_in_certificates, s.certificates);
    let proposals = ratio_ppm(s.blocks_proposed, s.proposer_slots);
    let base = (7 * participation + 3 * proposals) / 10;
    base >> s.faults_proven.saturating_add(s.storage_faults).min(63)
}

/// A storage node's standing for placement, in parts per million: halved by each period it missed in the
/// current epoch and the one before (`faults`), so a node that lost data is placed last until it has proven
/// for a whole epoch.
pub fn storage_reputation_ppm(faults: u32) -> u64 {
    PPM >> faults.min(63)
}

/// likelihood weight = stake x (1 + reputation), in base units x 10^6 (exact integer arithmetic).
pub fn weight(stake: Amount, reputation_ppm: u64) -> u128 {
    u128::from(stake.0) * u128::from(PPM + reputation_ppm.min(PPM))
}

/// The randomness of `epoch`: no single validator chooses it, because it is fixed by a signature that needs
/// more than two thirds of the previous committee's weight.
pub fn epoch_randomness(epoch: u64, previous_aggregate_signature: &[u8]) -> Hash {
    hash_with(
        domain::RANDOMNESS,
        &[&epoch.to_be_bytes(), previous_aggregate_signature],
    )
}

/// A validator as the registry on the beacon chain lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: Address,
    pub stake: Amount,
    pub reputation_ppm: u64,
}

impl Candidate {
    pub fn weight(&self) -> u128 {
        weight(self.stake, self.reputation_ppm)
    }
}

/// An endless stream of uniform draws derived from a seed (blake3 in XOF mode).
pub struct Draws {
    reader: blake3::OutputReader,
}

impl Draws {
    pub fn new(context: &str, parts: &[&[u8]]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(context);
        for p in parts {
            h.update(p);
        }
        Self {
            reader: h.finalize_xof(),
        }
    }

    /// A value in `0..n` (n > 0). A 128-bit draw reduced modulo n: the bias is below n / 2^128.
    pub fn below(&mut self, n: u128) -> u128 {
        assert!(n > 0, "draw from an empty range");
        let mut bytes = [0u8; 16];
        self.reader.fill(&mut bytes);
        u128::from_be_bytes(bytes) % n
    }
}

/// Picks an index with probability proportional to its weight; `None` if every weight is zero.
pub fn weighted_pick(weights: &[u128], draws: &mut Draws) -> Option<usize> {
    let total: u128 = weights.iter().sum();
    if total == 0 {
        return None;
    }
    let mut x = draws.below(total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return Some(i);
        }
        x -= w;
    }
    unreachable!("x < total = sum of weights")
}

/// The committees of an epoch, one per shard, as a pure function of the epoch randomness, the registry and
/// the previous committees (empty at genesis). Committees are disjoint. From each previous committee at most
/// `size / 3` eligible members are rotated out; members that left the registry or lost all weight are
/// always replaced. Seats are filled by weighted sampling without replacement.
pub fn select_committees(
    randomness: &Hash,
    registry: &[Candidate],
    previous: &[Vec<Address>],
    shard_count: u16,
    size: usize,
) -> Vec<Vec<Address>> {
    select_committees_benching(
        randomness,
        registry,
        previous,
        shard_count,
        size,
        &BTreeSet::new(),
    )
}

/// [`select_committees`], with `benched` validators drawn last: only when no other eligible validator (not
/// even one rotated out this epoch) is left for a seat. The beacon chain benches the members of a stalled
/// shard's committee when it redraws that committee from scratch (its `previous` entry empty): whoever
/// stopped it is likely among them, so the fresh committee is made of others whenever the registry allows.
pub fn select_committees_benching(
    randomness: &Hash,
    registry: &[Candidate],
    previous: &[Vec<Address>],
    shard_count: u16,
    size: usize,
    benched: &BTreeSet<Address>,
) -> Vec<Vec<Address>> {
    let mut eligible: Vec<&Candidate> = registry.iter().filter(|c| c.weight() > 0).collect();
    eligible.sort_by_key(|c| c.id);
    eligible.dedup_by_key(|c| c.id);
    let is_eligible = |id: &Address| eligible.binary_search_by_key(id, |c| c.id).is_ok();

    // Phase 1: who stays on each shard.
    let mut seated: BTreeSet<Address> = BTreeSet::new();
    let mut rotated_out: BTreeSet<Address> = BTreeSet::new();
    let mut committees: Vec<Vec<Address>> = Vec::with_capacity(usize::from(shard_count));
    for shard in 0..shard_count {
        let mut draws = Draws::new(
            domain::SAMPLING,
            &[randomness, b"rotate", &shard.to_be_bytes()],
        );
        let prev = previous
            .get(usize::from(shard))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut keep: Vec<Address> = Vec::new();
        for id in prev {
            if is_eligible(id) && !seated.contains(id) && keep.len() < size {
                keep.push(*id);
                seated.insert(*id);
            }
        }
        let forced = size.saturating_sub(keep.len());
        let voluntary = (size / 3).saturating_sub(forced).min(keep.len());
        for _ in 0..voluntary {
            let i =
                usize::try_from(draws.below(keep.len() as u128)).expect("an index below a usize");
            let out = keep.remove(i);
            rotated_out.insert(out);
            seated.remove(&out);
        }
        committees.push(keep);
    }
    // Everything kept is seated; rotated-out members stay out this epoch unless nobody else is left.
    for c in &committees {
        seated.extend(c.iter().copied());
    }

    // Phase 2: fill the free seats.
    for (shard, committee) in committees.iter_mut().enumerate() {
        let shard = u16::try_from(shard).expect("at most shard_count shards");
        let mut draws = Draws::new(
            domain::SAMPLING,
            &[randomness, b"fill", &shard.to_be_bytes()],
        );
        // Three passes: neither rotated out nor benched, then rotated out too, then anyone left. With no
        // one benched the third pass finds the same empty pool the second ended with and draws nothing, so
        // the draws are those of a selection without benching.
        for (allows_rotated, allows_benched) in [(false, false), (true, false), (true, true)] {
            let mut pool: Vec<&Candidate> = eligible
                .iter()
                .copied()
                .filter(|c| {
                    !seated.contains(&c.id)
                        && (allows_rotated || !rotated_out.contains(&c.id))
                        && (allows_benched || !benched.contains(&c.id))
                })
                .collect();
            while committee.len() < size {
                let weights: Vec<u128> = pool.iter().map(|c| c.weight()).collect();
                let Some(i) = weighted_pick(&weights, &mut draws) else {
                    break;
                };
                let chosen = pool.remove(i);
                seated.insert(chosen.id);
                committee.push(chosen.id);
            }
        }
    }
    committees
}

#[cfg(test)]
mod tests {

    #[test]
    fn public_committee_size_bounds_capture() {
        let n = u32::try_from(COMMITTEE_SIZE_PUBLIC).expect("small");
        let quorum = 2 * n / 3 + 1;
        let halt = n - quorum + 1;
        // The figures specs/consensus.md gives for the default size.
        assert!(capture_probability(n, 0.20, halt) < 2e-10);
        assert!(capture_probability(n, 0.25, halt) < 1e-4);
        assert!(capture_probability(n, 0.25, quorum) < 1e-60);
        // And the small committees the table starts from, against the exact tails.
        assert!((capture_probability(4, 0.25, 2) - 0.2617).abs() < 1e-3);
        assert!((capture_probability(100, 0.2, 34) - 7.4e-4).abs() < 0.1e-4);
        // The whole distribution sums to one.
        assert!((capture_probability(10, 0.5, 0) - 1.0).abs() < 1e-9);
    }

    use super::*;
    use std::collections::BTreeMap;

    fn id(i: u32) -> Address {
        Address(hash_with("test validator", &[&i.to_be_bytes()]))
    }

    fn registry(stakes: &[u64]) -> Vec<Candidate> {
        stakes
            .iter()
            .enumerate()
            .map(|(i, s)| Candidate {
                id: id(i as u32),
                stake: Amount(*s),
                reputation_ppm: 0,
            })
            .collect()
    }

    fn seed(i: u64) -> Hash {
        epoch_randomness(i, b"test")
    }

    #[test]
    fn reputation_formula_table() {
        let check = |s: Signals, expected: u64| assert_eq!(reputation_ppm(&s), expected, "{s:?}");
        check(Signals::default(), 0);
        let perfect = Signals {
            votes_in_certificates: 10,
            certificates: 10,
            blocks_proposed: 2,
            proposer_slots: 2,
            faults_proven: 0,
            storage_faults: 0,
        };
        check(perfect, 1_000_000);
        check(
            Signals {
                faults_proven: 1,
                ..perfect
            },
            500_000,
        );
        // A missed storage period counts like a proven fault; both add up.
        check(
            Signals {
                storage_faults: 1,
                ..perfect
            },
            500_000,
        );
        check(
            Signals {
                faults_proven: 1,
                storage_faults: 2,
                ..perfect
            },
            125_000,
        );
        assert_eq!(storage_reputation_ppm(0), 1_000_000);
        assert_eq!(storage_reputation_ppm(2), 250_000);
        assert_eq!(storage_reputation_ppm(u32::MAX), 0);
        check(
            Signals {
                faults_proven: 100,
                ..perfect
            },
            0,
        );
        check(
            Signals {
                votes_in_certificates: 5,
                ..perfect
            },
            650_000,
        );
        check(
            Signals {
                blocks_proposed: 0,
                ..perfect
            },
            700_000,
        );
        // Counts beyond the slots cannot raise reputation above one.
        check(
            Signals {
                votes_in_certificates: 99,
                ..perfect
            },
            1_000_000,
        );
        assert_eq!(weight(Amount(10), 500_000), 15_000_000);
        assert_eq!(weight(Amount(10), 9_000_000), 20_000_000);
    }

    #[test]
    fn selection_is_a_pure_function() {
        let reg = registry(&[5, 1, 9, 3, 3, 7, 2, 8, 1, 4, 6, 6, 2, 9, 1, 5]);
        let a = select_committees(&seed(1), &reg, &[], 3, 4);
        let b = select_committees(&seed(1), &reg, &[], 3, 4);
        assert_eq!(a, b);
        // The registry's order does not matter, only its contents.
        let mut shuffled = reg.clone();
        shuffled.reverse();
        assert_eq!(select_committees(&seed(1), &shuffled, &[], 3, 4), a);
        assert_ne!(select_committees(&seed(2), &reg, &[], 3, 4), a);
        let all: BTreeSet<Address> = a.iter().flatten().copied().collect();
        assert_eq!(all.len(), 12, "committees are disjoint and full");
    }

    #[test]
    fn seats_follow_weights_statistically() {
        // One seat, four candidates with weights 1:2:3:4, over 20,000 epochs.
        let reg = registry(&[1, 2, 3, 4]);
        let mut counts: BTreeMap<Address, u32> = BTreeMap::new();
        let trials = 20_000;
        for i in 0..trials {
            let c = select_committees(&seed(i), &reg, &[], 1, 1);
            *counts.entry(c[0][0]).or_default() += 1;
        }
        for (i, c) in reg.iter().enumerate() {
            let expected = f64::from(trials as u32) * (i as f64 + 1.0) / 10.0;
            let got = f64::from(counts.get(&c.id).copied().unwrap_or(0));
            // Four standard deviations of a binomial: fails by chance about once in 15,000 runs.
            let sd = (expected * (1.0 - (i as f64 + 1.0) / 10.0)).sqrt();
            assert!(
                (got - expected).abs() < 4.0 * sd,
                "candidate {i}: {got} seats, expected {expected}"
            );
        }
        // Reputation counts too: equal stakes, one with full reputation gets twice the weight.
        let mut reg = registry(&[1, 1]);
        reg[0].reputation_ppm = PPM;
        let first = (0..6000)
            .filter(|i| select_committees(&seed(*i), &reg, &[], 1, 1)[0][0] == reg[0].id)
            .count();
        assert!(
            (3800..4200).contains(&first),
            "{first} of 6000, expected about 4000"
        );
    }

    #[test]
    fn at_most_a_third_swaps_per_epoch() {
        let reg = registry(&(1..=40).collect::<Vec<_>>());
        let size = 7;
        let mut committees = select_committees(&seed(0), &reg, &[], 4, size);
        for epoch in 1..200 {
            let next = select_committees(&seed(epoch), &reg, &committees, 4, size);
            for (prev, new) in committees.iter().zip(&next) {
                assert_eq!(new.len(), size);
                let joined = new.iter().filter(|v| !prev.contains(v)).count();
                assert!(
                    joined <= size / 3,
                    "epoch {epoch}: {joined} of {size} swapped"
                );
            }
            let all: BTreeSet<Address> = next.iter().flatten().copied().collect();
            assert_eq!(all.len(), 4 * size, "disjoint");
            committees = next;
        }
    }

    #[test]
    fn departed_members_are_always_replaced() {
        let mut reg = registry(&[5; 12]);
        let before = select_committees(&seed(0), &reg, &[], 1, 6);
        // Half the committee unstakes: all of them go, even though that is more than a third.
        for c in reg.iter_mut() {
            if before[0][..3].contains(&c.id) {
                c.stake = Amount(0);
            }
        }
        let after = select_committees(&seed(1), &reg, &before, 1, 6);
        assert_eq!(after[0].len(), 6);
        assert!(before[0][..3].iter().all(|gone| !after[0].contains(gone)));
        assert!(
            before[0][3..].iter().all(|stay| after[0].contains(stay)),
            "no voluntary rotation on top"
        );
    }

    #[test]
    fn small_registries_fill_what_they_can() {
        let reg = registry(&[1, 1, 0]);
        let c = select_committees(&seed(0), &reg, &[], 2, 2);
        assert_eq!(
            c.iter().map(Vec::len).sum::<usize>(),
            2,
            "the zero-weight candidate is never seated"
        );
    }
}
