//! A consistent-hash ring (ring hash, as Envoy's `RING_HASH`): every endpoint owns many points
//! on a 64-bit circle, and a key goes to the owner of the first point at or after its hash.
//! When an endpoint joins or leaves, only the keys of the arcs it gains or loses move (about
//! 1/N of them); a caller that skips an unusable endpoint walks on to the next owner, so the
//! other endpoints keep their keys.

/// Points per endpoint. An endpoint's share of the circle varies by about 1/sqrt(points) of
/// itself: at 1,000, four endpoints each own 25% +/- 1%, where 160 left one with 31% now and
/// then (a ring is rebuilt only when the endpoints change, so its size costs nothing per call
/// beyond a binary search).
pub const POINTS_PER_ENDPOINT: usize = 1000;

/// A stable 64-bit hash (FNV-1a, then a murmur3 finalizer to spread nearby inputs), the same
/// in every process and build, so two callers with the same endpoints agree on owners.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The ring over a list of endpoint names; owners are indices into that list.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// A ring over `names` (each an endpoint's stable name, e.g. its address).
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut points = Vec::with_capacity(names.len() * POINTS_PER_ENDPOINT);
        for (i, name) in names.iter().enumerate() {
            for p in 0..POINTS_PER_ENDPOINT {
                points.push((hash(format!("{}#{p}", name.as_ref()).as_bytes()), i));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The owners of `key`'s hash, first the owner, then each next distinct endpoint going
    /// round the ring: the order to try them in when the owner cannot take the call.
    pub fn owners(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(h, _)| *h < key);
        let n = self.points.len();
        let mut seen: Vec<usize> = Vec::new();
        (0..n).filter_map(move |i| {
            let owner = self.points[(start + i) % n].1;
            if seen.contains(&owner) {
                None
            } else {
                seen.push(owner);
                Some(owner)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(ring: &Ring, names: &[&str], key: &str) -> String {
        names[ring.owners(hash(key.as_bytes())).next().unwrap()].to_string()
    }

    #[test]
    fn a_fourth_endpoint_moves_about_a_quarter_of_the_keys_and_only_to_itself() {
        let three = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"];
        let four = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"];
        let (r3, r4) = (Ring::new(&three), Ring::new(&four));
        let mut moved = 0;
        for k in 0..1000 {
            let key = format!("customer-{k}");
            let (before, after) = (owner(&r3, &three, &key), owner(&r4, &four, &key));
            if before != after {
                assert_eq!(after, "10.0.0.4:1", "{key} moved between old endpoints");
                moved += 1;
            }
        }
        assert!((150..=320).contains(&moved), "{moved} of 1000 keys moved");
    }

    #[test]
    fn skipping_an_owner_leaves_the_other_keys_in_place() {
        let names = ["a:1", "b:1", "c:1", "d:1"];
        let ring = Ring::new(&names);
        for k in 0..500 {
            let h = hash(format!("k{k}").as_bytes());
            let order: Vec<usize> = ring.owners(h).collect();
            assert_eq!(order.len(), 4, "every endpoint appears once");
            // With b unusable, a key owned by someone else keeps its owner.
            let with_b_out = order.iter().copied().find(|&i| i != 1).unwrap();
            if order[0] != 1 {
                assert_eq!(with_b_out, order[0]);
            }
        }
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned values (computed independently): a change here would move every
        // customer's affinity, and callers built from different versions would disagree.
        assert_eq!(hash(b"customer-1"), 0xadf9_2b53_7b08_cdda);
        assert_eq!(hash(b""), 0xefd0_1f60_ba99_2926);
        let spread: std::collections::BTreeSet<u64> = (0..1000)
            .map(|i| hash(format!("{i}").as_bytes()) >> 62)
            .collect();
        assert_eq!(spread.len(), 4, "the top bits are used");
    }
}
