//! Test committees and a perfect network for the replica, shared by the replica's unit tests (over the
//! ledger) and `tests/toy_app.rs` (over an application that knows nothing of the ledger). Not for
//! production: a node runs replicas through `crate::node`, and faults are the simulators' business
//! (`tests/simulator.rs`, `tests/node_simulator.rs`).

use super::{App, Bls, Committee, Config, Input, Member, Message, Output, Replica};
use crate::address::Address;
use crate::crypto::{Hash, bls};
use crate::ids::MemberIndex;
use crate::types::block::Block;
use std::collections::VecDeque;

/// A committee of `n` members of weight 1, member `i` signing with the BLS key
/// `bls::SecretKey::dev("{label}/{i}")` and known by the account `id_of(i)`; the keys, in member order.
pub fn committee(
    n: usize,
    label: &str,
    id_of: impl Fn(usize) -> Address,
    seed: Hash,
) -> (Committee<Bls>, Vec<bls::SecretKey>) {
    let keys: Vec<bls::SecretKey> = (0..n)
        .map(|i| bls::SecretKey::dev(&format!("{label}/{i}")))
        .collect();
    let members = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            id: id_of(i),
            public: k.public(),
            weight: 1,
        })
        .collect();
    (Committee::new(members, seed), keys)
}

/// One replica per key of `committee`, member `i` over the application `app(i)`, each starting from
/// whatever its application's store holds.
pub fn replicas<A: App>(
    config: &Config,
    committee: &Committee<Bls>,
    keys: Vec<bls::SecretKey>,
    mut app: impl FnMut(usize) -> A,
) -> Vec<Replica<Bls, A>> {
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| {
            let me = MemberIndex::at(i).expect("test committees are small");
            Replica::new(config.clone(), committee.clone(), me, k, app(i))
                .expect("the replica opens its application's store")
        })
        .collect()
}

/// What a test watches and changes on a [`PerfectNetwork`].
pub trait Watch<A: App> {
    /// Whether the run is over.
    fn done(&mut self, replicas: &[Replica<Bls, A>]) -> bool;
    /// Replica `replica` committed `block` at `height`.
    fn committed(&mut self, _replica: usize, _height: u64, _block: &Block) {}
    /// What reaches replica `to` when `message` is sent to it, in order: the message itself unless the
    /// test drops or changes it.
    fn deliver(&mut self, _to: usize, message: Message<Bls>) -> Vec<Message<Bls>> {
        vec![message]
    }
}

/// A network with no delay and no loss: every message is delivered at once, in the order sent, and when
/// nothing is in flight the clock jumps to the replicas' next timeout. An honest committee on it never
/// produces evidence, so evidence fails the test.
#[derive(Default)]
pub struct PerfectNetwork {
    /// The simulated clock, carried from one run to the next.
    pub now_ms: u64,
    inbox: VecDeque<(usize, MemberIndex, Message<Bls>)>,
}

impl PerfectNetwork {
    /// Runs `replicas` until `watch` says done or the clock reaches `time_limit_ms`.
    pub fn run<A: App>(
        &mut self,
        replicas: &mut [Replica<Bls, A>],
        time_limit_ms: u64,
        watch: &mut impl Watch<A>,
    ) {
        let n = replicas.len();
        // What was in flight when the last run stopped is lost, as on a network that went down meanwhile.
        self.inbox.clear();
        for r in replicas.iter_mut() {
            r.handle(self.now_ms, Input::Tick);
        }
        while self.now_ms < time_limit_ms && !watch.done(replicas) {
            for (i, r) in replicas.iter_mut().enumerate() {
                let from = MemberIndex::at(i).expect("test committees are small");
                while let Some(out) = r.poll_output() {
                    match out {
                        Output::Broadcast(m) => {
                            for j in (0..n).filter(|j| *j != i) {
                                for m in watch.deliver(j, m.clone()) {
                                    self.inbox.push_back((j, from, m));
                                }
                            }
                        }
                        Output::Send { to, message } => {
                            for m in watch.deliver(to.index(), message) {
                                self.inbox.push_back((to.index(), from, m));
                            }
                        }
                        Output::Committed { height, block, .. } => {
                            watch.committed(i, height, &block)
                        }
                        Output::Evidence(e) => panic!("an honest committee, yet evidence: {e:?}"),
                    }
                }
            }
            if let Some((to, from, message)) = self.inbox.pop_front() {
                replicas[to].handle(self.now_ms, Input::Message { from, message });
            } else {
                self.now_ms = replicas
                    .iter()
                    .filter_map(|r| r.poll_timeout())
                    .min()
                    .unwrap_or(self.now_ms + 1)
                    .max(self.now_ms);
                for r in replicas.iter_mut() {
                    r.handle(self.now_ms, Input::Tick);
                }
            }
        }
    }
}
