//! Reading segment files: a small positional read window, frame parsing, resynchronisation
//! after corruption, and the scan used at open, by `inspect` and by `verify`.

use std::io;

use crate::format::{self, BODY_FIXED_LEN, FRAME_HEADER_LEN, FRAME_MARKER, SEGMENT_HEADER_LEN};
use crate::fs::{FsFile, read_exact_at};

/// Read window for headers and small frames. Frames larger than half of it are read directly
/// into a separate buffer, so a large frame is never read twice.
const WINDOW: usize = 64 * 1024;

/// One frame read at an offset.
#[derive(Debug)]
pub(crate) enum FrameRead<'a> {
    /// A frame whose header and (if checked) CRC are valid; `next` is the offset after it.
    Valid { body: &'a [u8], next: u64 },
    /// No valid frame starts at this offset.
    Corrupt,
    /// The offset is at or past the end of the readable data.
    End,
}

/// A reader over one segment file, bounded by an `end` the caller supplies (the published or
/// scanned valid length), never by what the file contents claim.
pub(crate) struct SegReader {
    pub id: u64,
    file: Box<dyn FsFile>,
    win: Vec<u8>,
    win_off: u64,
    big: Vec<u8>,
}

impl SegReader {
    pub fn new(id: u64, file: Box<dyn FsFile>) -> Self {
        Self {
            id,
            file,
            win: Vec::new(),
            win_off: 0,
            big: Vec::new(),
        }
    }

    pub fn file_len(&self) -> io::Result<u64> {
        self.file.size()
    }

    /// Reads the segment header.
    pub fn header(&mut self) -> io::Result<[u8; SEGMENT_HEADER_LEN as usize]> {
        let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
        read_exact_at(self.file.as_ref(), &mut h, 0)?;
        Ok(h)
    }

    /// Bytes `[off, off + len)`; the caller guarantees they lie within the file.
    fn bytes(&mut self, off: u64, len: usize) -> io::Result<&[u8]> {
        let win_end = self.win_off + self.win.len() as u64;
        if off >= self.win_off && off + len as u64 <= win_end {
            let s = (off - self.win_off) as usize;
            return Ok(&self.win[s..s + len]);
        }
        if len > WINDOW / 2 {
            self.big.resize(len, 0);
            read_exact_at(self.file.as_ref(), &mut self.big, off)?;
            return Ok(&self.big[..len]);
        }
        self.win.resize(WINDOW, 0);
        let mut got = 0;
        // Bounded: each iteration reads at least one byte or stops.
        while got < WINDOW {
            match self.file.read_at(&mut self.win[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.win.clear();
                    return Err(e);
                }
            }
        }
        self.win.truncate(got);
        self.win_off = off;
        if got < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment shorter than expected",
            ));
        }
        Ok(&self.win[..len])
    }

    /// Parses the frame header at `off`: `Some((body_len, crc, next))` if plausible within `end`.
    fn head(&mut self, off: u64, end: u64) -> io::Result<Option<(u32, u32, u64)>> {
        if end.saturating_sub(off) < FRAME_HEADER_LEN + BODY_FIXED_LEN as u64 {
            return Ok(None);
        }
        let h = self.bytes(off, FRAME_HEADER_LEN as usize)?;
        let Some((len, crc)) = format::parse_frame_header(h) else {
            return Ok(None);
        };
        let next = off + FRAME_HEADER_LEN + u64::from(len);
        if next > end {
            return Ok(None);
        }
        Ok(Some((len, crc, next)))
    }

    /// Body length of the frame at `off`, if its header is plausible within `end` (no CRC check).
    pub fn peek_body_len(&mut self, off: u64, end: u64) -> io::Result<Option<u32>> {
        Ok(self.head(off, end)?.map(|(len, _, _)| len))
    }

    /// Reads and CRC-checks the frame at `off`.
    pub fn read_frame(&mut self, off: u64, end: u64) -> io::Result<FrameRead<'_>> {
        if off >= end {
            return Ok(FrameRead::End);
        }
        let Some((len, crc, next)) = self.head(off, end)? else {
            return Ok(FrameRead::Corrupt);
        };
        let body = self.bytes(off + FRAME_HEADER_LEN, len as usize)?;
        if !format::crc_ok(len, body, crc) {
            return Ok(FrameRead::Corrupt);
        }
        Ok(FrameRead::Valid { body, next })
    }

    /// Header-only walk step: `Some((next, ts))` if the frame header at `off` is plausible.
    /// Does not check the CRC (the reader does, when it delivers the record).
    fn walk_frame(&mut self, off: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
        let Some((_, _, next)) = self.head(off, end)? else {
            return Ok(None);
        };
        let prefix = self.bytes(off + FRAME_HEADER_LEN, BODY_FIXED_LEN)?;
        Ok(format::body_ts(prefix).map(|ts| (next, ts)))
    }

    /// Finds the next offset after `off` (and before `end`) where a CRC-valid frame starts.
    /// Bounded by `end - off`: every step moves the search position forward.
    pub fn resync(&mut self, off: u64, end: u64) -> io::Result<Option<u64>> {
        let mut pos = off + 1;
        while pos + FRAME_HEADER_LEN <= end {
            let chunk_len = (end - pos).min(WINDOW as u64 / 2) as usize;
            let chunk = self.bytes(pos, chunk_len)?;
            match memchr::memmem::find(chunk, &FRAME_MARKER) {
                Some(i) => {
                    let cand = pos + i as u64;
                    if let FrameRead::Valid { .. } = self.read_frame(cand, end)? {
                        return Ok(Some(cand));
                    }
                    pos = cand + 1;
                }
                None => {
                    // Overlap by marker length - 1 so a marker across the chunk edge is found.
                    let step = chunk_len.saturating_sub(FRAME_MARKER.len() - 1).max(1);
                    pos += step as u64;
                }
            }
        }
        Ok(None)
    }
}

