//! Node keys in both of their forms: a libp2p [`PeerId`] (what the network routes by) and the
//! raw ed25519 key (what receipts, commitments and proofs are signed with, see
//! `cairn-proofs`). Cairn nodes use ed25519 identities, whose peer ids embed the public key, so
//! each form gives the other without a lookup.

use cairn_proofs::NodeKey;
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};

/// The multihash code of an identity hash (a peer id that embeds its key).
const IDENTITY: u64 = 0;

/// The ed25519 key inside a peer id, if it embeds one.
pub fn node_key(peer: &PeerId) -> Option<NodeKey> {
    let mh = peer.as_ref();
    if mh.code() != IDENTITY {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(NodeKey(key.try_into_ed25519().ok()?.to_bytes()))
}

/// The peer id of an ed25519 node key (`None` if the bytes are not a valid key).
pub fn peer_id(key: &NodeKey) -> Option<PeerId> {
    let key = ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(PeerId::from_public_key(&PublicKey::from(key)))
}

/// The ed25519 signing key of a libp2p identity (`None` for other key types).
pub fn signing_key(keypair: &Keypair) -> Option<ed25519_dalek::SigningKey> {
    let ed = keypair.clone().try_into_ed25519().ok()?;
    let secret: [u8; 32] = ed.secret().as_ref().try_into().ok()?;
    Some(ed25519_dalek::SigningKey::from_bytes(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_peer_ids_convert_both_ways() {
        let kp = Keypair::generate_ed25519();
        let peer = kp.public().to_peer_id();
        let key = node_key(&peer).unwrap();
        assert_eq!(peer_id(&key), Some(peer));
        let sk = signing_key(&kp).unwrap();
        assert_eq!(NodeKey::of(&sk), key);
        // A peer id that hashes its key (not ed25519-style) holds no key to extract.
        let hashed = PeerId::random();
        assert_eq!(node_key(&hashed), None);
    }
}
