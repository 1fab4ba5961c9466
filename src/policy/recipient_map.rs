//! `--recipient-map`: the addresses (and whole domains) that exist, so an
//! unknown recipient is refused at RCPT instead of bounced later to a
//! forged sender (backscatter).
//!
//! Why it is shaped like this: a map can hold millions of addresses and is
//! read on every RCPT by every core. It is one immutable block shared by
//! `Arc`: the entries, lower-cased, back to back in one string (a line
//! feed after each), and a hash table of their offsets (5 octets per
//! bucket, 1–2 buckets per entry, no allocation per entry). A lookup hashes the query once per candidate
//! (`user+ext@domain`, `user@domain`, `@domain`), with a per-process random
//! key so clients cannot aim at collisions. SIGHUP builds a new map and
//! swaps it in; sessions keep the one they started with.

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hashbrown::HashTable;

/// Entries are at most this long (RFC 5321's path limit, 256 octets).
const MAX_ENTRY: usize = 256;

/// The set of known recipients.
pub struct RecipientMap {
    /// Every entry, lower-cased, each ended by a line feed.
    text: String,
    /// The offset of each entry in `text`, by the hash of the entry.
    table: HashTable<u32>,
    hasher: RandomState,
    /// `--recipient-delimiter`: characters that start an address extension.
    delimiters: String,
    /// Where it was read from, and what loading cost (for the log).
    pub source: PathBuf,
    pub load_time: Duration,
}

impl std::fmt::Debug for RecipientMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RecipientMap({}, {} entries)",
            self.source.display(),
            self.len()
        )
    }
}

/// Why a map could not be loaded: the file and line, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {why}")]
    Entry {
        path: String,
        line: usize,
        why: String,
    },
    #[error("{path}: more than 4 GiB of entries")]
    TooLarge { path: String },
}

impl RecipientMap {
    /// Reads `path`: one `local@domain` or `@domain` per line, `#`
    /// comments and blank lines ignored.
    pub fn load(path: &Path, delimiters: &str) -> Result<RecipientMap, MapError> {
        let started = Instant::now();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut map = RecipientMap::parse(&text, &shown, delimiters)?;
        map.source = path.to_path_buf();
        map.load_time = started.elapsed();
        Ok(map)
    }

    /// Builds a map from the text of a map file (`shown` names it in errors).
    pub fn parse(text: &str, shown: &str, delimiters: &str) -> Result<RecipientMap, MapError> {
        let mut map = RecipientMap {
            text: String::with_capacity(text.len()),
            table: HashTable::new(),
            hasher: RandomState::new(),
            delimiters: delimiters.to_string(),
            source: PathBuf::from(shown),
            load_time: Duration::ZERO,
        };
        let lines = memchr::memchr_iter(b'\n', text.as_bytes()).count() + 1;
        map.table.reserve(lines, |_| 0);
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let bad = |why: &str| MapError::Entry {
                path: shown.to_string(),
                line: i + 1,
                why: format!("{entry:?}: {why}"),
            };
            check_entry(entry).map_err(bad)?;
            map.insert(entry).ok_or_else(|| MapError::TooLarge {
                path: shown.to_string(),
            })?;
        }
        map.text.shrink_to_fit();
        Ok(map)
    }

    /// Adds an entry, lower-cased straight into the text (a duplicate is
    /// kept once); `None` when the text no longer fits 32-bit offsets.
    fn insert(&mut self, entry: &str) -> Option<()> {
        let start = self.text.len();
        let offset = u32::try_from(start).ok()?;
        push_lowered(&mut self.text, entry);
        let (text, hasher) = (&self.text, &self.hasher);
        let lowered = &text[start..];
        let hash = hasher.hash_one(lowered);
        if self
            .table
            .find(hash, |&o| entry_at(text, o) == lowered)
            .is_some()
        {
            self.text.truncate(start);
            return Some(());
        }
        self.text.push('\n');
        u32::try_from(self.text.len()).ok()?;
        let (text, hasher) = (&self.text, &self.hasher);
        self.table
            .insert_unique(hash, offset, |&o| hasher.hash_one(entry_at(text, o)));
        Some(())
    }

    fn find(&self, lowered: &str) -> bool {
        let hash = self.hasher.hash_one(lowered);
        self.table
            .find(hash, |&o| entry_at(&self.text, o) == lowered)
            .is_some()
    }

    /// Whether mail to `local@domain` is for a known recipient: the
    /// address itself, the address without its extension (`user+ext` →
    /// `user`, as Postfix's recipient_delimiter), or its whole domain.
    /// Case does not matter.
    pub fn accepts(&self, local: &str, domain: &str) -> bool {
        // One buffer for the three candidates: the address, the address
        // with its extension cut out in place, and the `@domain` tail.
        let mut query = String::with_capacity(local.len() + domain.len() + 1);
        push_lowered(&mut query, local);
        let mut at = query.len();
        query.push('@');
        push_lowered(&mut query, domain);
        if self.find(&query) {
            return true;
        }
        if let Some(base) = self.without_extension(&query[..at]).map(str::len) {
            query.replace_range(base..at, "");
            if self.find(&query) {
                return true;
            }
            at = base;
        }
        self.find(&query[at..])
    }

    /// The local part before its first delimiter; `None` without one (or
    /// when the local part starts with it: `+foo` has no base address).
    fn without_extension<'a>(&self, local: &'a str) -> Option<&'a str> {
        if self.delimiters.is_empty() {
            return None;
        }
        let at = local.find(|c| self.delimiters.contains(c))?;
        (at > 0).then(|| &local[..at])
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the map has no entries (it then refuses every recipient).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// One line for the log: where, how many, how much memory, how long.
    pub fn summary(&self) -> String {
        format!(
            "recipient map {}: {} entries, {:.1} MiB, read in {} ms",
            self.source.display(),
            self.len(),
            self.memory() as f64 / f64::from(1 << 20),
            self.load_time.as_millis()
        )
    }

    /// Octets the map holds: its text and its table.
    pub fn memory(&self) -> usize {
        self.text.capacity() + self.table.allocation_size()
    }
}

