//! The commitment tree: a Merkle sum tree with search separators over the shards a node holds.
//!
//! Each epoch a node commits to its shards as entries `(root, size)` sorted strictly ascending
//! by root (strictly ascending in their first 16 bytes, in fact). An auditor samples byte
//! positions uniformly over all committed bytes; the node shows which entry holds each sampled
//! byte and proves, with one [`MultiProof`], that those entries are in the commitment.
//!
//! * **Sums.** Every node commits to the number of bytes under it, so the verifier *derives*
//!   each proven entry's offset (the bytes of the left siblings along its path) instead of
//!   taking the prover's word: two entries cannot both claim the same positions.
//! * **Separators.** Every internal node commits to `sep`, the first 16 bytes of the smallest
//!   root in its right subtree; every leaf on the left must have `root[..16] < sep`, every leaf
//!   on the right `root[..16] >= sep`. The verifier checks this along each proven path, so
//!   leaves with valid paths are strictly increasing in their 16-byte prefix: a node listing one
//!   shard many times (to dilute the challenges) fails whenever a challenge lands on a copy.
//! * **Shape.** Level 0 holds the leaves in order; level `l` has `ceil(n / 2^l)` nodes; node
//!   `i` at level `l + 1` has children `2i` and `2i + 1` at level `l`, and a last node without
//!   a right sibling is carried up unchanged (same hash, same bytes, no separator). The root is
//!   the single node at the top; the empty tree's root is a fixed digest and holds 0 bytes.
//! * **Hashes.** `leaf = H("cairn-proofs tree leaf v1", root, size)` and `node = H("cairn-proofs
//!   tree node v1", left.hash, left.bytes, right.hash, right.bytes, sep)`, numbers
//!   little-endian, each part length-prefixed (BLAKE3 in key-derivation mode).
//!
//! The root digest does not include the entry count: a proof binds the count only through the
//! shape of its paths (a proof that includes the last leaf pins it down). The total number of
//! bytes is bound, since the top node's byte count must equal it.

use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::codec::digest;

#[cfg(test)]
mod tests;

const LEAF_CONTEXT: &str = "cairn-proofs tree leaf v1";
const NODE_CONTEXT: &str = "cairn-proofs tree node v1";
const EMPTY_CONTEXT: &str = "cairn-proofs tree empty v1";

/// The most entries one tree may hold: 2^32.
pub const MAX_ENTRIES: u64 = 1 << 32;

/// Bytes per sibling in a [`MultiProof`]: a 32-byte hash, then its byte count (u64 LE).
const NODE_LEN: usize = 40;
/// Bytes per separator in a [`MultiProof`].
const SEP_LEN: usize = 16;
/// Bytes per proven entry in a [`MultiProof`]: the shard root, then its size (u64 LE).
const ENTRY_LEN: usize = 40;

/// One committed shard: its BLAKE3 root and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The shard's root hash (the digest in its CID).
    #[serde(with = "serde_bytes")]
    pub root: [u8; 32],
    /// The shard's size in bytes (never 0 in a tree).
    pub size: u64,
}

impl Entry {
    /// The first 16 bytes of the root: the key separators compare.
    fn prefix(&self) -> [u8; 16] {
        prefix(&self.root)
    }

    fn to_bytes(self) -> [u8; ENTRY_LEN] {
        let mut b = [0; ENTRY_LEN];
        b[..32].copy_from_slice(&self.root);
        b[32..].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let (root, size) = split_40(b)?;
        Some(Entry { root, size })
    }
}

/// The first 16 bytes of a root.
fn prefix(root: &[u8; 32]) -> [u8; 16] {
    let mut p = [0; 16];
    p.copy_from_slice(&root[..16]);
    p
}

/// A 40-byte record as (32 bytes, u64 LE), or `None` if `b` is not 40 bytes long.
fn split_40(b: &[u8]) -> Option<([u8; 32], u64)> {
    let (head, rest) = b.split_first_chunk::<32>()?;
    let (num, rest) = rest.split_first_chunk::<8>()?;
    rest.is_empty().then_some((*head, u64::from_le_bytes(*num)))
}

/// A tree node: its hash and the number of committed bytes under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    hash: [u8; 32],
    bytes: u64,
}

impl Node {
    fn leaf(e: &Entry) -> Node {
        Node {
            hash: digest(LEAF_CONTEXT, &[&e.root, &e.size.to_le_bytes()]).0,
            bytes: e.size,
        }
    }

