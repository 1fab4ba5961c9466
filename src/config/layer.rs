//! Settings given at one level (the command line, or the file), each with
//! where it came from, and the rule that puts one level over another.
//!
//! Why it exists: an operator who reads "must be at least 1" needs to know
//! whether to fix a flag or a line of a file. Every value the server is
//! configured with is a [`Sourced`] until it is validated, so each error
//! names `--max-recipients` or `max-recipients in /etc/sluice.toml`.
//! [`serve_settings!`] declares each setting once and derives from that
//! declaration the clap struct, the file reader and the merge.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::value::FileValue;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag (the field name, with underscores).
    Flag(&'static str),
    /// A key of the `--config` file.
    File {
        field: &'static str,
        path: Arc<Path>,
    },
    /// Nobody set it.
    Default(&'static str),
}

impl Source {
    /// The setting's name as written where it came from.
    fn key(field: &str) -> String {
        field.replace('_', "-")
    }

    /// Names the setting and its value for an error: `--listen "x"`,
    /// `listen = "x" in FILE`.
    pub fn with_value(&self, shown: impl fmt::Display) -> String {
        match self {
            Source::Flag(f) => format!("--{} {shown}", Source::key(f)),
            Source::File { field, path } => {
                format!("{} = {shown} in {}", Source::key(field), path.display())
            }
            Source::Default(f) => format!("{} (default {shown})", Source::key(f)),
        }
    }
}

/// Names the setting: `--max-recipients`, `max-recipients in FILE`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(field) => write!(f, "--{}", Source::key(field)),
            Source::File { field, path } => {
                write!(f, "{} in {}", Source::key(field), path.display())
            }
            Source::Default(field) => write!(f, "{} (default)", Source::key(field)),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    /// `value` from `source`.
    pub fn new(value: T, source: Source) -> Sourced<T> {
        Sourced { value, source }
    }
}

/// How a setting's field is given: `Option<T>` (one value) or `Vec<T>`
/// (a list; an empty list on the command line means "not given").
pub trait Setting {
    /// The value once given.
    type Value;
    /// The value, if this level gave one.
    fn given(self) -> Option<Self::Value>;
    /// Reads the value from the file.
    fn from_toml(v: toml::Value) -> Result<Self::Value, String>;
    /// The value as the file would hold it.
    fn to_toml(v: &Self::Value) -> toml::Value;
}

impl<T: FileValue> Setting for Option<T> {
    type Value = T;

    fn given(self) -> Option<T> {
        self
    }

    fn from_toml(v: toml::Value) -> Result<T, String> {
        T::from_toml(v)
    }

    fn to_toml(v: &T) -> toml::Value {
        v.to_toml()
    }
}

impl<T: FileValue> Setting for Vec<T> {
    type Value = Vec<T>;

    fn given(self) -> Option<Vec<T>> {
        (!self.is_empty()).then_some(self)
    }

    fn from_toml(v: toml::Value) -> Result<Vec<T>, String> {
        match v {
            toml::Value::Array(items) => items.into_iter().map(T::from_toml).collect(),
            // One value is a list of one.
            one => T::from_toml(one).map(|t| vec![t]),
        }
    }

    fn to_toml(v: &Vec<T>) -> toml::Value {
        toml::Value::Array(v.iter().map(T::to_toml).collect())
    }
}

/// One setting of `sluice serve`, as the sample file and
/// `--check-config` describe it.
#[derive(Debug, Clone, Copy)]
pub struct SettingInfo {
    /// The field name (the file key with `_` for `-`).
    pub field: &'static str,
    /// The `--help` text, one doc line per line.
    pub doc: &'static str,
    /// The default as a TOML value, where there is a fixed one; `None`
    /// where it is computed (the host name, the CPUs) or the setting is
    /// off unless given.
    pub default: Option<&'static str>,
}

impl SettingInfo {
    /// The file key: `max-recipients`.
    pub fn key(&self) -> String {
        Source::key(self.field)
    }
}

/// Reads `path` as a TOML table (the settings file).
pub fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("--config {}: not a valid sluice config", path.display()))
}

