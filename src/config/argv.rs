//! Accepts the Go xtcp2 spellings (`-promListen :9088`, `-profile.mode=cpu`,
//! `-maxLoops 1`) beside clap's `--prom-listen`.
//!
//! Go's `flag` package takes long names after a single dash. Rather than keep
//! a second list of names, we ask clap for every long name and alias it
//! knows (the Go names are declared as aliases next to each flag), and
//! rewrite `-name` to `--name` only when `name` is one of them. Anything else
//! is left for clap to judge, so a typo still gets clap's error message.
//!
//! Arguments are `OsString`s, as the OS gives them: a file path may be any
//! bytes. Only a flag's name must be UTF-8 to be recognised here; clap
//! judges the rest, and a non-UTF-8 value where text is expected becomes
//! [`not_utf8`]'s usage error naming it.

use std::any::TypeId;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::Command;

/// Rewrites single-dash long flags that clap knows into double-dash form.
pub(crate) fn normalise(args: impl IntoIterator<Item = OsString>, command: &Command) -> Vec<OsString> {
    let mut known: Vec<String> = Vec::new();
    collect_long_names(command, &mut known);
    let mut past_separator = false;
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 || past_separator {
                return arg;
            }
            if arg == "--" {
                past_separator = true;
                return arg;
            }
            match arg.as_encoded_bytes().strip_prefix(b"-") {
                Some(rest) if !rest.starts_with(b"-") && rest.len() > 1 => {
                    let name = rest.split(|&b| b == b'=').next().unwrap_or(rest);
                    if known.iter().any(|k| k.as_bytes() == name) {
                        let mut long = OsString::from("-");
                        long.push(&arg);
                        long
                    } else {
                        arg
                    }
                }
                _ => arg,
            }
        })
        .collect()
}

/// The usage error (exit 2) for a non-UTF-8 value where text is expected.
/// clap only says "invalid UTF-8 was detected in one or more arguments";
/// this names each culprit, printed lossily: the non-UTF-8 arguments that
/// are not the value of a path flag, and the non-UTF-8 environment
/// variables that stand for a text flag.
pub(crate) fn not_utf8(args: &[OsString], command: &mut Command) -> clap::Error {
    let (mut paths, mut text_envs) = (Vec::new(), Vec::new());
    collect_by_value_kind(command, &mut paths, &mut text_envs);
    text_envs.sort();
    text_envs.dedup();
    let lossy = |s: &OsStr| format!("{:?}", s.to_string_lossy());
    let is_path_flag = |flag: &[u8]| paths.iter().any(|p| flag == format!("--{p}").as_bytes());
    let mut culprits: Vec<String> = args
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, a)| a.to_str().is_none())
        .filter(|(i, a)| {
            let flag = a.as_encoded_bytes().split(|&b| b == b'=').next().unwrap_or_default();
            let inline_path = a.as_encoded_bytes().contains(&b'=') && is_path_flag(flag);
            !inline_path && !is_path_flag(args[i - 1].as_encoded_bytes())
        })
        .map(|(_, a)| format!("argument {}", lossy(a)))
        .collect();
    culprits.extend(
        text_envs
            .iter()
            .filter_map(|name| Some((name, std::env::var_os(name)?)))
            .filter(|(_, value)| value.to_str().is_none())
            .map(|(name, value)| format!("environment variable {name}={}", lossy(&value))),
    );
    let what = if culprits.is_empty() {
        "a value".to_string()
    } else {
        culprits.join(", ")
    };
    let paths: Vec<String> = paths.iter().map(|p| format!("--{p}")).collect();
    let message = format!(
        "{what} is not valid UTF-8; only file paths ({}) may be any bytes",
        paths.join(", ")
    );
    clap::Error::raw(ErrorKind::InvalidUtf8, message).format(command)
}

/// The long names of flags whose value is a path (any bytes), and the
/// environment variables of the other flags (text).
fn collect_by_value_kind(command: &Command, paths: &mut Vec<String>, text_envs: &mut Vec<String>) {
    for arg in command.get_arguments() {
        let is_path = arg.get_value_parser().type_id() == TypeId::of::<PathBuf>();
        match (is_path, arg.get_long()) {
            (true, Some(long)) if !paths.iter().any(|p| p == long) => paths.push(long.to_string()),
            (true, _) => {}
            (false, _) => text_envs.extend(arg.get_env().and_then(OsStr::to_str).map(str::to_string)),
        }
    }
    for sub in command.get_subcommands() {
        collect_by_value_kind(sub, paths, text_envs);
    }
}

fn collect_long_names(command: &Command, out: &mut Vec<String>) {
    for arg in command.get_arguments() {
        if let Some(long) = arg.get_long() {
            out.push(long.to_string());
        }
        if let Some(aliases) = arg.get_all_aliases() {
            out.extend(aliases.into_iter().map(str::to_string));
        }
    }
    for sub in command.get_subcommands() {
        collect_long_names(sub, out);
    }
}