    /// The parent of `left` and `right` under separator `sep`; `None` if the bytes overflow.
    fn parent(left: &Node, right: &Node, sep: &[u8; 16]) -> Option<Node> {
        let bytes = left.bytes.checked_add(right.bytes)?;
        let hash = digest(
            NODE_CONTEXT,
            &[
                &left.hash,
                &left.bytes.to_le_bytes(),
                &right.hash,
                &right.bytes.to_le_bytes(),
                sep,
            ],
        )
        .0;
        Some(Node { hash, bytes })
    }

    fn to_bytes(self) -> [u8; NODE_LEN] {
        let mut b = [0; NODE_LEN];
        b[..32].copy_from_slice(&self.hash);
        b[32..].copy_from_slice(&self.bytes.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let (hash, bytes) = split_40(b)?;
        Some(Node { hash, bytes })
    }
}

/// The root of the tree of no entries.
fn empty_root() -> Hash32 {
    digest(EMPTY_CONTEXT, &[])
}

/// The width of every level of a tree of `n` leaves, from the leaves (`n`) up to the top (1;
/// a single level of width `n` when `n` <= 1). At most 34 levels for `n` <= 2^32.
fn widths(n: u64) -> Vec<u64> {
    let mut w = vec![n];
    let mut last = n;
    while last > 1 {
        last = last.div_ceil(2);
        w.push(last);
    }
    w
}

/// Whether the sibling of `known[j]` (sorted, distinct) is itself in `known`.
fn sibling_known<T>(known: &[T], j: usize, index: impl Fn(&T) -> u64) -> bool {
    let Some(i) = known.get(j).map(&index) else {
        return false;
    };
    let other = if i & 1 == 0 {
        known.get(j + 1)
    } else {
        j.checked_sub(1).and_then(|k| known.get(k))
    };
    other.map(index) == Some(i ^ 1)
}

/// A commitment to a set of shards: all levels of the sum tree, about `2n` nodes.
#[derive(Clone)]
pub struct CommitTree {
    entries: Vec<Entry>,
    /// `levels[0]` are the leaves, the last level is the single top node (one empty level for
    /// the empty tree).
    levels: Vec<Vec<Node>>,
    root: Hash32,
    total: u64,
}

impl std::fmt::Debug for CommitTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitTree")
            .field("root", &self.root)
            .field("len", &self.entries.len())
            .field("total_bytes", &self.total)
            .finish_non_exhaustive()
    }
}

impl CommitTree {
    /// Builds the tree over `entries`, which must be sorted strictly ascending in the first 16
    /// bytes of their roots, have no size 0, be at most [`MAX_ENTRIES`] and add up to at most
    /// `u64::MAX` bytes.
    pub fn build(entries: Vec<Entry>) -> Result<Self, TreeError> {
        let count = entries.len() as u64;
        if count > MAX_ENTRIES {
            return Err(TreeError::TooManyEntries { count });
        }
        let mut total = 0u64;
        let mut previous: Option<[u8; 16]> = None;
        for (index, e) in (0u64..).zip(&entries) {
            if e.size == 0 {
                return Err(TreeError::ZeroSize { index });
            }
            total = total.checked_add(e.size).ok_or(TreeError::Overflow)?;
            let key = e.prefix();
            if previous.is_some_and(|p| p >= key) {
                return Err(TreeError::NotIncreasing { index });
            }
            previous = Some(key);
        }
        let mut levels = vec![entries.iter().map(Node::leaf).collect::<Vec<_>>()];
        let mut level = 0;
        while let Some(below) = levels.last().filter(|b| b.len() > 1) {
            let mut up = Vec::with_capacity(below.len().div_ceil(2));
            for (p, pair) in below.chunks(2).enumerate() {
                match pair {
                    [left, right] => {
                        // The right child's first leaf: 2p + 1 < width, so it exists.
                        let sep = entries[(2 * p + 1) << level].prefix();
                        up.push(Node::parent(left, right, &sep).ok_or(TreeError::Overflow)?);
                    }
                    [only] => up.push(*only),
                    _ => {}
                }
            }
            levels.push(up);
            level += 1;
        }
        let root = match levels.last().map(Vec::as_slice) {
            Some([top]) => Hash32(top.hash),
            _ => empty_root(),
        };
        Ok(CommitTree {
            entries,
            levels,
            root,
            total,
        })
    }

