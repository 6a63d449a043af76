//! Python's `fnmatch.fnmatchcase`, the glob Salt matches minion ids, event tags and job
//! fields with: `*` (any run of characters, `/` included), `?` (one character), `[seq]`,
//! `[!seq]` (ranges such as `a-z`; a `]` first in the class is a member; a `[` without its
//! `]` is a literal). Case-sensitive, as on Linux.
//!
//! Written out rather than taken from a glob crate: those treat `/` as a separator or `\` as
//! an escape by default, where Python's fnmatch does neither, and a tag is matched against
//! every filtered stream's globs as it arrives, so the match allocates nothing for ASCII.

/// Whether `name` matches the glob `pat`.
pub fn fnmatch(name: &str, pat: &str) -> bool {
    if name.is_ascii() && pat.is_ascii() {
        matches(name.as_bytes(), pat.as_bytes())
    } else {
        let n: Vec<char> = name.chars().collect();
        let p: Vec<char> = pat.chars().collect();
        matches(&n, &p)
    }
}

/// A character of a name or pattern: a byte of ASCII text or a `char`.
trait Sym: Copy + Ord {
    fn is(self, c: u8) -> bool;
}

impl Sym for u8 {
    fn is(self, c: u8) -> bool {
        self == c
    }
}

impl Sym for char {
    fn is(self, c: u8) -> bool {
        self == char::from(c)
    }
}

/// Backtracking to the last `*`: linear in practice, at worst the product of the lengths.
fn matches<T: Sym>(n: &[T], p: &[T]) -> bool {
    let (mut ni, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if let Some(&pc) = p.get(pi) {
            if pc.is(b'*') {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            if pc.is(b'?') {
                ni += 1;
                pi += 1;
                continue;
            }
            if pc.is(b'[') {
                match class_match(p, pi, n[ni]) {
                    Some((true, next)) => {
                        ni += 1;
                        pi = next;
                        continue;
                    }
                    Some((false, _)) => {}
                    // No closing `]`: the `[` is a literal.
                    None if n[ni].is(b'[') => {
                        ni += 1;
                        pi += 1;
                        continue;
                    }
                    None => {}
                }
            } else if pc == n[ni] {
                ni += 1;
                pi += 1;
                continue;
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| c.is(b'*'))
}

/// Matches `c` against the class starting at `p[start] == '['`: `Some((hit, index after the
/// class))`, or `None` when the class has no closing `]`.
fn class_match<T: Sym>(p: &[T], start: usize, c: T) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = p.get(i).is_some_and(|x| x.is(b'!'));
    if negate {
        i += 1;
    }
    // A `]` first in the class is a member.
    let mut j = i;
    if p.get(j).is_some_and(|x| x.is(b']')) {
        j += 1;
    }
    while j < p.len() && !p[j].is(b']') {
        j += 1;
    }
    if j >= p.len() {
        return None;
    }
    let members = &p[i..j];
    let mut hit = false;
    let mut k = 0;
    while k < members.len() {
        if k + 2 < members.len() && members[k + 1].is(b'-') {
            if members[k] <= c && c <= members[k + 2] {
                hit = true;
            }
            k += 3;
        } else {
            if members[k] == c {
                hit = true;
            }
            k += 1;
        }
    }
    Some((hit != negate, j + 1))
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn as_python_fnmatchcase() {
        assert!(fnmatch("swarm-07", "*"));
        assert!(fnmatch("swarm-07", "swarm-0?"));
        assert!(fnmatch("swarm-07", "swarm-0[0-9]"));
        assert!(!fnmatch("swarm-07", "swarm-0[!7]"));
        assert!(fnmatch("swarm-07", "s*7"));
        assert!(!fnmatch("swarm-07", "Swarm*"));
        assert!(fnmatch("a[b", "a[b"));
        assert!(fnmatch("a]", "a[]]"));
        assert!(!fnmatch("swarm-07", "swarm-0"));
        assert!(fnmatch("", "*"));
        assert!(!fnmatch("", "?"));
        // `*` crosses `/`, and `\` is no escape.
        assert!(fnmatch("salt/job/2026/ret/m1", "salt/job/*"));
        assert!(fnmatch("salt/job/2026/ret/m1", "salt/*/ret/*"));
        assert!(!fnmatch("salt/run/2026/ret", "salt/job/*"));
        assert!(fnmatch("a\\b", "a\\b"));
        assert!(fnmatch("a^", "a[^]"));
        // Non-ASCII names and classes go by characters.
        assert!(fnmatch("café/ü", "caf?/[ü]"));
        assert!(!fnmatch("café", "caf[!é]"));
    }
}
