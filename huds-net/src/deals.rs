//! Storage deals from the network's side (`specs/economics.md` §3): the terms a client builds from where its
//! shards went, and a holder's check before it signs.
//!
//! A holder's chain account key is its libp2p ed25519 identity key, so a peer id names an account and the
//! deal's holder table is the placement's peers. The client sends each holder a [`SignRequest`]: the owner,
//! the terms, and for every shard the terms place on that holder its CID, its commitment and the list proof
//! of its leaf under the terms' `commitments_root`. The holder signs the deal id only when every one of its
//! shards is in its store, commits to what the request says, proves under the root at its position, when the
//! request covers exactly the positions the placement gives it, and when the price it is offered is at least
//! its own. Its signature is its promise to keep those shards for the deal's periods.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cid::Cid;
use libp2p::{PeerId, identity};

use chain::codec::{DecodeError, Reader, Writer};
use chain::crypto::{Hash, PublicKey, Signature};
use chain::pieces::{self, Commitment};
use chain::smt::{self, ListProof};
use chain::types::deal::{self, DealTerms, Holder};
use chain::{Address, Amount};
use huds::BlockStore;
use huds::store::Store;

/// How a holder's refusal begins when it is checking another request.
const BUSY: &str = "busy checking another deal";
/// Times a client asks a busy holder again, 200 ms apart.
const SIGN_ATTEMPTS_MAX: u32 = 50;

/// Shards one sign request may claim: every shard of the largest deal.
const CLAIMS_MAX: usize = deal::DEAL_SHARDS_MAX;
/// The bytes of a shard CID in a request, at most.
const CID_BYTES_MAX: usize = 96;

/// The chain account key of a peer: its ed25519 identity key. None for peers with other key types.
pub fn holder_key(peer: &PeerId) -> Option<PublicKey> {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let public = identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(PublicKey(public.try_into_ed25519().ok()?.to_bytes()))
}

/// The leaf of one shard under a deal's `commitments_root`: its CID and its commitment, so that the deal
/// names the shards a repairer must fetch as well as what each holds.
pub fn shard_leaf(cid: &Cid, commitment: &Commitment) -> Hash {
    deal::shard_leaf(&cid.to_bytes(), commitment)
}

/// One shard as an add placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedShard {
    pub segment: u64,
    pub index: u8,
    pub cid: Cid,
    pub holder: PeerId,
    pub commitment: Commitment,
}

/// A shard a sign request asks a holder to vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardClaim {
    /// The shard's position in the deal's placement.
    pub position: u32,
    pub cid: Cid,
    pub commitment: Commitment,
    pub path: ListProof,
}

/// What a client sends a holder to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    pub chain_id: u32,
    pub owner: Address,
    pub terms: DealTerms,
    pub claims: Vec<ShardClaim>,
}

impl SignRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.chain_id).fixed(&self.owner.0);
        self.terms.encode_into(&mut w);
        w.u32(self.claims.len() as u32);
        for c in &self.claims {
            w.u32(c.position).var(&c.cid.to_bytes());
            w.u64(c.commitment.len).fixed(&c.commitment.root);
            c.path.encode_into(&mut w);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let chain_id = r.u32()?;
        let owner = Address(r.array()?);
        let terms = DealTerms::decode_from(&mut r)?;
        let count = r.count("shard claims", CLAIMS_MAX, 4 + 4 + 8 + 32 + 16 + 4)?;
        let mut claims = Vec::with_capacity(count);
        for _ in 0..count {
            let position = r.u32()?;
            let cid = Cid::try_from(r.var("shard CID", CID_BYTES_MAX)?)
                .map_err(|_| DecodeError::Invalid("shard CID"))?;
            let commitment = Commitment {
                len: r.u64()?,
                root: r.array()?,
            };
            claims.push(ShardClaim {
                position,
                cid,
                commitment,
                path: ListProof::decode_from(&mut r)?,
            });
        }
        r.finish()?;
        Ok(Self {
            chain_id,
            owner,
            terms,
            claims,
        })
    }
}

/// Why terms cannot be built from a placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("the placement has no shards")]
    Empty,
    #[error("segment {segment} is missing shard {index}")]
    Missing { segment: u64, index: u8 },
    #[error("peer {0} has no ed25519 identity, so it cannot hold a deal")]
    NotAnAccount(PeerId),
    #[error("the deal is impossible: {0}")]
    Terms(#[from] deal::DealError),
}

/// A deal built from an add's placement: the terms and, per holder, what to send it.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub terms: DealTerms,
    /// Per holder (in the terms' order): its peer and its claims.
    pub requests: Vec<(PeerId, Vec<ShardClaim>)>,
}