/// Appends `text` lower-cased (in place when it is ASCII, the common
/// case: no allocation).
fn push_lowered(out: &mut String, text: &str) {
    if text.is_ascii() {
        let start = out.len();
        out.push_str(text);
        out[start..].make_ascii_lowercase();
    } else {
        out.push_str(&text.to_lowercase());
    }
}

/// The entry at `offset`: up to its line feed.
fn entry_at(text: &str, offset: u32) -> &str {
    let rest = &text[offset as usize..];
    let end = memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
    &rest[..end]
}

/// An entry is `local@domain` or `@domain`, without spaces or angle
/// brackets, at most 256 octets.
fn check_entry(entry: &str) -> Result<(), &'static str> {
    if entry.len() > MAX_ENTRY {
        return Err("longer than 256 octets");
    }
    let odd = |c: char| c.is_whitespace() || c == '<' || c == '>';
    let odd_byte = |b: &u8| b.is_ascii_whitespace() || matches!(b, b'<' | b'>');
    if (entry.is_ascii() && entry.as_bytes().iter().any(odd_byte))
        || (!entry.is_ascii() && entry.contains(odd))
    {
        return Err("one address per line, without spaces or <>");
    }
    let Some((_, domain)) = entry.rsplit_once('@') else {
        return Err("expected local@domain or @domain");
    };
    if domain.is_empty() {
        return Err("the domain is missing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str, delimiters: &str) -> RecipientMap {
        RecipientMap::parse(text, "test.map", delimiters).unwrap()
    }

    #[test]
    fn addresses_and_whole_domains_match_in_any_case() {
        let m = map(
            "# users\nalice@example.com\n\n  Bob@Example.COM  # trailing comment\n@catchall.test\n",
            "",
        );
        assert_eq!(m.len(), 3);
        assert!(m.accepts("alice", "example.com"));
        assert!(m.accepts("ALICE", "EXAMPLE.com"));
        assert!(m.accepts("bob", "example.com"));
        assert!(m.accepts("anyone", "catchall.test"));
        assert!(!m.accepts("carol", "example.com"));
        assert!(!m.accepts("alice", "example.org"));
        assert!(!m.accepts("alice", "sub.catchall.test"));
    }

    #[test]
    fn the_delimiter_strips_an_extension_but_not_a_leading_one() {
        let m = map("user@example.com\n", "+-");
        assert!(m.accepts("user+lists", "example.com"));
        assert!(m.accepts("user-news+x", "example.com"));
        assert!(!m.accepts("+user", "example.com"));
        assert!(!m.accepts("users+x", "example.com"));
        let without = map("user@example.com\n", "");
        assert!(!without.accepts("user+lists", "example.com"));
        // An entry with its extension matches itself.
        let exact = map("user+vip@example.com\n", "+");
        assert!(exact.accepts("user+vip", "example.com"));
        assert!(!exact.accepts("user+other", "example.com"));
    }

    #[test]
    fn non_ascii_addresses_compare_without_case() {
        let m = map("jörg@bücher.example\n", "");
        assert!(m.accepts("JÖRG", "BÜCHER.example"));
    }

    #[test]
    fn duplicates_are_kept_once_and_an_empty_map_accepts_no_one() {
        let m = map("a@x.test\nA@X.TEST\na@x.test\n", "");
        assert_eq!(m.len(), 1);
        let empty = map("# nothing yet\n", "");
        assert!(empty.is_empty());
        assert!(!empty.accepts("a", "x.test"));
    }

    #[test]
    fn a_bad_line_is_an_error_naming_the_file_and_line() {
        for (text, why) in [
            ("ok@x.test\nnot-an-address\n", "line 2"),
            ("a@x.test b@x.test\n", "without spaces"),
            ("<a@x.test>\n", "without spaces or <>"),
            ("a@\n", "domain is missing"),
        ] {
            let e = RecipientMap::parse(text, "users.map", "")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("users.map line "), "{e}");
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let long = format!("{}@x.test\n", "a".repeat(300));
        let e = RecipientMap::parse(&long, "m", "").unwrap_err().to_string();
        assert!(e.contains("longer than 256"), "{e}");
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = RecipientMap::load(Path::new("/nonexistent/users.map"), "")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/users.map: cannot read"), "{e}");
    }

    #[test]
    fn a_large_map_holds_every_entry_and_little_beyond_its_text() {
        let text: String = (0..100_000)
            .map(|i| format!("user{i}@domain{}.example\n", i % 100))
            .collect();
        let m = map(&text, "+");
        assert_eq!(m.len(), 100_000);
        for i in (0..100_000).step_by(997) {
            assert!(m.accepts(&format!("user{i}+x"), &format!("domain{}.example", i % 100)));
            assert!(!m.accepts(&format!("user{i}x"), &format!("domain{}.example", i % 100)));
        }
        let entries_text = text.len() - 100_000;
        assert!(m.memory() < entries_text + 100_000 * 24, "{}", m.memory());
    }
}