    /// The root digest: what a commitment signs.
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The number of committed bytes: the sum of the entries' sizes.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The leaf holding committed byte `pos` (< [`CommitTree::total_bytes`]) and `pos`'s
    /// offset inside that shard, by an O(log n) descent over the nodes' byte counts; `None` if
    /// `pos` is past the end.
    pub fn locate(&self, pos: u64) -> Option<(u64, u64)> {
        if pos >= self.total {
            return None;
        }
        let mut i = 0usize;
        let mut rest = pos;
        for below in self.levels.iter().rev().skip(1) {
            let left = 2 * i;
            i = match below.get(left + 1) {
                Some(_) if rest < below.get(left)?.bytes => left,
                Some(_) => {
                    rest -= below.get(left)?.bytes;
                    left + 1
                }
                None => left,
            };
        }
        let entry = self.entries.get(i)?;
        (rest < entry.size).then_some((i as u64, rest))
    }

    /// The leaf index of the shard with root `root`, if it is committed.
    pub fn find(&self, root: &[u8; 32]) -> Option<u64> {
        self.entries
            .binary_search_by(|e| e.root.cmp(root))
            .ok()
            .map(|i| i as u64)
    }

    /// One compact proof for the leaves `leaves` (in any order, repeats allowed): the tree
    /// nodes the verifier cannot compute, each sent once, and the separators on the paths.
    pub fn multiproof(&self, leaves: &[u64]) -> Result<MultiProof, TreeError> {
        self.prove_with(leaves, |level, parent| {
            self.entries[(2 * parent + 1) << level].prefix()
        })
    }

    /// [`CommitTree::multiproof`] with the separator of the node `parent` one level above
    /// `level` given by `sep` (tests build cheating trees with other separators).
    fn prove_with(
        &self,
        leaves: &[u64],
        sep: impl Fn(usize, usize) -> [u8; 16],
    ) -> Result<MultiProof, TreeError> {
        let count = self.len();
        let mut known = leaves.to_vec();
        known.sort_unstable();
        known.dedup();
        match known.last() {
            None => return Err(TreeError::NoLeaves),
            Some(&index) if index >= count => {
                return Err(TreeError::IndexOutOfRange { index, count });
            }
            Some(_) => {}
        }
        let indices = known.clone();
        let mut entries = Vec::with_capacity(known.len() * ENTRY_LEN);
        for &i in &known {
            entries.extend(self.entries[i as usize].to_bytes());
        }
        let mut siblings = Vec::new();
        let mut separators = Vec::new();
        for (level, below) in self.levels.iter().enumerate() {
            if below.len() <= 1 {
                break;
            }
            for (j, &i) in known.iter().enumerate() {
                let s = (i ^ 1) as usize;
                if s < below.len() && !sibling_known(&known, j, |&k| k) {
                    siblings.extend(below[s].to_bytes());
                }
            }
            known.dedup_by_key(|i| *i >> 1);
            for i in &mut known {
                *i >>= 1;
                if ((2 * *i + 1) as usize) < below.len() {
                    separators.extend(sep(level, *i as usize));
                }
            }
        }
        Ok(MultiProof {
            indices,
            entries,
            siblings,
            separators,
        })
    }
}

/// A proof that some leaves are in a [`CommitTree`]: the proven leaves and everything needed to
/// recompute the root from them, in one canonical order (so one set of leaves has one proof).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiProof {
    /// The proven leaves' indices, strictly ascending.
    indices: Vec<u64>,
    /// Their entries, 40 bytes each (root, then size as u64 LE), in the same order.
    #[serde(with = "serde_bytes")]
    entries: Vec<u8>,
    /// The sibling nodes the verifier cannot compute, 40 bytes each (hash, then byte count as
    /// u64 LE): level by level from the leaves up, within a level in ascending order.
    #[serde(with = "serde_bytes")]
    siblings: Vec<u8>,
    /// The separators of the internal nodes on the paths with two children, 16 bytes each:
    /// level by level from the bottom up, within a level in ascending order.
    #[serde(with = "serde_bytes")]
    separators: Vec<u8>,
}

impl MultiProof {
    /// A proof of no leaves: what an answer carries when nothing was asked of the tree (an
    /// empty commitment, or only shards the commitment declares lost). It proves nothing, so
    /// [`verify_multiproof`] refuses it; callers check [`MultiProof::is_empty`] first.
    pub fn empty() -> Self {
        MultiProof {
            indices: Vec::new(),
            entries: Vec::new(),
            siblings: Vec::new(),
            separators: Vec::new(),
        }
    }

    /// Whether this is [`MultiProof::empty`].
    pub fn is_empty(&self) -> bool {
        *self == Self::empty()
    }

    /// The indices of the leaves it claims to prove, as sent (ascending in a valid proof).
    pub fn indices(&self) -> &[u64] {
        &self.indices
    }

    /// The entries it claims for those leaves, as sent; `None` if they are not whole 40-byte
    /// records.
    pub fn entries(&self) -> Option<Vec<Entry>> {
        if !self.entries.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        self.entries
            .chunks_exact(ENTRY_LEN)
            .map(Entry::from_bytes)
            .collect()
    }
}