/// Builds deal terms over `placed` (every shard of every segment of one file, in any order) at `price` per
/// GiB per period for every holder.
pub fn propose(
    root: &Cid,
    size: u64,
    k: u8,
    m: u8,
    periods: u64,
    price: Amount,
    placed: &[PlacedShard],
) -> Result<Proposal, BuildError> {
    let n = usize::from(k) + usize::from(m);
    let mut shards: Vec<&PlacedShard> = placed.iter().collect();
    shards.sort_by_key(|s| (s.segment, s.index));
    if shards.is_empty() {
        return Err(BuildError::Empty);
    }
    let mut peers: Vec<PeerId> = Vec::new();
    let mut placement = Vec::with_capacity(shards.len());
    let mut segment_lens = Vec::new();
    for (position, s) in shards.iter().enumerate() {
        let (segment, index) = ((position / n.max(1)) as u64, (position % n.max(1)) as u8);
        if s.segment != segment || s.index != index {
            return Err(BuildError::Missing { segment, index });
        }
        if index == 0 {
            segment_lens.push(s.commitment.len);
        }
        let holder = match peers.iter().position(|p| *p == s.holder) {
            Some(h) => h,
            None => {
                peers.push(s.holder);
                peers.len() - 1
            }
        };
        placement.push(u8::try_from(holder).unwrap_or(u8::MAX));
    }
    let holders = peers
        .iter()
        .map(|p| {
            holder_key(p)
                .map(|key| Holder { key, price })
                .ok_or(BuildError::NotAnAccount(*p))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaves: Vec<Hash> = shards
        .iter()
        .map(|s| shard_leaf(&s.cid, &s.commitment))
        .collect();
    let terms = DealTerms {
        root: root.to_bytes(),
        size,
        k,
        m,
        periods,
        holders,
        placement,
        segment_lens,
        commitments_root: smt::list_root(&leaves),
    };
    terms.check()?;
    let mut requests: Vec<(PeerId, Vec<ShardClaim>)> =
        peers.iter().map(|p| (*p, Vec::new())).collect();
    for (position, s) in shards.iter().enumerate() {
        let holder = usize::from(terms.placement[position]);
        requests[holder].1.push(ShardClaim {
            position: position as u32,
            cid: s.cid,
            commitment: s.commitment,
            path: smt::list_prove(&leaves, position),
        });
    }
    Ok(Proposal { terms, requests })
}

/// The price a client offers and a node asks unless told otherwise: 1 IOST per GiB per period.
pub const PRICE_DEFAULT: Amount = Amount(100_000_000);

/// What a client asks for when its add should become a deal: who pays, on which chain, for how long and at
/// what price per GiB per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DealAsk {
    pub chain_id: u32,
    pub owner: Address,
    pub periods: u64,
    pub price: Amount,
}

/// The terms of an added file's deal with every holder's signature, gathered one holder at a time over the
/// shard protocol (this node signs for the shards it holds itself). The deal's root is the file's root CID
/// when it is public, else its sealed manifest's CID (never the plaintext CID of a private file). Fails naming
/// the holder that refused and why.
pub async fn gather(
    node: &crate::node::NodeHandle,
    added: &huds::add::Added,
    public: bool,
    (k, m): (u8, u8),
    placed: &[PlacedShard],
    ask: &DealAsk,
) -> Result<(DealTerms, Vec<Signature>), String> {
    let root = if public {
        &added.root
    } else {
        &added.manifest_cid
    };
    let proposal = propose(root, added.size, k, m, ask.periods, ask.price, placed)
        .map_err(|e| e.to_string())?;
    let mut signatures = Vec::with_capacity(proposal.requests.len());
    for (peer, claims) in &proposal.requests {
        let request = SignRequest {
            chain_id: ask.chain_id,
            owner: ask.owner,
            terms: proposal.terms.clone(),
            claims: claims.clone(),
        };
        // A holder checks one request at a time and refuses the others meanwhile: ask again a while.
        let mut attempts = 0;
        let signature = loop {
            match node.sign_deal(*peer, &request).await {
                Err(crate::node::NetError::Refused { reason, .. })
                    if reason.starts_with(BUSY) && attempts < SIGN_ATTEMPTS_MAX =>
                {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                r => break r.map_err(|e| format!("holder {peer} did not sign: {e}"))?,
            }
        };
        signatures.push(signature);
    }
    Ok((proposal.terms, signatures))
}

/// What a holder signs with, on which chain and for how much.
#[derive(Clone)]
pub struct DealSigner {
    keypair: identity::Keypair,
    /// The least this node accepts, in base units per GiB per period.
    price: Amount,
    chain_id: u32,
    /// Held while a request is checked: checking re-hashes every claimed shard from the store, so one runs
    /// at a time and a request arriving meanwhile is refused (the client asks again), never queued.
    busy: Arc<Mutex<()>>,
    /// Where the deals it signed are kept, for its prover (none: it keeps no record).
    held: Option<PathBuf>,
}

impl DealSigner {
    pub fn new(keypair: identity::Keypair, price: Amount, chain_id: u32) -> Self {
        Self {
            keypair,
            price,
            chain_id,
            busy: Arc::new(Mutex::new(())),
            held: None,
        }
    }

    /// Keeps each signed deal's request in `dir` (one file per deal), so that the node's prover knows what
    /// it must prove.
    pub fn keeping_deals_in(mut self, dir: PathBuf) -> Self {
        self.held = Some(dir);
        self
    }

    /// The directory signed deals are kept in, if any.
    pub fn held_dir(&self) -> Option<&std::path::Path> {
        self.held.as_deref()
    }

    /// The key this node signs deals and is paid with.
    pub fn public_key(&self) -> Option<PublicKey> {
        let key = self.keypair.public().try_into_ed25519().ok()?;
        Some(PublicKey(key.to_bytes()))
    }
}

impl std::fmt::Debug for DealSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DealSigner")
            .field("peer", &self.keypair.public().to_peer_id())
            .field("price", &self.price)
            .finish()
    }
}

