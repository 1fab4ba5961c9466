//! The types settings are written in, and how each is read from a flag
//! and from a TOML value.
//!
//! Why it exists: a size is `35M` on the command line and `"35M"` (or a
//! plain integer) in the file; a policy is `reject` in both. Each type
//! parses once, here, with one wording of what was expected, so a flag
//! and a file key holding the same mistake get the same sentence. The
//! policy enums keep their `FromStr` in their own modules; this file only
//! adapts them to TOML.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::smtp::BareNewlinePolicy;
use crate::spool::Durability;

/// A number of octets, written `4096`, `64K`, `35M` or `1G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Size, String> {
        parse_size(s).map(Size)
    }
}

/// A length of time, written `90` (seconds), `30s`, `10m`, `24h` or `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl FromStr for Secs {
    type Err = String;

    fn from_str(s: &str) -> Result<Secs, String> {
        parse_duration(s).map(Secs)
    }
}

/// `4096`, `64K`, `35M`, `1G` (powers of 1024; `KiB`/`MB` spellings too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number of octets like 35M".to_string())?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("unknown unit {other:?}; use K, M or G")),
    };
    let v = n
        .checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or("too large")?;
    if v == 0 {
        return Err("must be more than zero".into());
    }
    Ok(v)
}

/// Parses `10s`, `5m`, `24h`, `7d`; a bare number is seconds; fractions
/// are allowed (`0.5`, `1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let number = &t[..split];
    let n: f64 = number
        .parse()
        .ok()
        .filter(|_| number.starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(|| format!("{s:?} is not a duration like 30s, 0.5s, 10m, 24h or 7d"))?;
    let unit = match &t[split..] {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Duration::try_from_secs_f64(n * unit)
        .ok()
        .filter(|d| d.as_secs() < 1 << 40)
        .ok_or_else(|| format!("{s:?}: too long"))
}

/// A type a setting can have in the TOML file.
pub trait FileValue: Sized {
    /// The value, or what was expected instead of `v`.
    fn from_toml(v: toml::Value) -> Result<Self, String>;
    /// The value as the file would hold it (`--check-config` shows it).
    fn to_toml(&self) -> toml::Value;
}

/// "expected X, not the string "y"".
fn expected(what: &str, v: &toml::Value) -> String {
    format!("expected {what}, not the {} {v}", v.type_str())
}

impl FileValue for String {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Ok(s),
            other => Err(expected("a string", &other)),
        }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.clone())
    }
}

impl FileValue for PathBuf {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        String::from_toml(v).map(PathBuf::from)
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.display().to_string())
    }
}

impl FileValue for bool {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Boolean(b) => Ok(b),
            other => Err(expected("true or false", &other)),
        }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::Boolean(*self)
    }
}

impl FileValue for i64 {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) => Ok(n),
            other => Err(expected("a whole number", &other)),
        }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::Integer(*self)
    }
}

impl FileValue for usize {
    fn from_toml(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) if n >= 0 => Ok(n as usize),
            other => Err(expected("a whole number", &other)),
        }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

/// Sizes and times may be integers (octets, seconds) or strings with a
/// unit, like on the command line.
macro_rules! file_value_with_unit {
    ($($ty:ty: $what:literal),*) => {$(
        impl FileValue for $ty {
            fn from_toml(v: toml::Value) -> Result<Self, String> {
                match v {
                    toml::Value::Integer(n) if n >= 0 => n.to_string().parse(),
                    toml::Value::Float(f) if f >= 0.0 => f.to_string().parse(),
                    toml::Value::String(s) => s.parse(),
                    other => Err(expected($what, &other)),
                }
            }

            fn to_toml(&self) -> toml::Value {
                toml::Value::String(self.to_string())
            }
        }
    )*};
}