/// The one item of `items`, if there is one (a declared default).
pub const fn first(items: &[&'static str]) -> Option<&'static str> {
    match items {
        [one, ..] => Some(one),
        [] => None,
    }
}

/// The file's path, shared by every [`Source::File`] naming it.
pub fn shared_path(path: &Path) -> Arc<Path> {
    Arc::from(PathBuf::from(path).into_boxed_path())
}

/// Declares the settings of `sluice serve` once. Each entry is a doc
/// comment (the `--help` text), clap's `#[arg(..)]`, and a field whose
/// type is `Option<T>` or `Vec<T>`; the file key is the flag's name. It
/// defines:
///
/// An entry may end in `= "TOML"`, its default as the file would write
/// it (`= "'127.0.0.1:2525'"`, `= "100"`); a test checks each against
/// the default the validation applies.
///
/// - `ServeArgs`: the clap struct (plus `--config FILE` and
///   `--check-config`);
/// - `SETTINGS`: each setting's [`SettingInfo`];
/// - `Given`: one level's settings as `Option<Sourced<_>>`, read from the
///   flags (`Given::from_flags`) or the file's table (`Given::from_table`,
///   which refuses unknown keys and names the key of a bad value), and
///   `Given::over`, which keeps this level's value where it has one.
macro_rules! serve_settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $field:ident: $ty:ty $(= $default:literal)?,
    )*) => {
        /// The flags of `sluice serve`. Every one can also be set in the
        /// file given with `--config`, under the same name
        /// (`max-recipients = 50`); flags win.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct ServeArgs {
            /// TOML file with any of these settings; flags override it.
            #[arg(long, value_name = "FILE")]
            pub config: Option<std::path::PathBuf>,
            /// Print the effective configuration, each value with where it
            /// came from (flag, file, default), and exit: 0 if it is
            /// valid, 1 with the error if not. Nothing is started.
            #[arg(long)]
            pub check_config: bool,
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $field: $ty,
            )*
        }

        /// Every setting, in `--help` order.
        pub const SETTINGS: &[$crate::config::layer::SettingInfo] = &[$(
            $crate::config::layer::SettingInfo {
                field: stringify!($field),
                doc: concat!($($doc, "\n",)*),
                default: $crate::config::layer::first(&[$($default)?]),
            },
        )*];

        /// The settings one level gave, each with its source.
        #[derive(Debug, Clone, Default)]
        pub struct Given {
            $(pub $field: Option<$crate::config::layer::Sourced<<$ty as $crate::config::layer::Setting>::Value>>,)*
        }

        impl Given {
            /// What the command line gave.
            pub fn from_flags(args: &ServeArgs) -> Given {
                use $crate::config::layer::{Setting, Source, Sourced};
                Given {
                    $($field: Setting::given(args.$field.clone())
                        .map(|v| Sourced::new(v, Source::Flag(stringify!($field)))),)*
                }
            }

            /// What the file's table gave.
            pub fn from_table(
                table: toml::Table,
                path: &std::path::Path,
            ) -> anyhow::Result<Given> {
                use $crate::config::layer::{Setting, Source, Sourced};
                let shared = $crate::config::layer::shared_path(path);
                let mut given = Given::default();
                'keys: for (key, value) in table {
                    $(
                        if key == stringify!($field).replace('_', "-") {
                            let source = Source::File { field: stringify!($field), path: shared.clone() };
                            let v = <$ty as Setting>::from_toml(value)
                                .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
                            given.$field = Some(Sourced::new(v, source));
                            continue 'keys;
                        }
                    )*
                    anyhow::bail!(
                        "{key:?} in {}: not a sluice setting (the names are those of `sluice serve --help`, without the dashes)",
                        path.display()
                    );
                }
                Ok(given)
            }

            /// Each setting (in [`SETTINGS`] order) as the file would hold
            /// it, with its source, or `None` where none was given.
            pub fn shown(&self) -> Vec<Option<(toml::Value, $crate::config::layer::Source)>> {
                use $crate::config::layer::Setting;
                vec![$(self.$field.as_ref().map(|s| (<$ty as Setting>::to_toml(&s.value), s.source.clone())),)*]
            }

            /// This level over `lower`: each setting from here if given.
            pub fn over(self, lower: Given) -> Given {
                Given { $($field: self.$field.or(lower.$field),)* }
            }
        }
    };
}
pub(crate) use serve_settings;
