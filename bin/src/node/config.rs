//! `ffrtmp-node --config FILE`: the node's settings from a TOML file.
//!
//! Every node flag is a key: its long name with `_` for `-` (`--data-dir` →
//! `data_dir`, `--media-root` → `media_root`), all at the top level. A switch
//! is `key = true`; a repeatable flag takes an array (or one value). Later
//! wins: built-in defaults, the file, `FFRTMP_*` environment variables,
//! command-line flags (docs/CONFIG.md).
//!
//! The file is layered under clap, not beside it. clap parses the command line
//! and the environment once; each key of the file whose flag got its value
//! from neither (its [`ValueSource`] is the default, or there is none) becomes
//! `--flag=value` in front of the real arguments, and clap parses again. So a
//! value from the file goes through the flag's own value parser (types,
//! ranges, possible values), and flags and variables beat the file because
//! clap already chose them. Before that each key is checked on its own, so
//! that an error names the key and its line: unknown keys, values of the wrong
//! TOML type, values the flag refuses.

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::{Spanned, Value};

/// What a key's value is in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A switch (the flag takes no value): `true` or `false`, the value its
    /// field gets. `given` is the one that passes the flag.
    Switch { given: bool },
    /// A counted switch (`-vvv`): how many times.
    Count,
    /// `true` or `false`, passed as the flag's value.
    Bool,
    /// An integer.
    Integer,
    /// A number (an integer is taken too).
    Float,
    /// A string: paths, addresses, names.
    String,
}

impl Kind {
    fn describe(self, many: bool) -> &'static str {
        match (self, many) {
            (Kind::Switch { .. } | Kind::Bool, false) => "true or false",
            (Kind::Count, _) => "an integer from 0 to 255",
            (Kind::Integer, false) => "an integer",
            (Kind::Float, false) => "a number",
            (Kind::String, false) => "a string",
            (Kind::Switch { .. } | Kind::Bool, true) => "an array of true/false",
            (Kind::Integer, true) => "an array of integers (or one integer)",
            (Kind::Float, true) => "an array of numbers (or one number)",
            (Kind::String, true) => "an array of strings (or one string)",
        }
    }
}

/// One key of the config file: a flag of the node.
#[derive(Clone, Debug)]
pub(crate) struct Key {
    /// The TOML key (`data_dir`).
    pub name: String,
    /// The flag's long name (`data-dir`).
    pub long: String,
    /// clap's id of the flag (`data_dir`; `media_roots` for `--media-root`).
    pub id: String,
    /// What the value is in TOML.
    pub kind: Kind,
    /// A repeatable flag: an array in TOML.
    pub many: bool,
    /// Never printed: the flags whose environment values clap hides too.
    pub secret: bool,
    /// Its `FFRTMP_*` variable.
    pub env: Option<String>,
    arg: Arg,
}

/// The keys a config file may set: one per long flag of `cmd` (a command
/// that holds the node's flags only).
pub(crate) fn keys(cmd: &Command) -> Vec<Key> {
    cmd.get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let action = arg.get_action();
            let kind = match action {
                ArgAction::SetTrue => Kind::Switch { given: true },
                ArgAction::SetFalse => Kind::Switch { given: false },
                ArgAction::Count => Kind::Count,
                ArgAction::Set | ArgAction::Append => value_kind(arg),
                // --help, --version: actions, not settings.
                _ => return None,
            };
            Some(Key {
                name: long.replace('-', "_"),
                long: long.to_string(),
                id: arg.get_id().to_string(),
                kind,
                many: matches!(action, ArgAction::Append),
                secret: arg.is_hide_env_values_set(),
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                arg: arg.clone(),
            })
        })
        .collect()
}

/// The TOML type of a flag's value, from the type its value parser yields.
fn value_kind(arg: &Arg) -> Kind {
    let t = arg.get_value_parser().type_id();
    let any = |ids: &[TypeId]| ids.iter().any(|id| t == *id);
    if any(&[
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
    ]) {
        Kind::Integer
    } else if any(&[TypeId::of::<f32>(), TypeId::of::<f64>()]) {
        Kind::Float
    } else if any(&[TypeId::of::<bool>()]) {
        Kind::Bool
    } else {
        Kind::String
    }
}

/// A key of the file, turned into the flag arguments it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Setting {
    /// clap's id of the flag.
    pub id: String,
    /// `--flag=value`, once per value; empty for a switch set to its default.
    pub args: Vec<OsString>,
}

