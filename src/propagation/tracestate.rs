//! The `tracestate` list: parsing, validation, truncation and serialisation
//! (W3C Trace Context Level 2, §3.3).
//!
//! Everything here works on borrowed `(&str, &str)` pairs in a fixed-size
//! array, so parsing and validating never allocates; only the final header
//! string and the `TraceState` built from it do.

/// At most this many list-members are accepted (and sent).
pub(crate) const MAX_MEMBERS: usize = 32;

/// Longest tracestate we propagate, in characters of the serialised header
/// (`key=value` pairs joined by `,`). The W3C asks to propagate at least 512.
pub(crate) const MAX_LEN: usize = 512;

/// When truncating, entries longer than this are dropped first.
pub(crate) const LONG_ENTRY_LEN: usize = 128;

/// Combined raw `tracestate` input (all fields, plus one `,` between fields)
/// above which the header is discarded without being parsed.
///
/// The longest tracestate the grammar allows without OWS padding is
/// 32 × (256 + 1 + 256) + 31 = 16 447 characters; this is twice that, rounded.
pub(crate) const MAX_INPUT_LEN: usize = 32 * 1024;

const MAX_KEY_LEN: usize = 256;
const MAX_VALUE_LEN: usize = 256;

/// Trims the optional whitespace (`SP` / `HTAB`) HTTP allows around a field
/// value or a list member.
pub(crate) fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// `key = (lcalpha / DIGIT) 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@")`
/// (Level 2 grammar).
pub(crate) fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= MAX_KEY_LEN
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(|&b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
                })
        }
        None => false,
    }
}

/// `value = 0*255(chr) nblk-chr`: 1 to 256 printable ASCII characters other
/// than `,` and `=`, the last of which is not a space.
pub(crate) fn is_valid_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    match bytes.last() {
        Some(&last) => {
            bytes.len() <= MAX_VALUE_LEN
                && last != b' '
                && bytes
                    .iter()
                    .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        }
        None => false,
    }
}

/// A list of at most [`MAX_MEMBERS`] distinct-key entries, in order, borrowed
/// from the header (or from a `TraceState`).
#[derive(Debug)]
pub(crate) struct Entries<'a> {
    items: [(&'a str, &'a str); MAX_MEMBERS],
    len: usize,
}

impl<'a> Entries<'a> {
    pub(crate) const fn new() -> Self {
        Entries {
            items: [("", ""); MAX_MEMBERS],
            len: 0,
        }
    }

    /// Parses received `tracestate` fields, combined in order with `,`.
    ///
    /// Returns `None` when the whole tracestate must be discarded: an invalid
    /// list-member, more than [`MAX_MEMBERS`] members, or more than
    /// [`MAX_INPUT_LEN`] characters of input. Empty and OWS-only members are
    /// skipped; a duplicate key keeps its first entry. The result is truncated
    /// to [`MAX_LEN`] characters (see [`Entries::truncate`]).
    pub(crate) fn parse(fields: &[&'a str]) -> Option<Self> {
        // Bound the work before looking at a single byte of content.
        let mut input_len = fields.len().saturating_sub(1);
        for field in fields {
            input_len = input_len.saturating_add(field.len());
            if input_len > MAX_INPUT_LEN {
                return None;
            }
        }

        let mut entries = Entries::new();
        let mut members = 0;
        for field in fields {
            for member in field.split(',') {
                let member = trim_ows(member);
                if member.is_empty() {
                    continue;
                }
                members += 1;
                if members > MAX_MEMBERS {
                    return None;
                }
                let (key, value) = member.split_once('=')?;
                if !is_valid_key(key) || !is_valid_value(value) {
                    return None;
                }
                if !entries.contains_key(key) {
                    entries.push(key, value);
                }
            }
        }
        entries.truncate(MAX_LEN);
        Some(entries)
    }

    /// Collects entries to send: invalid entries are left out (one at a time,
    /// not the whole list), a duplicate key keeps its first entry, entries past
    /// the 32nd are dropped from the right, then the list is truncated to
    /// [`MAX_LEN`] characters.
    pub(crate) fn for_sending<I>(entries: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut out = Entries::new();
        for (key, value) in entries {
            if out.len == MAX_MEMBERS {
                break;
            }
            if is_valid_key(key) && is_valid_value(value) && !out.contains_key(key) {
                out.push(key, value);
            }
        }
        out.truncate(MAX_LEN);
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn as_slice(&self) -> &[(&'a str, &'a str)] {
        &self.items[..self.len]
    }

    fn contains_key(&self, key: &str) -> bool {
        self.as_slice().iter().any(|&(k, _)| k == key)
    }

    /// Callers keep `len < MAX_MEMBERS`.
    fn push(&mut self, key: &'a str, value: &'a str) {
        self.items[self.len] = (key, value);
        self.len += 1;
    }

    fn remove(&mut self, index: usize) {
        self.items.copy_within(index + 1..self.len, index);
        self.len -= 1;
    }

    /// Length of the serialised header (`k=v` joined by `,`).
    pub(crate) fn header_len(&self) -> usize {
        let entries: usize = self.as_slice().iter().map(|&(k, v)| entry_len(k, v)).sum();
        entries + self.len.saturating_sub(1)
    }

    /// Drops whole entries until the header fits in `limit` characters, as
    /// the W3C recommends: first entries longer than [`LONG_ENTRY_LEN`]
    /// characters (right-most first, and only as many as needed), then entries
    /// from the right end. The order of the kept entries is unchanged.
    pub(crate) fn truncate(&mut self, limit: usize) {
        if self.header_len() <= limit {
            return;
        }
        let mut index = self.len;
        while index > 0 && self.header_len() > limit {
            index -= 1;
            let (key, value) = self.items[index];
            if entry_len(key, value) > LONG_ENTRY_LEN {
                self.remove(index);
            }
        }
        while self.header_len() > limit {
            self.len -= 1;
        }
    }

    /// The serialised header value, `k=v` joined by `,`, without spaces.
    pub(crate) fn to_header(&self) -> String {
        let mut header = String::with_capacity(self.header_len());
        for (i, &(key, value)) in self.as_slice().iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(key);
            header.push('=');
            header.push_str(value);
        }
        header
    }
}

fn entry_len(key: &str, value: &str) -> usize {
    key.len() + 1 + value.len()
}
