//! Rows for PostgreSQL's `COPY … FROM STDIN (FORMAT binary)`.
//!
//! The large inserts of an apply (verdicts with their evidence and reasons,
//! new observations with their paths) go as COPY data instead of array
//! parameters: the server reads each value once, straight into the row
//! (and writes the rows of a page together), where `UNNEST` of arrays had
//! it parse every array, unpack it into a materialized function result and
//! copy each value out again. The binary format is a length-prefixed field
//! per value: nothing to escape, whatever the JSON holds.
//! <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>

use super::tables::{Cell, TableRow};

/// A COPY data stream in the binary format, built in memory.
#[derive(Debug)]
pub(super) struct CopyRows {
    buf: Vec<u8>,
}

/// The signature, flags (no OIDs) and header extension length (none).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl CopyRows {
    /// An empty stream; `capacity` is a guess of its size in bytes.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + HEADER.len() + 2);
        buf.extend_from_slice(HEADER);
        Self { buf }
    }

    /// Starts a row of `fields` values; each must follow, in the table
    /// order of the COPY's column list.
    pub(super) fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn len_prefix(&mut self, len: usize) {
        // A value is at most 1 GB in PostgreSQL; a longer one is refused by
        // the server whatever its length says, so saturating is enough.
        let len = i32::try_from(len).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1_i32).to_be_bytes());
    }

    /// A `text` value (the binary form of text is its UTF-8 bytes).
    pub(super) fn text(&mut self, value: &str) -> &mut Self {
        self.len_prefix(value.len());
        self.buf.extend_from_slice(value.as_bytes());
        self
    }

    /// A `bytea` value.
    pub(super) fn bytea(&mut self, value: &[u8]) -> &mut Self {
        self.len_prefix(value.len());
        self.buf.extend_from_slice(value);
        self
    }

    /// A `text` value or NULL.
    pub(super) fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            return self.text(v);
        }
        self.null();
        self
    }

    /// A `bigint` value.
    pub(super) fn int8(&mut self, value: i64) -> &mut Self {
        self.len_prefix(8);
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// A `bigint` value or NULL.
    pub(super) fn opt_int8(&mut self, value: Option<i64>) -> &mut Self {
        if let Some(v) = value {
            return self.int8(v);
        }
        self.null();
        self
    }

    /// A `smallint` value or NULL.
    pub(super) fn opt_int2(&mut self, value: Option<i16>) -> &mut Self {
        match value {
            Some(v) => {
                self.len_prefix(2);
                self.buf.extend_from_slice(&v.to_be_bytes());
            }
            None => self.null(),
        }
        self
    }

    /// A `boolean` value.
    pub(super) fn bool(&mut self, value: bool) -> &mut Self {
        self.len_prefix(1);
        self.buf.push(u8::from(value));
        self
    }

    /// One row of a table.
    pub(super) fn push<R: TableRow>(&mut self, row: &R) {
        let cells = row.cells();
        self.row(i16::try_from(cells.len()).unwrap_or(i16::MAX));
        for cell in cells {
            match cell {
                Cell::Int8(v) => self.int8(v),
                Cell::OptInt8(v) => self.opt_int8(v),
                Cell::OptInt2(v) => self.opt_int2(v),
                Cell::Text(v) => self.text(v),
                Cell::OptText(v) => self.opt_text(v),
                Cell::Bool(v) => self.bool(v),
            };
        }
    }

    /// The whole stream, with its trailer.
    #[cfg(test)]
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.end();
        self.buf
    }

    /// Ends the stream with its trailer; no row may follow.
    pub(super) fn end(&mut self) {
        self.buf.extend_from_slice(&(-1_i16).to_be_bytes());
    }

    /// The bytes encoded since the last [`CopyRows::sent`] (the header
    /// among the first), to send as the stream's next chunk.
    pub(super) fn unsent(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets the bytes [`CopyRows::unsent`] gave, keeping the buffer for
    /// the next chunk.
    pub(super) fn sent(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_length_prefixed_fields_between_the_header_and_the_trailer() {
        let mut rows = CopyRows::with_capacity(0);
        rows.row(5)
            .int8(7)
            .text("é\t\n\\")
            .opt_text(None)
            .opt_int2(Some(-2))
            .bool(true);
        rows.row(1).bytea(&[0, 0xff]);
        let bytes = rows.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend([0, 5]);
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend([0, 0, 0, 5, 0xc3, 0xa9, b'\t', b'\n', b'\\']);
        expected.extend([0xff, 0xff, 0xff, 0xff]);
        expected.extend([0, 0, 0, 2, 0xff, 0xfe]);
        expected.extend([0, 0, 0, 1, 1]);
        expected.extend([0, 1, 0, 0, 0, 2, 0, 0xff]);
        expected.extend([0xff, 0xff]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_stream_sent_in_chunks_is_the_stream_built_whole() {
        let encode = |rows: &mut CopyRows, i: i64| {
            rows.row(2)
                .int8(i)
                .text(&"x".repeat(usize::try_from(i).unwrap()));
        };
        let mut whole = CopyRows::with_capacity(0);
        let mut chunked = CopyRows::with_capacity(0);
        let mut sent = Vec::new();
        for i in 0..50 {
            encode(&mut whole, i);
            encode(&mut chunked, i);
            if i % 7 == 0 {
                sent.extend_from_slice(chunked.unsent());
                chunked.sent();
            }
        }
        chunked.end();
        sent.extend_from_slice(chunked.unsent());
        assert_eq!(sent, whole.finish());
    }
}