/// In the largest unit that divides it: `35M`, `64K`, `4097`.
impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        match [(30, 'G'), (20, 'M'), (10, 'K')]
            .into_iter()
            .find(|&(shift, _)| n != 0 && n.is_multiple_of(1 << shift))
        {
            Some((shift, unit)) => write!(f, "{}{unit}", n >> shift),
            None => write!(f, "{n}"),
        }
    }
}

/// In the largest unit that divides it: `5m`, `30s`, `0.5s`.
impl std::fmt::Display for Secs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        if d.subsec_nanos() != 0 {
            return write!(f, "{}s", d.as_secs_f64());
        }
        let secs = d.as_secs();
        match [(86_400, 'd'), (3600, 'h'), (60, 'm')]
            .into_iter()
            .find(|&(unit, _)| secs != 0 && secs.is_multiple_of(unit))
        {
            Some((unit, name)) => write!(f, "{}{name}", secs / unit),
            None => write!(f, "{secs}s"),
        }
    }
}
file_value_with_unit!(Size: "a size like 35M", Secs: "a duration like 30s");

/// Policies are strings, parsed by the policy's own `FromStr`.
macro_rules! file_value_from_str {
    ($($ty:ty { $($variant:path => $name:literal),* }),*) => {$(
        impl FileValue for $ty {
            fn from_toml(v: toml::Value) -> Result<Self, String> {
                String::from_toml(v)?.parse()
            }

            fn to_toml(&self) -> toml::Value {
                toml::Value::String(match self { $($variant => $name),* }.into())
            }
        }
    )*};
}
file_value_from_str!(
    Durability { Durability::Fsync => "fsync", Durability::None => "none" },
    BareNewlinePolicy {
        BareNewlinePolicy::Reject => "reject",
        BareNewlinePolicy::Accept => "accept"
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration(".5").is_err());
        assert!(parse_duration("1.2.3").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
    }

    #[test]
    fn sizes_and_times_show_in_the_largest_unit_and_parse_back() {
        for (size, shown) in [
            (35 << 20, "35M"),
            (64 << 10, "64K"),
            (4097, "4097"),
            (1 << 30, "1G"),
        ] {
            assert_eq!(Size(size).to_string(), shown);
            assert_eq!(shown.parse::<Size>().unwrap(), Size(size));
        }
        for (secs, shown) in [
            (300.0, "5m"),
            (30.0, "30s"),
            (0.5, "0.5s"),
            (86_400.0, "1d"),
            (7200.0, "2h"),
        ] {
            let t = Secs(Duration::from_secs_f64(secs));
            assert_eq!(t.to_string(), shown);
            assert_eq!(shown.parse::<Secs>().unwrap(), t);
        }
        assert_eq!(
            Durability::None.to_toml(),
            toml::Value::String("none".into())
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("35M"), Ok(35 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn file_values_take_integers_or_units_and_say_what_they_expected() {
        let int = toml::Value::Integer(4096);
        let text = toml::Value::String("1M".into());
        assert_eq!(Size::from_toml(int.clone()), Ok(Size(4096)));
        assert_eq!(Size::from_toml(text.clone()), Ok(Size(1 << 20)));
        assert_eq!(Secs::from_toml(int.clone()).unwrap().0.as_secs(), 4096);
        assert_eq!(usize::from_toml(int), Ok(4096));
        let half = toml::Value::Float(0.25);
        assert_eq!(Secs::from_toml(half).unwrap().0, Duration::from_millis(250));
        assert_eq!(i64::from_toml(toml::Value::Integer(-3)), Ok(-3));
        assert_eq!(
            usize::from_toml(toml::Value::String("x".into())),
            Err("expected a whole number, not the string \"x\"".into())
        );
        assert_eq!(
            bool::from_toml(text),
            Err("expected true or false, not the string \"1M\"".into())
        );
        assert_eq!(
            Durability::from_toml(toml::Value::String("none".into())),
            Ok(Durability::None)
        );
        assert!(Durability::from_toml(toml::Value::String("maybe".into()))
            .unwrap_err()
            .contains("maybe"));
    }
}
