//! Finding where a line ends.

use memchr::memchr3;

use crate::exact::scan_line;

/// The end of the line that starts at `start` (the index of its `\n`, or `body.len()`), and
/// whether the line is plain: free of `"` and `\`, the two bytes that can make a `\n` part of
/// a line. Plain lines are found with a vectorised search; the others with the original's
/// quote-aware scan.
#[inline]
pub(crate) fn line_end(body: &[u8], start: usize) -> (usize, bool) {
    match memchr3(b'\n', b'"', b'\\', &body[start..]) {
        None => (body.len(), true),
        Some(offset) if body[start + offset] == b'\n' => (start + offset, true),
        Some(_) => (scan_line(body, start), false),
    }
}
