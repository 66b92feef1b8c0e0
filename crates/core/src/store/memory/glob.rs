//! Glob patterns as Redis matches keys (`SCAN … MATCH`): `*`, `?`, `[abc]`, `[^a-z]` and `\`
//! to take the next character literally.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    match_bytes(pattern.as_bytes(), text.as_bytes())
}

fn match_bytes(mut p: &[u8], mut t: &[u8]) -> bool {
    while let Some(&c) = p.first() {
        match c {
            b'*' => {
                while p.first() == Some(&b'*') {
                    p = &p[1..];
                }
                if p.is_empty() {
                    return true;
                }
                return (0..=t.len()).any(|i| match_bytes(p, &t[i..]));
            }
            b'?' => {
                if t.is_empty() {
                    return false;
                }
                p = &p[1..];
                t = &t[1..];
            }
            b'[' => {
                let Some(&ch) = t.first() else {
                    return false;
                };
                let (hit, rest) = class(&p[1..], ch);
                if !hit {
                    return false;
                }
                p = rest;
                t = &t[1..];
            }
            _ => {
                let (lit, rest) = if c == b'\\' && p.len() > 1 {
                    (p[1], &p[2..])
                } else {
                    (c, &p[1..])
                };
                if t.first() != Some(&lit) {
                    return false;
                }
                p = rest;
                t = &t[1..];
            }
        }
    }
    t.is_empty()
}

/// Match `ch` against a class body (after `[`); returns the outcome and the pattern after `]`.
fn class(mut p: &[u8], ch: u8) -> (bool, &[u8]) {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut hit = false;
    loop {
        match p {
            [] => break,
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [b'\\', c, rest @ ..] => {
                hit |= *c == ch;
                p = rest;
            }
            [a, b'-', b, rest @ ..] if *b != b']' => {
                let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                hit |= (lo..=hi).contains(&ch);
                p = rest;
            }
            [c, rest @ ..] => {
                hit |= *c == ch;
                p = rest;
            }
        }
    }
    (hit != negate, p)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_as_redis_matches_keys() {
        assert!(matches("nvent:*", "nvent:a:b"));
        assert!(!matches("nvent:*", "nventa"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "ac"));
        assert!(matches("k[0-9]", "k7"));
        assert!(!matches("k[^0-9]", "k7"));
        assert!(matches("k[^0-9]", "kx"));
        assert!(matches("a\\*b", "a*b"));
        assert!(!matches("a\\*b", "axb"));
        assert!(matches("*", ""));
        assert!(matches("x*y*z", "xaaybbz"));
        assert!(!matches("x*y*z", "xaaybb"));
    }
}