/// The settings in a config file: read, parsed, every key checked. The error
/// names the file, and each problem its line and key.
pub(crate) fn load(path: &Path, keys: &[Key]) -> anyhow::Result<Vec<Setting>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", path.display()))?;
    parse(&text, keys).map_err(|problems| {
        let problems = problems.trim_end();
        if problems.contains('\n') {
            anyhow::anyhow!("config file {}:\n{problems}", path.display())
        } else {
            anyhow::anyhow!("config file {}: {problems}", path.display())
        }
    })
}

/// The settings in a config file's text. The error lists every problem, one
/// per line (`line 3: unknown key ...`), or is the TOML parser's own message.
pub(crate) fn parse(text: &str, keys: &[Key]) -> Result<Vec<Setting>, String> {
    let table: BTreeMap<String, Spanned<Value>> =
        toml::from_str(text).map_err(|e| e.to_string())?;
    let mut problems: Vec<(usize, String)> = Vec::new();
    let mut settings = Vec::new();
    for (name, value) in &table {
        let line = line_of(text, value.span().start);
        match keys.iter().find(|k| k.name == *name) {
            None => problems.push((line, unknown_key(name, keys))),
            Some(key) => match key.args_for(value.get_ref()) {
                Ok(args) => settings.push(Setting {
                    id: key.id.clone(),
                    args,
                }),
                Err(why) => problems.push((line, format!("`{name}`: {why}"))),
            },
        }
    }
    if problems.is_empty() {
        return Ok(settings);
    }
    problems.sort();
    Err(problems
        .iter()
        .map(|(line, problem)| format!("line {line}: {problem}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

fn unknown_key(name: &str, keys: &[Key]) -> String {
    // `data-dir`, `--data-dir`, `FFRTMP_DATA_DIR`: the key is `data_dir`.
    let lower = name.to_ascii_lowercase();
    let guess = lower
        .trim_start_matches('-')
        .trim_start_matches("ffrtmp_")
        .replace('-', "_");
    match keys.iter().find(|k| k.name == guess) {
        Some(k) => format!("unknown key `{name}` (did you mean `{}`?)", k.name),
        None => format!(
            "unknown key `{name}` (the keys are the node's flags with `_` for `-`: \
             see `ffrtmp-node --help` or docs/CONFIG.md)"
        ),
    }
}

fn a_or_an(value: &Value) -> String {
    let t = value.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", a_or_an(found))
}

impl Key {
    /// The flag arguments a TOML value stands for, checked by the flag's own
    /// value parser.
    fn args_for(&self, value: &Value) -> Result<Vec<OsString>, String> {
        let flag = format!("--{}", self.long);
        match self.kind {
            Kind::Switch { given } => match value {
                Value::Boolean(b) if *b == given => Ok(vec![flag.into()]),
                Value::Boolean(_) => Ok(Vec::new()),
                other => Err(expected(self.kind.describe(false), other)),
            },
            Kind::Count => match value {
                Value::Integer(n) => match usize::try_from(*n) {
                    Ok(n) if n <= 255 => Ok(vec![flag.into(); n]),
                    _ => Err(format!("{n} is not from 0 to 255")),
                },
                other => Err(expected(self.kind.describe(false), other)),
            },
            Kind::Bool | Kind::Integer | Kind::Float | Kind::String => {
                let items: Vec<&Value> = match value {
                    Value::Array(items) if self.many => items.iter().collect(),
                    one => vec![one],
                };
                let mut args = Vec::with_capacity(items.len());
                for item in items {
                    let text = self
                        .scalar(item)
                        .ok_or_else(|| expected(self.kind.describe(self.many), item))?;
                    args.push(OsString::from(format!("{flag}={text}")));
                }
                self.check(&args)?;
                Ok(args)
            }
        }
    }

    /// A TOML value as the flag's value, if it has the key's type.
    fn scalar(&self, value: &Value) -> Option<String> {
        match (self.kind, value) {
            (Kind::String, Value::String(s)) => Some(s.clone()),
            (Kind::Integer | Kind::Float, Value::Integer(n)) => Some(n.to_string()),
            (Kind::Float, Value::Float(x)) => Some(x.to_string()),
            (Kind::Bool, Value::Boolean(b)) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Runs the flag's value parser (types, ranges, possible values) on the
    /// arguments, with the flag alone in a command: the error is about this
    /// key only.
    fn check(&self, args: &[OsString]) -> Result<(), String> {
        let arg = self.arg.clone().env(None::<&'static str>).required(false);
        Command::new("ffrtmp-node")
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true)
            .arg(arg)
            .try_get_matches_from(args)
            .map(|_| ())
            .map_err(|e| refusal(&e))
    }
}

/// Why a flag's value parser refused a value, without the flag's name (the
/// caller names the key).
fn refusal(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => format!(" {v:?}"),
        _ => String::new(),
    };
    match e.kind() {
        ErrorKind::InvalidValue => match e.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => {
                format!(
                    "invalid value{value} (possible values: {})",
                    valid.join(", ")
                )
            }
            _ => format!("invalid value{value}"),
        },
        ErrorKind::ValueValidation => match std::error::Error::source(e) {
            Some(why) => format!("invalid value{value}: {why}"),
            None => format!("invalid value{value}"),
        },
        _ => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid value");
            first.trim_start_matches("error: ").to_string()
        }
    }
}

/// Whether a flag's value, as clap found it, beats the file: it came from
/// the command line or from the flag's `FFRTMP_*` variable. A default (or no
/// value at all) does not.
pub(crate) fn beats_file(source: Option<ValueSource>) -> bool {
    matches!(
        source,
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The arguments for clap's second parse: `argv[0]`, the file's settings
/// that nothing in `first` (the first parse of `argv`) beats, then the rest
/// of `argv`. Also the ids of the flags the file set.
pub(crate) fn merge(
    argv: &[OsString],
    settings: &[Setting],
    first: &ArgMatches,
) -> (Vec<OsString>, BTreeSet<String>) {
    let mut args: Vec<OsString> = argv.iter().take(1).cloned().collect();
    let mut from_file = BTreeSet::new();
    for setting in settings {
        if setting.args.is_empty() || beats_file(first.value_source(&setting.id)) {
            continue;
        }
        args.extend(setting.args.iter().cloned());
        from_file.insert(setting.id.clone());
    }
    args.extend(argv.iter().skip(1).cloned());
    (args, from_file)
}

/// The effective configuration as a config file (`--print-config`): every
/// key with its value and where the value came from. Unset keys and secrets
/// are comments, so the output loads back as a config file.
pub(crate) fn render(
    keys: &[Key],
    matches: &ArgMatches,
    file: Option<&Path>,
    from_file: &BTreeSet<String>,
) -> String {
    let mut out = String::from(
        "# ffrtmp-node: the effective configuration. Later wins: defaults, the config\n\
         # file, FFRTMP_* environment variables, flags. Secrets are not shown.\n",
    );
    match file {
        Some(path) => out.push_str(&format!("# Config file: {}\n\n", path.display())),
        None => out.push_str("# No config file.\n\n"),
    }
    for key in keys {
        let source = if from_file.contains(&key.id) {
            "file".to_string()
        } else {
            match matches.value_source(&key.id) {
                Some(ValueSource::CommandLine) => "flag".to_string(),
                Some(ValueSource::EnvVariable) => {
                    format!("env {}", key.env.as_deref().unwrap_or("?"))
                }
                _ => "default".to_string(),
            }
        };
        let raw: Vec<String> = matches
            .get_raw(&key.id)
            .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let line = if key.kind == Kind::Count {
            let n = matches.get_count(&key.id);
            format!("{} = {n}", key.name)
        } else if raw.is_empty() {
            format!("# {} is not set", key.name)
        } else if key.secret {
            format!("# {} is set (not shown)", key.name)
        } else {
            let mut values: Vec<Value> = raw.iter().map(|r| toml_value(key.kind, r)).collect();
            let value = if key.many || values.len() != 1 {
                Value::Array(values)
            } else {
                values.remove(0)
            };
            format!("{} = {value}", key.name)
        };
        if raw.is_empty() && key.kind != Kind::Count {
            out.push_str(&line);
            out.push('\n');
        } else {
            out.push_str(&format!("{line:<40} # {source}\n"));
        }
    }
    out
}

/// A flag's value (as clap took it) as TOML of the key's type.
fn toml_value(kind: Kind, raw: &str) -> Value {
    let parsed = match kind {
        Kind::Integer => raw.parse::<i64>().ok().map(Value::Integer),
        Kind::Float => raw.parse::<f64>().ok().map(Value::Float),
        Kind::Bool | Kind::Switch { .. } => raw.parse::<bool>().ok().map(Value::Boolean),
        Kind::Count | Kind::String => None,
    };
    parsed.unwrap_or_else(|| Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests;
