//! Operator functions: [`inspect`] and [`verify`] read a queue directory without changing it
//! (run them while the queue is closed); [`Queue::drain_to`] and [`Queue::purge`] act on an
//! open queue.

use std::io::Write;
use std::path::Path;

use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::fs::{Filesystem, read_exact_at};
use crate::queue::{CURSOR_FILE, parse_segment_name, push_payload};
use crate::segment::{self, SegReader};
use crate::{Error, Queue};

/// One segment as seen by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment id (its file name is the id in 16 hex digits + `.hseg`).
    pub id: u64,
    /// File length.
    pub file_bytes: u64,
    /// End of the last valid-looking frame (headers walked, CRCs not checked).
    pub valid_bytes: u64,
    /// Frames found.
    pub records: u64,
    /// Oldest and newest append timestamps (Unix ms), if any records.
    pub min_ts_ms: Option<u64>,
    pub max_ts_ms: Option<u64>,
    /// Why the header was rejected, if it was.
    pub header_error: Option<String>,
}

/// Result of [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inspection {
    pub segments: Vec<SegmentInfo>,
    /// The persisted cursor `(segment, offset)`, if a valid cursor file exists.
    pub cursor: Option<(u64, u64)>,
    /// Records and bytes from the cursor to the end.
    pub depth_records: u64,
    pub depth_bytes: u64,
    /// Timestamp (Unix ms) of the oldest pending segment's oldest record.
    pub oldest_ts_ms: Option<u64>,
}

/// Summarises a queue directory (segments, depth, oldest record) without modifying it.
pub fn inspect(fs: &dyn Filesystem, dir: &Path) -> Result<Inspection, Error> {
    let cursor = read_cursor_file(fs, dir);
    let mut out = Inspection {
        cursor,
        ..Inspection::default()
    };
    let (cseg, coff) = cursor.unwrap_or((0, SEGMENT_HEADER_LEN));
    for id in segment_ids(fs, dir)? {
        let mut info = SegmentInfo {
            id,
            file_bytes: 0,
            valid_bytes: 0,
            records: 0,
            min_ts_ms: None,
            max_ts_ms: None,
            header_error: None,
        };
        let path = dir.join(crate::queue::segment_name(id));
        let mut r = SegReader::new(id, fs.open_read(&path).map_err(|e| Error::io(&path, e))?);
        info.file_bytes = r.file_len().map_err(|e| Error::io(&path, e))?;
        match r.header() {
            Ok(h) => {
                if let Err(e) = format::check_segment_header(&h) {
                    info.header_error = Some(format!("{e:?}"));
                }
            }
            Err(e) => info.header_error = Some(e.to_string()),
        }
        if info.header_error.is_none() {
            let probe = (id == cseg).then_some(coff);
            let s = segment::scan(&mut r, info.file_bytes, false, probe)
                .map_err(|e| Error::io(&path, e))?;
            info.valid_bytes = s.valid_end;
            info.records = s.records;
            info.min_ts_ms = s.min_ts;
            info.max_ts_ms = s.max_ts;
            if id >= cseg {
                let (skip_r, skip_b) = if id == cseg {
                    (
                        s.records_before_probe,
                        s.probe_aligned.min(s.valid_end) - SEGMENT_HEADER_LEN,
                    )
                } else {
                    (0, 0)
                };
                out.depth_records += s.records.saturating_sub(skip_r);
                out.depth_bytes += (s.valid_end - SEGMENT_HEADER_LEN).saturating_sub(skip_b);
                if out.oldest_ts_ms.is_none() && s.records > skip_r {
                    out.oldest_ts_ms = s.min_ts;
                }
            }
        }
        out.segments.push(info);
    }
    Ok(out)
}

/// [`verify`]'s findings for one segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentVerify {
    pub id: u64,
    /// Frames with a valid CRC.
    pub valid_records: u64,
    /// Corrupt regions `(offset, length)` the reader would skip.
    pub corrupt: Vec<(u64, u64)>,
    /// Bytes after the last valid frame: in the newest segment a torn tail (truncated at the
    /// next open); in an older one, corrupt records (counted and left in place at open).
    pub torn_tail_bytes: u64,
    /// Header or I/O problem that prevented checking the segment.
    pub error: Option<String>,
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub segments: Vec<SegmentVerify>,
    /// Whether the cursor file exists and is valid (a missing one is fine for a new queue).
    pub cursor_ok: bool,
}