/// A proven leaf: its index, its entry, and its first byte's offset among the committed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The leaf's index in the tree.
    pub index: u64,
    /// The committed entry.
    pub entry: Entry,
    /// The offset of its first byte: the sum of the sizes of all entries before it.
    pub offset: u64,
}

/// Checks `proof` against a tree of `count` leaves, `total_bytes` bytes and root `root`, and
/// returns the places of the proven leaves, sorted by index. Offsets are derived from the
/// committed byte counts, and every proven leaf's path must obey the separator rule.
pub fn verify_multiproof(
    root: &Hash32,
    count: u64,
    total_bytes: u64,
    proof: &MultiProof,
) -> Result<Vec<Place>, TreeError> {
    if count > MAX_ENTRIES {
        return Err(TreeError::TooManyEntries { count });
    }
    let entries = proof
        .entries()
        .filter(|e| e.len() == proof.indices.len())
        .ok_or(TreeError::Malformed(
            "the entries are not one 40-byte record per index",
        ))?;
    if !proof.siblings.len().is_multiple_of(NODE_LEN) {
        return Err(TreeError::Malformed("the siblings are not 40-byte records"));
    }
    if !proof.separators.len().is_multiple_of(SEP_LEN) {
        return Err(TreeError::Malformed(
            "the separators are not 16-byte records",
        ));
    }
    for pair in proof.indices.windows(2) {
        if let [a, b] = pair
            && a >= b
        {
            return Err(TreeError::IndicesNotIncreasing { index: *b });
        }
    }
    match proof.indices.last() {
        None => return Err(TreeError::NoLeaves),
        Some(&index) if index >= count => {
            return Err(TreeError::IndexOutOfRange { index, count });
        }
        Some(_) => {}
    }
    let mut known = Vec::with_capacity(entries.len());
    for (&index, e) in proof.indices.iter().zip(&entries) {
        if e.size == 0 {
            return Err(TreeError::ZeroSize { index });
        }
        known.push((index, Node::leaf(e)));
    }

    // Bottom up: recompute the path nodes, remembering every node seen and every separator.
    let widths = widths(count);
    let mut siblings = proof.siblings.chunks_exact(NODE_LEN);
    let mut separators = proof.separators.chunks_exact(SEP_LEN);
    let mut seen: Vec<Vec<(u64, Node)>> = Vec::new();
    let mut seps: Vec<Vec<(u64, [u8; 16])>> = Vec::new();
    for (level, &width) in (0u32..).zip(&widths) {
        if width <= 1 {
            break;
        }
        let mut all = Vec::with_capacity(2 * known.len());
        for (j, &(i, node)) in known.iter().enumerate() {
            let s = i ^ 1;
            if s < width && !sibling_known(&known, j, |k| k.0) {
                let sibling = siblings
                    .next()
                    .and_then(Node::from_bytes)
                    .ok_or(TreeError::MissingSibling { level })?;
                if s < i {
                    all.extend([(s, sibling), (i, node)]);
                } else {
                    all.extend([(i, node), (s, sibling)]);
                }
            } else {
                all.push((i, node));
            }
        }
        let mut up = Vec::with_capacity(all.len().div_ceil(2));
        let mut level_seps = Vec::new();
        let mut j = 0;
        while let Some(&(i, node)) = all.get(j) {
            match all.get(j + 1) {
                Some(&(r, right)) if i & 1 == 0 && r == i + 1 => {
                    let sep: [u8; 16] = separators
                        .next()
                        .and_then(|s| s.try_into().ok())
                        .ok_or(TreeError::MissingSeparator { level: level + 1 })?;
                    let parent = Node::parent(&node, &right, &sep).ok_or(TreeError::Overflow)?;
                    up.push((i >> 1, parent));
                    level_seps.push((i >> 1, sep));
                    j += 2;
                }
                _ if i & 1 == 0 && i + 1 >= width => {
                    up.push((i >> 1, node));
                    j += 1;
                }
                _ => return Err(TreeError::Malformed("a path node without its sibling")),
            }
        }
        seen.push(all);
        seps.push(level_seps);
        known = up;
    }
    let extra = siblings.len();
    if extra > 0 {
        return Err(TreeError::ExtraSiblings { extra });
    }
    let extra = separators.len();
    if extra > 0 {
        return Err(TreeError::ExtraSeparators { extra });
    }
    let top = match known.as_slice() {
        [(0, top)] => *top,
        _ => {
            return Err(TreeError::Malformed(
                "the paths do not meet at one top node",
            ));
        }
    };
    if top.hash != root.0 {
        return Err(TreeError::RootMismatch);
    }
    if top.bytes != total_bytes {
        return Err(TreeError::TotalMismatch {
            committed: total_bytes,
            proven: top.bytes,
        });
    }

    // Top down, per leaf: its offset (the bytes of the left siblings on its path) and the
    // separator rule at every node with two children on its path.
    let mut places = Vec::with_capacity(entries.len());
    for (&index, &entry) in proof.indices.iter().zip(&entries) {
        let key = entry.prefix();
        let mut offset = 0u64;
        for ((level, (nodes, level_seps)), &width) in
            (0u32..).zip(seen.iter().zip(&seps)).zip(&widths)
        {
            let c = index >> level;
            if c & 1 == 1 {
                let left = lookup(nodes, c - 1)
                    .ok_or(TreeError::Malformed("a left sibling is missing"))?;
                offset = offset.checked_add(left.bytes).ok_or(TreeError::Overflow)?;
            }
            if (c | 1) < width {
                let sep = lookup(level_seps, c >> 1)
                    .ok_or(TreeError::Malformed("a separator is missing"))?;
                let fits = if c & 1 == 0 { key < sep } else { key >= sep };
                if !fits {
                    return Err(TreeError::Separator {
                        index,
                        level: level + 1,
                    });
                }
            }
        }
        if offset
            .checked_add(entry.size)
            .is_none_or(|end| end > total_bytes)
        {
            return Err(TreeError::Overflow);
        }
        places.push(Place {
            index,
            entry,
            offset,
        });
    }
    Ok(places)
}

