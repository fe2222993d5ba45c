//! Accepts the Go xtcp2 spellings (`-promListen :9088`, `-profile.mode=cpu`,
//! `-maxLoops 1`) beside clap's `--prom-listen`.
//!
//! Go's `flag` package takes long names after a single dash. Rather than keep
//! a second list of names, we ask clap for every long name and alias it
//! knows (the Go names are declared as aliases next to each flag), and
//! rewrite `-name` to `--name` only when `name` is one of them. Anything else
//! is left for clap to judge, so a typo still gets clap's error message.

use clap::Command;

/// Rewrites single-dash long flags that clap knows into double-dash form.
pub(crate) fn normalise(args: impl IntoIterator<Item = String>, command: &Command) -> Vec<String> {
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
            match arg.strip_prefix('-') {
                Some(rest) if !rest.starts_with('-') && rest.len() > 1 => {
                    let name = rest.split('=').next().unwrap_or(rest);
                    if known.iter().any(|k| k == name) {
                        format!("-{arg}")
                    } else {
                        arg
                    }
                }
                _ => arg,
            }
        })
        .collect()
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