impl VerifyReport {
    /// True if every segment is fully valid.
    pub fn is_clean(&self) -> bool {
        self.segments
            .iter()
            .all(|s| s.corrupt.is_empty() && s.torn_tail_bytes == 0 && s.error.is_none())
    }
}

/// Checks the CRC of every frame of every segment, without modifying anything.
pub fn verify(fs: &dyn Filesystem, dir: &Path) -> Result<VerifyReport, Error> {
    let cursor_ok = read_cursor_file(fs, dir).is_some();
    let mut out = VerifyReport {
        segments: Vec::new(),
        cursor_ok,
    };
    for id in segment_ids(fs, dir)? {
        let mut v = SegmentVerify {
            id,
            ..SegmentVerify::default()
        };
        let path = dir.join(crate::queue::segment_name(id));
        let res = (|| -> std::io::Result<Result<segment::Scan, String>> {
            let mut r = SegReader::new(id, fs.open_read(&path)?);
            let len = r.file_len()?;
            if let Err(e) = format::check_segment_header(&r.header()?) {
                return Ok(Err(format!("bad header: {e:?}")));
            }
            let s = segment::scan(&mut r, len, true, None)?;
            v.torn_tail_bytes = len - s.valid_end;
            Ok(Ok(s))
        })();
        match res {
            Ok(Ok(s)) => {
                v.valid_records = s.records;
                v.corrupt = s.corrupt;
            }
            Ok(Err(e)) => v.error = Some(e),
            Err(e) => v.error = Some(e.to_string()),
        }
        out.segments.push(v);
    }
    Ok(out)
}

/// Result of [`Queue::drain_to`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Write records written out.
    pub writes: u64,
    /// Schema statements written out (as comments).
    pub statements: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
    /// Corrupt or unreadable places skipped.
    pub skipped: u64,
}

impl Queue {
    /// Writes every pending record to `out` without consuming anything, as line protocol with
    /// `#` comment lines carrying the context:
    ///
    /// ```text
    /// # handoff write db=<db> rp=<rp> precision=<p> ts_ms=<t>
    /// <payload lines>
    /// # handoff schema db=<db>[ params=<form-encoded parameters>] ts_ms=<t>: <statement>
    /// ```
    pub fn drain_to(&self, out: &mut dyn Write) -> Result<DrainReport, Error> {
        let mut rep = DrainReport::default();
        let mut skipped = 0u64;
        let mut buf = Vec::new();
        self.for_each_pending(
            |d| {
                if let Some((statement, params)) = d.statement() {
                    let stmt = statement.replace(['\n', '\r'], " ");
                    let params = if params.is_empty() {
                        String::new()
                    } else {
                        format!(" params={params}")
                    };
                    writeln!(out, "# handoff schema db={}{params} ts_ms={}: {stmt}", d.db, d.ts_ms)?;
                    rep.statements += 1;
                } else {
                    writeln!(out, "# handoff write db={} rp={} precision={} ts_ms={}", d.db, d.rp, d.precision, d.ts_ms)?;
                    buf.clear();
                    push_payload(&mut buf, d.payload);
                    out.write_all(&buf)?;
                    rep.writes += 1;
                    rep.payload_bytes += d.payload.len() as u64;
                }
                Ok(())
            },
            |seg, off, e| {
                skipped += 1;
                tracing::warn!(segment = seg, offset = off, error = ?e.map(|e| e.to_string()), "handoff: drain skipped unreadable data");
            },
        )?;
        out.flush().map_err(|e| Error::io("<drain output>", e))?;
        rep.skipped = skipped;
        Ok(rep)
    }

    /// Drops everything pending (counted as purged; raises the dropped flag). Returns the
    /// number of records dropped.
    pub fn purge(&self) -> Result<u64, Error> {
        self.purge_all()
    }
}

fn segment_ids(fs: &dyn Filesystem, dir: &Path) -> Result<Vec<u64>, Error> {
    let mut ids: Vec<u64> = fs
        .list_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn read_cursor_file(fs: &dyn Filesystem, dir: &Path) -> Option<(u64, u64)> {
    let f = fs.open_read(&dir.join(CURSOR_FILE)).ok()?;
    let mut b = [0u8; format::CURSOR_LEN];
    read_exact_at(f.as_ref(), &mut b, 0).ok()?;
    format::decode_cursor(&b)
}
