//! The measurement and series key of a line, for routing and sharding.

use std::borrow::Cow;

use crate::exact::{raw_measurement, scan_to, skip_whitespace};

/// The measurement of a valid line, escaped as written.
pub fn measurement(line: &[u8]) -> &[u8] {
    raw_measurement(line)
}

/// The series key of a valid line as InfluxDB forms it: the measurement, then the tags sorted
/// by key, escaped as written (`cpu,host=a,region=b`). Borrowed when the tags are already
/// sorted, which is the common case.
pub fn series_key(line: &[u8]) -> Cow<'_, [u8]> {
    let line = &line[skip_whitespace(line, 0)..];
    let name = measurement(line);
    // The key ends at the first space the measurement and tag scanners do not take as escaped.
    let mut end = name.len();
    while end < line.len() && !(line[end] == b' ' && line[end - 1] != b'\\') {
        end += 1;
    }
    let key = &line[..end];
    if name.len() >= key.len() {
        return Cow::Borrowed(key);
    }
    let mut tags = Vec::new();
    let mut i = name.len() + 1;
    while i < key.len() {
        let (next, tag) = scan_to(key, i, b',');
        tags.push(tag);
        i = next + 1;
    }
    let tag_key = |t: &&[u8]| scan_to(t, 0, b'=').1.to_vec();
    if tags.windows(2).all(|w| tag_key(&w[0]) <= tag_key(&w[1])) {
        return Cow::Borrowed(key);
    }
    tags.sort_by_key(tag_key);
    let mut out = Vec::with_capacity(key.len());
    out.extend_from_slice(name);
    for t in tags {
        out.push(b',');
        out.extend_from_slice(t);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurement_and_key() {
        assert_eq!(measurement(b"cpu,host=a v=1"), b"cpu");
        assert_eq!(measurement(b"c\\,pu,host=a v=1"), b"c\\,pu");
        assert_eq!(measurement(b"c\\ pu v=1"), b"c\\ pu");
        assert_eq!(&*series_key(b"cpu v=1 5"), b"cpu");
        assert_eq!(&*series_key(b"cpu,a=1,b=2 v=1"), b"cpu,a=1,b=2");
        assert_eq!(&*series_key(b"cpu,b=2,a=1 v=1"), b"cpu,a=1,b=2");
        assert_eq!(&*series_key(b"cpu,b=x\\ y,a=1 v=1"), b"cpu,a=1,b=x\\ y");
        assert!(matches!(series_key(b"cpu,a=1,b=2 v=1"), Cow::Borrowed(_)));
    }
}