/// What a scan of one segment found.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scan {
    /// Frames found (CRC-checked if the scan verified).
    pub records: u64,
    pub min_ts: Option<u64>,
    pub max_ts: Option<u64>,
    /// End of the last valid frame (or the header length).
    pub valid_end: u64,
    /// Skipped corrupt regions `(offset, length)` before `valid_end`.
    pub corrupt: Vec<(u64, u64)>,
    /// Frames starting before the probe offset.
    pub records_before_probe: u64,
    /// First frame boundary at or after the probe offset (or `valid_end`).
    pub probe_aligned: u64,
}

/// Scans a segment from its header to `len`. With `verify`, every frame's CRC is checked;
/// otherwise only headers are walked (corruption found there still resyncs with CRC checks).
/// Bounded by `len`: every step advances the offset.
pub(crate) fn scan(
    r: &mut SegReader,
    len: u64,
    verify: bool,
    probe: Option<u64>,
) -> io::Result<Scan> {
    let mut s = Scan {
        valid_end: SEGMENT_HEADER_LEN,
        probe_aligned: SEGMENT_HEADER_LEN,
        ..Scan::default()
    };
    let probe_arg = probe;
    let probe = probe.unwrap_or(SEGMENT_HEADER_LEN);
    let mut probe_done = probe <= SEGMENT_HEADER_LEN;
    let mut off = SEGMENT_HEADER_LEN;
    while off < len {
        if !probe_done && off >= probe {
            if off != probe && !verify {
                // The cursor lies inside what the headers call one frame: a bad length can
                // make a frame end on a later frame's start, which no header check sees, and
                // moving the cursor there would skip what lies between. The CRCs decide.
                return scan(r, len, true, probe_arg);
            }
            s.probe_aligned = off;
            probe_done = true;
        }
        let step = if verify {
            match r.read_frame(off, len)? {
                FrameRead::Valid { body, next } => format::body_ts(body).map(|ts| (next, ts)),
                _ => None,
            }
        } else {
            r.walk_frame(off, len)?
        };
        match step {
            Some((next, ts)) => {
                s.records += 1;
                if off < probe {
                    s.records_before_probe += 1;
                }
                s.min_ts = Some(s.min_ts.map_or(ts, |m| m.min(ts)));
                s.max_ts = Some(s.max_ts.map_or(ts, |m| m.max(ts)));
                off = next;
                s.valid_end = next;
            }
            // A header walk that lost its way may have jumped over good frames on a bad
            // length (and past the cursor): the whole segment is scanned again with its CRCs.
            None if !verify => return scan(r, len, true, probe_arg),
            None => match r.resync(off, len)? {
                Some(next) => {
                    s.corrupt.push((off, next - off));
                    off = next;
                }
                None => break,
            },
        }
    }
    if !probe_done {
        s.probe_aligned = s.valid_end;
    }
    Ok(s)
}
