//! The flag tables of `docs/contract.md`, generated from the clap command
//! itself (names, Go spellings, environment variables, defaults, help), so
//! the docs cannot drift from the binary. `tests/config_docs.rs` keeps the
//! doc equal to what this generates.

use clap::Command;

/// The markdown table of one command's flags (the daemon's, or a
/// subcommand's by name).
pub fn flags_table(subcommand: Option<&str>) -> String {
    let mut root = super::command();
    root.build();
    let command: &Command = match subcommand {
        None => &root,
        Some(name) => root.get_subcommands().find(|c| c.get_name() == name).unwrap_or(&root),
    };
    let mut t = String::from("| flag | Go spelling | environment | default | meaning |\n|---|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() || long == "help" || long == "version" {
            continue;
        }
        let go = arg
            .get_visible_aliases()
            .into_iter()
            .flatten()
            .chain(arg.get_all_aliases().into_iter().flatten())
            .next()
            .unwrap_or(long);
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(",");
        let default = if default.is_empty() {
            "empty".to_string()
        } else {
            format!("`{default}`")
        };
        let value = if arg.get_action().takes_values() && arg.get_num_args().is_some_and(|n| n.min_values() > 0) {
            format!(
                " {}",
                arg.get_value_names()
                    .and_then(|v| v.first())
                    .map_or("VALUE", |v| v.as_str())
            )
        } else {
            String::new()
        };
        let help = arg
            .get_help()
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        t.push_str(&format!(
            "| `--{long}{value}` | `-{go}` | {env} | {default} | {help} |\n"
        ));
    }
    t
}
