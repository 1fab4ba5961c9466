//! Edits a filter asks for in a message's header section: header lines
//! to add, and a Subject to replace.
//!
//! Why it exists: rspamd answers "add these headers" and "rewrite the
//! subject"; applying that is text surgery on octets a stranger sent, so
//! it lives in one pure, tested place. Values never break the framing
//! (line ends in them become spaces) and names are checked.

/// `Name: value` lines with CRLF, for headers with valid field names
/// (RFC 5322 §2.2: printable ASCII but the colon); others are skipped.
pub fn header_lines(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let valid = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
        if !valid {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend(
            value
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The message (`rest`: its header section and body) with every Subject
/// field replaced by one `Subject: subject` where the first one was (at
/// the end of the header section when there was none).
pub fn set_subject(rest: &[u8], subject: &str) -> Vec<u8> {
    let end = header_section_end(rest);
    let mut out = Vec::with_capacity(rest.len() + subject.len() + 16);
    let new_field = {
        let mut f = b"Subject: ".to_vec();
        f.extend(
            subject
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        f.extend_from_slice(b"\r\n");
        f
    };
    let mut placed = false;
    let mut i = 0;
    while i < end {
        let field_end = field_end(rest, i, end);
        let field = &rest[i..field_end];
        let is_subject = field.len() >= 8 && field[..8].eq_ignore_ascii_case(b"subject:");
        if is_subject {
            if !placed {
                out.extend_from_slice(&new_field);
                placed = true;
            }
        } else {
            out.extend_from_slice(field);
        }
        i = field_end;
    }
    if !placed {
        out.extend_from_slice(&new_field);
    }
    out.extend_from_slice(&rest[end..]);
    out
}

/// Where the header section ends: the offset of the empty line that
/// separates it from the body (or the end, when there is none).
fn header_section_end(rest: &[u8]) -> usize {
    if rest.starts_with(b"\r\n") {
        return 0;
    }
    memchr::memmem::find(rest, b"\r\n\r\n").map_or(rest.len(), |at| at + 2)
}

/// The end of the field starting at `start`: after its line and any
/// continuation lines (starting with a space or tab).
fn field_end(rest: &[u8], start: usize, limit: usize) -> usize {
    let mut i = start;
    loop {
        let line_end = memchr::memchr(b'\n', &rest[i..limit]).map_or(limit, |p| i + p + 1);
        i = line_end;
        if i >= limit || !matches!(rest[i], b' ' | b'\t') {
            return i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_replaced_in_place_folded_or_not_and_added_when_missing() {
        let m = b"From: a@x\r\nSubject: buy\r\n now\r\nTo: b@y\r\nsubject: again\r\n\r\nSubject: in the body\r\n";
        assert_eq!(
            set_subject(m, "*** SPAM *** buy now"),
            b"From: a@x\r\nSubject: *** SPAM *** buy now\r\nTo: b@y\r\n\r\nSubject: in the body\r\n"
        );
        assert_eq!(
            set_subject(b"From: a@x\r\n\r\nbody\r\n", "new"),
            b"From: a@x\r\nSubject: new\r\n\r\nbody\r\n"
        );
        assert_eq!(
            set_subject(b"\r\nbody\r\n", "new"),
            b"Subject: new\r\n\r\nbody\r\n"
        );
        assert_eq!(
            set_subject(b"Subject: x\r\n", "evil\r\nBcc: all"),
            b"Subject: evil  Bcc: all\r\n"
        );
    }

    #[test]
    fn header_lines_skip_bad_names_and_flatten_values() {
        let lines = header_lines(&[
            ("X-Spam".into(), "Yes".into()),
            ("Bad Name".into(), "x".into()),
            ("".into(), "x".into()),
            (
                "X-Spamd-Result".into(),
                "default: False [7.00 / 15.00];\n\tSYMBOL(7.00)".into(),
            ),
        ]);
        assert_eq!(
            lines,
            b"X-Spam: Yes\r\nX-Spamd-Result: default: False [7.00 / 15.00]; \tSYMBOL(7.00)\r\n"
        );
    }
}
