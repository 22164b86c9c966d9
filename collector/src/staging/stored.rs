//! The stored form of a report: its JSON compressed with LZ4.
//!
//! Durable ingest is bound by the disk before the CPU: every report is
//! written to the WAL and again into the database by the checkpoint, as
//! whole 4 KiB pages, and a 2 KB report took a page of its own in each —
//! about 10 KB written per report, some 170 MB/s at 17 000 reports/s on the
//! 2-core benchmark VM. Compressed (report JSON shrinks to about half), two
//! or three reports share a page, which cuts the bytes written per report
//! and lets the staging store hold more reports on the same disk. LZ4 costs
//! a few microseconds a report on the request tasks, in parallel, and less
//! to undo at export.
//!
//! A stored value is either a compressed report (tag byte [`LZ4`], then the
//! block with its length in front) whose envelope ends with the `"seq":0`
//! placeholder — the sequence number is written in when the report is
//! exported — or, in stores written before compression, the plain JSON with
//! its sequence number already in place (it starts with `{`).

use crate::Error;

/// The tag of a compressed report.
const LZ4: u8 = 0x01;

/// How every encoded report ends: the envelope is the report's last member
/// and `seq` the envelope's last, both by the order of their fields.
pub(super) const SEQ_PLACEHOLDER_TAIL: &[u8] = b"\"seq\":0}}";

/// Largest report a stored value may expand to: a damaged length prefix
/// must not make the export allocate gigabytes. Staging stores nothing
/// above `ReportLimits::MAX_REPORT_BYTES` (envelope included); twice that
/// still reads what a store written before that check took (the internal
/// side quarantines it as too large rather than the export failing on it).
const MAX_UNPACKED: usize = 2 * lineprobe_shared::ReportLimits::MAX_REPORT_BYTES;

/// Compresses an encoded report (ending with the seq placeholder).
pub(super) fn pack(json: &[u8]) -> Vec<u8> {
    // Tag, then the length as `compress_prepend_size` would write it, then
    // the block compressed in place: one buffer, no copy of the block.
    const HEAD: usize = 1 + 4;
    let len = u32::try_from(json.len()).unwrap_or(u32::MAX);
    let mut stored = vec![0; HEAD + lz4_flex::block::get_maximum_output_size(json.len())];
    stored[0] = LZ4;
    stored[1..HEAD].copy_from_slice(&len.to_le_bytes());
    if let Ok(written) = lz4_flex::block::compress_into(json, &mut stored[HEAD..]) {
        stored.truncate(HEAD + written);
    } else {
        // The buffer is sized for the worst case, so this cannot happen;
        // the allocating encoder is the fallback all the same.
        stored.truncate(1);
        stored.extend_from_slice(&lz4_flex::block::compress_prepend_size(json));
    }
    stored
}

/// The exported JSON of the stored value of report `seq`.
pub(super) fn unpack(stored: &[u8], seq: u64) -> Result<Vec<u8>, Error> {
    let damaged = |what: &str| {
        Error::Staging(format!(
            "the stored report {seq} is damaged ({what}); the staging database needs repair: \
             restore it or move it aside"
        ))
    };
    match stored.first() {
        Some(b'{') => Ok(stored.to_vec()),
        Some(&LZ4) => {
            let block = stored.get(1..).unwrap_or_default();
            let claimed = block
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| damaged("no length"))?;
            if usize::try_from(claimed).map_or(true, |n| n > MAX_UNPACKED) {
                return Err(damaged("length out of range"));
            }
            let json = lz4_flex::block::decompress_size_prepended(block)
                .map_err(|e| damaged(&e.to_string()))?;
            if !json.ends_with(SEQ_PLACEHOLDER_TAIL) {
                return Err(damaged("no sequence number placeholder"));
            }
            Ok(with_seq(&json, seq))
        }
        _ => Err(damaged("unknown format")),
    }
}

/// The encoded JSON with `seq` in place of the placeholder.
pub(super) fn with_seq(json: &[u8], seq: u64) -> Vec<u8> {
    // `0}}` is the placeholder's digit and the two closing braces.
    let keep = json.len().saturating_sub(3);
    let digits = seq.to_string();
    let mut out = Vec::with_capacity(keep + digits.len() + 2);
    out.extend_from_slice(json.get(..keep).unwrap_or(json));
    out.extend_from_slice(digits.as_bytes());
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &[u8] =
        br#"{"a":1,"hops":[{"ttl":1},{"ttl":2},{"ttl":3}],"envelope":{"node_id":"n","seq":0}}"#;

    #[test]
    fn seq_replaces_the_placeholder() {
        assert!(JSON.ends_with(SEQ_PLACEHOLDER_TAIL));
        assert_eq!(with_seq(JSON, 0), JSON.to_vec());
        let json = br#"{"a":1,"envelope":{"node_id":"n","seq":0}}"#;
        assert_eq!(
            with_seq(json, 12_345),
            br#"{"a":1,"envelope":{"node_id":"n","seq":12345}}"#.to_vec()
        );
    }

    #[test]
    fn a_packed_report_unpacks_with_its_seq() {
        let stored = pack(JSON);
        assert_eq!(stored.first(), Some(&LZ4));
        let exported = unpack(&stored, 77).expect("unpack");
        assert_eq!(exported, with_seq(JSON, 77));
        assert!(exported.ends_with(br#""seq":77}}"#));
    }

    #[test]
    fn packing_in_place_writes_the_format_stores_already_hold() {
        // Values written before packing compressed in place were the tag
        // followed by `compress_prepend_size`; both must stay one format.
        let big: Vec<u8> = JSON.repeat(40);
        for json in [JSON, &big[..], b""] {
            let mut before = vec![LZ4];
            before.extend_from_slice(&lz4_flex::block::compress_prepend_size(json));
            assert_eq!(pack(json), before);
        }
    }

    #[test]
    fn plain_json_of_older_stores_is_exported_as_stored() {
        let legacy = br#"{"a":1,"envelope":{"node_id":"n","seq":5}}"#;
        assert_eq!(unpack(legacy, 5).expect("unpack"), legacy.to_vec());
    }

    #[test]
    fn damaged_values_are_errors_that_say_so() {
        let mut huge = vec![LZ4];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(b"junk");
        let mut cut = pack(JSON);
        cut.truncate(cut.len() / 2);
        let no_placeholder = pack(br#"{"a":1}"#);
        for bad in [
            &b""[..],
            b"\x07abc",
            &[LZ4, 1],
            &huge,
            &cut,
            &no_placeholder,
        ] {
            let e = unpack(bad, 3).expect_err("damaged");
            assert!(e.to_string().contains("damaged"), "{e}");
        }
    }
}
