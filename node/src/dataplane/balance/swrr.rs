//! Smooth weighted round robin (nginx's algorithm), precomputed.
//!
//! nginx walks the algorithm under a lock on every pick. The sequence it
//! produces is periodic with period `sum(weights) / gcd`, so we compute one
//! period when the routing table is built and pick with a single atomic
//! cursor: the same interleaving (`a a b a c a`, never `a a a a b c`) with no
//! lock on the data plane.

/// Longest period we precompute; weights are scaled down proportionally above
/// it (only reachable with thousands of heavy backends).
const MAX_PERIOD: u64 = 1 << 16;

/// One period of the smooth sequence for `weights`: positions into
/// `weights`. Empty when every weight is 0.
pub fn sequence(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<i64> = weights.iter().map(|&x| i64::from(x / g)).collect();
    let mut total: i64 = w.iter().sum();
    if total as u64 > MAX_PERIOD {
        let scale = total as f64 / MAX_PERIOD as f64;
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = ((*x as f64 / scale) as i64).max(1);
        }
        total = w.iter().sum();
    }
    let mut current = vec![0i64; w.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u32);
    }
    seq
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_example_is_smooth() {
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn period_is_reduced_by_gcd() {
        assert_eq!(sequence(&[4, 2]), vec![0, 1, 0]);
    }

    #[test]
    fn counts_match_weights_and_zero_is_skipped() {
        let seq = sequence(&[3, 0, 2, 1]);
        let count = |i| seq.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2), count(3)), (3, 0, 2, 1));
    }

    #[test]
    fn all_zero_is_empty() {
        assert!(sequence(&[0, 0]).is_empty());
        assert!(sequence(&[]).is_empty());
    }

    #[test]
    fn huge_periods_are_scaled() {
        let weights: Vec<u32> = (0..1000).map(|i| 200 + (i % 7)).collect();
        let seq = sequence(&weights);
        assert!(seq.len() as u64 <= MAX_PERIOD + 1000, "{}", seq.len());
        assert!(weights.iter().enumerate().all(|(i, _)| seq.contains(&(i as u32))));
    }
}