/// The value at index `i` of a list sorted by index.
fn lookup<T: Copy>(list: &[(u64, T)], i: u64) -> Option<T> {
    list.binary_search_by_key(&i, |e| e.0)
        .ok()
        .and_then(|k| list.get(k))
        .map(|e| e.1)
}

/// Why a tree could not be built, or a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// More entries than a tree may hold.
    #[error("{count} entries are more than the {MAX_ENTRIES} a tree may hold")]
    TooManyEntries {
        /// The number of entries.
        count: u64,
    },
    /// An entry of size 0 (it could never be challenged).
    #[error("entry {index} has size 0")]
    ZeroSize {
        /// Its index.
        index: u64,
    },
    /// An entry whose root does not sort strictly above the previous one in its first 16 bytes
    /// (unsorted, or a duplicate).
    #[error("entry {index}'s root is not above the previous entry's in its first 16 bytes")]
    NotIncreasing {
        /// Its index.
        index: u64,
    },
    /// The committed bytes do not fit in a u64.
    #[error("the committed bytes overflow a u64")]
    Overflow,
    /// A leaf index past the end of the tree.
    #[error("leaf {index} is out of range in a tree of {count} leaves")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The number of leaves.
        count: u64,
    },
    /// A proof of no leaves at all: it would show nothing.
    #[error("a proof must prove at least one leaf")]
    NoLeaves,
    /// The proof's leaf indices are not strictly ascending.
    #[error("the proof's leaf indices are not strictly ascending at leaf {index}")]
    IndicesNotIncreasing {
        /// The first index out of order.
        index: u64,
    },
    /// The proof's parts do not fit together.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The proof ran out of sibling nodes.
    #[error("the proof runs out of sibling nodes at level {level}")]
    MissingSibling {
        /// The tree level (0 = leaves).
        level: u32,
    },
    /// The proof ran out of separators.
    #[error("the proof runs out of separators at level {level}")]
    MissingSeparator {
        /// The tree level of the node missing one.
        level: u32,
    },
    /// Sibling nodes left over once the root is reached.
    #[error("the proof has {extra} sibling nodes too many")]
    ExtraSiblings {
        /// How many.
        extra: usize,
    },
    /// Separators left over once the root is reached.
    #[error("the proof has {extra} separators too many")]
    ExtraSeparators {
        /// How many.
        extra: usize,
    },
    /// The recomputed root is not the committed one.
    #[error("the proof does not lead to the committed root")]
    RootMismatch,
    /// The recomputed root holds another number of bytes than committed.
    #[error("the proof's tree holds {proven} bytes, the commitment {committed}")]
    TotalMismatch {
        /// The committed total.
        committed: u64,
        /// The recomputed root's byte count.
        proven: u64,
    },
    /// A proven leaf breaks the separator rule on its path: out of key order, or a duplicate.
    #[error("leaf {index} breaks the separator rule at level {level} (out of order or a copy)")]
    Separator {
        /// The leaf's index.
        index: u64,
        /// The level of the node whose separator it breaks.
        level: u32,
    },
}