/// The holder's side: checks a sign request against the store and signs the deal id, or says why not.
/// Reads each claimed shard once (at most 64 MiB at a time).
pub fn check_and_sign(
    store: &Store,
    signer: &DealSigner,
    request: &SignRequest,
) -> Result<Signature, String> {
    let me = PublicKey(
        signer
            .keypair
            .public()
            .try_into_ed25519()
            .map_err(|_| "this node's identity is not an ed25519 key".to_string())?
            .to_bytes(),
    );
    if request.chain_id != signer.chain_id {
        return Err(format!(
            "the deal is for chain {}; this node takes deals on chain {}",
            request.chain_id, signer.chain_id
        ));
    }
    let terms = &request.terms;
    terms.check().map_err(|e| format!("impossible deal: {e}"))?;
    // Each shard is read and hashed once per request at most.
    let mut seen = HashSet::new();
    if let Some(c) = request.claims.iter().find(|c| !seen.insert(c.cid)) {
        return Err(format!("shard {} is claimed twice", c.cid));
    }
    let _busy = signer
        .busy
        .try_lock()
        .map_err(|_| format!("{BUSY}: ask again shortly"))?;
    let holder = terms
        .holders
        .iter()
        .position(|h| h.key == me)
        .ok_or("the deal does not name this node as a holder")?;
    if terms.holders[holder].price < signer.price {
        return Err(format!(
            "the deal offers {} per GiB per period; this node asks {}",
            terms.holders[holder].price, signer.price
        ));
    }
    let mine: Vec<u32> = terms
        .placement
        .iter()
        .enumerate()
        .filter(|(_, h)| usize::from(**h) == holder)
        .map(|(i, _)| i as u32)
        .collect();
    let claimed: Vec<u32> = request.claims.iter().map(|c| c.position).collect();
    if claimed != mine {
        return Err(format!(
            "the request claims positions {claimed:?}; the placement gives this node {mine:?}"
        ));
    }
    let n = terms.segment_shards();
    for c in &request.claims {
        let segment = c.position as usize / n;
        if terms.segment_lens.get(segment) != Some(&c.commitment.len) {
            return Err(format!("shard {} has the wrong length", c.cid));
        }
        if c.path.index != u64::from(c.position)
            || c.path.len != terms.placement.len() as u64
            || !smt::list_verify(
                &terms.commitments_root,
                &shard_leaf(&c.cid, &c.commitment),
                &c.path,
            )
        {
            return Err(format!(
                "shard {} is not at position {} of the deal's commitments",
                c.cid, c.position
            ));
        }
        let bytes = store
            .shard(&c.cid)
            .map_err(|e| format!("reading shard {}: {e}", c.cid))?
            .ok_or_else(|| format!("this node does not hold shard {}", c.cid))?;
        let held = pieces::commit(&bytes).map_err(|e| e.to_string())?;
        if held != c.commitment {
            return Err(format!(
                "shard {} does not commit to what the request says",
                c.cid
            ));
        }
    }
    let id = terms.id(&request.owner);
    let message = deal::signing_message(request.chain_id, &id);
    let signature = signer
        .keypair
        .sign(&message)
        .map_err(|e| format!("signing: {e}"))?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| "an ed25519 signature is 64 bytes".to_string())?;
    if let Some(dir) = &signer.held {
        crate::prover::keep(dir, &id, request)
            .map_err(|e| format!("recording the deal before signing it: {e}"))?;
        // The shards are the deal's from now until its last proof window closes: no collection takes them.
        let cids: Vec<Cid> = request.claims.iter().map(|c| c.cid).collect();
        store
            .hold_for_deal(&id, &cids)
            .map_err(|e| format!("marking the deal's shards held: {e}"))?;
    }
    Ok(Signature(signature))
}
