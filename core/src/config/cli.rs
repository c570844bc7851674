//! The command line: `receptor --node id=foo --tcp-listener port=2222 --config foo.yml`.
//!
//! Go receptor's syntax (from `ghjm/cmdline`) is a sequence of actions, each a flag
//! followed by `key=value` words or a bare value (`--log-level debug`,
//! `--tcp-peer host:2222`). Flags are case-insensitive and may use one dash
//! (`-node`); `-c`/`--config FILE` reads a YAML file whose items take that position;
//! `-h`/`--help` anywhere prints the help; no arguments at all also prints it.
//! `--config-v2` (Go's switch to the map-form reader) is accepted and ignored, since the
//! form of a file is recognised from its content.
//!
//! The words are first normalised to `--<lower-case name>`, then clap groups the values
//! of every occurrence of every flag (each kind is a repeatable option taking any number
//! of values; flags that no built-in kind has are registered on the fly, because a plugin
//! may provide them), and the occurrences are put back in command-line order.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};

use super::build::{self, Outcome};
use super::described::PluginKind;
use super::error::ConfigError;
use super::item::{Entry, RawItem};
use super::schema::{self, Group, KINDS};
use super::value::Value;
use super::yaml;
use super::Invocation;

/// One normalised word.
enum Token {
    /// `--name` (lower case, without dashes).
    Flag(String),
    /// Anything else.
    Word,
}

const STRAY: &str = "parameters-before-command";

/// See [`super::parse_args_with`].
pub(crate) fn parse<I, F>(args: I, plugin_kinds: F) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = OsString>,
    F: FnOnce() -> Vec<PluginKind>,
{
    let mut args = args.into_iter();
    let program = args
        .next()
        .and_then(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "receptor".to_owned());
    let mut words = Vec::new();
    for (index, arg) in args.enumerate() {
        match arg.into_string() {
            Ok(word) => words.push(word),
            Err(_) => {
                return Err(ConfigError::CommandLine(format!(
                    "argument {} is not valid UTF-8",
                    index + 1
                )))
            }
        }
    }
    words.retain(|w| w != "--config-v2");
    let generated = words.iter().enumerate().find_map(|(index, word)| {
        let lower = word.to_lowercase();
        matches!(
            lower.as_str(),
            "-h" | "--help" | "--bash-completion" | "--man" | "--completion"
        )
        .then_some((index, lower))
    });
    if words.is_empty() || generated.is_some() {
        let kinds = plugin_kinds();
        return Ok(match generated {
            None => Invocation::Help(help_text(&program, &kinds)),
            Some((_, word)) if word == "--bash-completion" => {
                Invocation::Print(bash_completion(&program, &kinds))
            }
            Some((_, word)) if word == "--man" => Invocation::Print(man_page(&program, &kinds)?),
            Some((index, word)) if word == "--completion" => {
                let shell = words.get(index + 1).map(String::as_str).unwrap_or("");
                Invocation::Print(completion(&program, shell, &kinds)?)
            }
            Some(_) => Invocation::Help(help_text(&program, &kinds)),
        });
    }
    let (tokens, normalised) = normalise(&words)?;
    let occurrences = group_with_clap(&program, &tokens, &normalised)?;
    let (items, config_file) = items_in_order(&tokens, occurrences)?;
    Ok(match build::build(items)? {
        Outcome::Run(config) => Invocation::Run {
            config: *config,
            config_file,
        },
        Outcome::Version => Invocation::Version,
        Outcome::CertInit(s) => Invocation::CertInit(s),
        Outcome::CertMakeReq(s) => Invocation::CertMakeReq(s),
        Outcome::CertSignReq(s) => Invocation::CertSignReq(s),
    })
}

/// Rewrites flags to `--<lower-case name>` (`-c` → `--config`) and rejects words Go
/// receptor cannot parse either.
fn normalise(words: &[String]) -> Result<(Vec<Token>, Vec<String>), ConfigError> {
    let mut tokens = Vec::with_capacity(words.len());
    let mut normalised = Vec::with_capacity(words.len());
    for (index, word) in words.iter().enumerate() {
        if word.is_empty() {
            return Err(ConfigError::CommandLine(format!(
                "argument {} is empty",
                index + 1
            )));
        }
        if let Some(stripped) = word.strip_prefix('-') {
            let name = stripped
                .strip_prefix('-')
                .unwrap_or(stripped)
                .to_lowercase();
            let valid = !name.is_empty()
                && !name.starts_with('-')
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid || name == STRAY {
                return Err(ConfigError::CommandLine(format!("unknown option {word:?}")));
            }
            let name = if name == "c" {
                "config".to_owned()
            } else {
                name
            };
            normalised.push(format!("--{name}"));
            tokens.push(Token::Flag(name));
        } else {
            normalised.push(word.clone());
            tokens.push(Token::Word);
        }
    }
    Ok((tokens, normalised))
}

/// Lets clap split the words into occurrences of each flag.
fn group_with_clap(
    program: &str,
    tokens: &[Token],
    normalised: &[String],
) -> Result<BTreeMap<String, Vec<Vec<String>>>, ConfigError> {
    let mut names: Vec<String> = vec!["config".to_owned()];
    names.extend(KINDS.iter().map(|k| k.name.to_owned()));
    for token in tokens {
        if let Token::Flag(name) = token {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let mut command = command(program, &[]).no_binary_name(true).arg(
        Arg::new(STRAY)
            .num_args(1..)
            .action(ArgAction::Append)
            .hide(true),
    );
    for name in names
        .iter()
        .filter(|n| schema::kind(n).is_none() && *n != "config")
    {
        command = command.arg(kind_arg(name.clone()));
    }
    let matches = command
        .try_get_matches_from(normalised)
        .map_err(|e| ConfigError::CommandLine(one_line(&e.to_string())))?;
    if let Some(mut stray) = matches.get_many::<String>(STRAY) {
        let first = stray.next().cloned().unwrap_or_default();
        return Err(ConfigError::CommandLine(format!(
            "parameter {first:?} specified before command (expected --<kind> first)"
        )));
    }
    let mut occurrences = BTreeMap::new();
    for name in names {
        if let Some(found) = matches.get_occurrences::<String>(&name) {
            let list: Vec<Vec<String>> = found.map(|values| values.cloned().collect()).collect();
            occurrences.insert(name, list);
        }
    }
    Ok(occurrences)
}

/// The command line as a clap [`Command`], built from the same kinds as [`help_text`]
/// (the core's table and the plugins' kinds): one repeatable `--<kind>` option per kind
/// taking any number of `key=value` words, plus `--config`. It groups the words of a
/// command line into occurrences, and `--man` and `--completion` are generated from it.
pub(crate) fn command(program: &str, plugin_kinds: &[PluginKind]) -> Command {
    let mut command = Command::new(program.to_owned())
        .about("Receptor mesh node (receptor-rs, compatible with receptor 1.6.9)")
        .version(super::VERSION)
        .override_usage(format!("{program} [--<action> [<param>=<value> ...] ...]"))
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .num_args(0..=1)
                .action(ArgAction::Append)
                .value_name("FILE")
                .value_hint(clap::ValueHint::FilePath)
                .help("Load additional config options from a YAML file"),
        );
    for kind in KINDS {
        let mut long_help = format!("{}.", kind.description);
        for field in kind.fields {
            long_help.push_str(&format!(
                "\n  {}=<{}>",
                field.name,
                schema::type_label(field.ty)
            ));
            if !field.description.is_empty() {
                long_help.push_str(&format!(": {}", field.description));
            }
            if let Some(default) = field.default {
                long_help.push_str(&format!(" (default: {default})"));
            }
        }
        command = command.arg(
            kind_arg(kind.name.to_owned())
                .help(kind.description)
                .long_help(long_help)
                .hide(kind.hidden),
        );
    }
    for kind in plugin_kinds
        .iter()
        .filter(|k| schema::kind(&k.kind).is_none())
    {
        let help = plugin_kind_help(kind);
        let mut long_help = format!("{help}.");
        for field in &kind.desc.fields {
            long_help.push_str(&format!("\n  {}", plugin_field_line(kind, field)));
        }
        command = command.arg(kind_arg(kind.kind.clone()).help(help).long_help(long_help));
    }
    command
}

/// The help line of a plugin's kind: its own, or what it configures.
fn plugin_kind_help(kind: &PluginKind) -> String {
    if !kind.desc.help.is_empty() {
        kind.desc.help.clone()
    } else if kind.backend {
        "backend".to_owned()
    } else {
        "work type".to_owned()
    }
}

/// `name=<type>: help (required, default: x, --kind <value> sets it)`.
fn plugin_field_line(kind: &PluginKind, field: &receptor_plugin_sdk::describe::Field) -> String {
    let mut line = format!("{}=<{}>", field.name, field.field_type.noun());
    if !field.help.is_empty() {
        line.push_str(&format!(": {}", field.help));
    }
    let mut extras = Vec::new();
    if field.required {
        extras.push("required".to_owned());
    }
    if let Some(default) = &field.default {
        extras.push(format!("default: {default}"));
    }
    if kind.desc.bare_field.as_deref() == Some(field.name.as_str()) {
        extras.push(format!("--{} <value> sets it", kind.kind));
    }
    if !extras.is_empty() {
        line.push_str(&format!(" ({})", extras.join(", ")));
    }
    line
}

/// The option of one kind: `--<name> [key=value ...]`, repeatable.
fn kind_arg(name: String) -> Arg {
    Arg::new(name.clone())
        .long(name)
        .num_args(0..=usize::MAX)
        .action(ArgAction::Append)
        .value_name("KEY=VALUE")
}

/// `--man`: a roff man page (section 1) generated from [`command`].
pub(crate) fn man_page(program: &str, plugin_kinds: &[PluginKind]) -> Result<String, ConfigError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command(program, plugin_kinds))
        .render(&mut out)
        .map_err(|e| ConfigError::CommandLine(format!("cannot render the man page: {e}")))?;
    String::from_utf8(out)
        .map_err(|e| ConfigError::CommandLine(format!("cannot render the man page: {e}")))
}

/// `--completion <shell>`: a completion script for bash, zsh or fish generated from
/// [`command`].
pub(crate) fn completion(
    program: &str,
    shell: &str,
    plugin_kinds: &[PluginKind],
) -> Result<String, ConfigError> {
    use clap_complete::Shell;
    let shell = match shell.to_lowercase().as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => {
            return Err(ConfigError::CommandLine(format!(
                "--completion needs a shell: bash, zsh or fish (got {other:?})"
            )))
        }
    };
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut command(program, plugin_kinds),
        program,
        &mut out,
    );
    String::from_utf8(out)
        .map_err(|e| ConfigError::CommandLine(format!("cannot render the completion: {e}")))
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned()
}

/// Turns the occurrences back into items, in command-line order, reading `--config`
/// files where they appear.
fn items_in_order(
    tokens: &[Token],
    mut occurrences: BTreeMap<String, Vec<Vec<String>>>,
) -> Result<(Vec<RawItem>, Option<PathBuf>), ConfigError> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut items = Vec::new();
    let mut config_file = None;
    for token in tokens {
        let Token::Flag(name) = token else { continue };
        let count = seen.entry(name.clone()).or_insert(0);
        *count += 1;
        let words = occurrences
            .get_mut(name)
            .and_then(|list| list.get_mut(*count - 1))
            .map(std::mem::take)
            .unwrap_or_default();
        if name == "config" {
            // Go ignores a trailing `--config` without a file name.
            if let Some(path) = words.into_iter().next() {
                let path = PathBuf::from(path);
                items.extend(yaml::load_items(&path)?);
                config_file.get_or_insert(path);
            }
            continue;
        }
        let origin = if *count == 1 {
            format!("command line --{name}")
        } else {
            format!("command line --{name} (occurrence {count})")
        };
        let entries = words
            .into_iter()
            .map(|word| match word.split_once('=') {
                Some((key, value)) => Entry {
                    key: Some(key.to_owned()),
                    value: Value::Str(value.to_owned()),
                },
                None => Entry {
                    key: None,
                    value: Value::Str(word),
                },
            })
            .collect();
        items.push(RawItem {
            kind: name.clone(),
            entries,
            origin,
            from_command_line: true,
        });
    }
    Ok((items, config_file))
}

/// The `--help` text, laid out like Go receptor's: the core's kinds, and the plugins'
/// kinds in their groups (backends, work types), each naming its plugin.
pub(crate) fn help_text(program: &str, plugin_kinds: &[PluginKind]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Usage: {program} [--<action> [<param>=<value> ...] ...]\n\n"
    ));
    out.push_str("   --help: Show this help\n\n");
    out.push_str("   --config <filename>: Load additional config options from a YAML file\n");
    out.push_str("         (a list of items, or a map with \"version: 2\"; -c for short)\n\n");
    out.push_str("   --bash-completion: Generate a completion script for the bash shell\n");
    out.push_str(&format!(
        "         Run \". <({program} --bash-completion)\" to activate now\n\n"
    ));
    out.push_str("   --completion <shell>: Generate a completion script for bash, zsh or fish\n\n");
    out.push_str("   --man: Print the manual page (roff)\n\n");
    for group in Group::ALL {
        if !group.heading().is_empty() {
            out.push_str(group.heading());
            out.push_str("\n\n");
        }
        for kind in KINDS.iter().filter(|k| k.group == group && !k.hidden) {
            out.push_str(&format!("   --{}: {}", kind.name, kind.description));
            if kind.name == "node" {
                out.push_str(" (required)");
            }
            out.push('\n');
            for field in kind.fields {
                out.push_str(&format!(
                    "      {}=<{}>",
                    field.name,
                    schema::type_label(field.ty)
                ));
                if !field.description.is_empty() {
                    out.push_str(&format!(": {}", field.description));
                }
                let mut extras = Vec::new();
                if field.required {
                    extras.push("required".to_owned());
                }
                if let Some(default) = field.default {
                    extras.push(format!("default: {default}"));
                }
                if !extras.is_empty() {
                    out.push_str(&format!(" ({})", extras.join(", ")));
                }
                out.push('\n');
            }
            out.push('\n');
        }
        let from_plugins = plugin_kinds.iter().filter(|k| {
            schema::kind(&k.kind).is_none()
                && match group {
                    Group::Backends => k.backend,
                    Group::Workers => !k.backend,
                    _ => false,
                }
        });
        for kind in from_plugins {
            out.push_str(&format!(
                "   --{}: {} (plugin {})\n",
                kind.kind,
                plugin_kind_help(kind),
                kind.plugin
            ));
            for field in &kind.desc.fields {
                out.push_str(&format!("      {}\n", plugin_field_line(kind, field)));
            }
            if let Some(key) = &kind.desc.v2_key {
                out.push_str(&format!("      (version-2 form: under \"{key}:\")\n"));
            }
            out.push('\n');
        }
    }
    out
}

/// A bash completion script for the flags and their keys.
pub(crate) fn bash_completion(program: &str, plugin_kinds: &[PluginKind]) -> String {
    let function = format!(
        "_{}",
        program
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    );
    let mut actions = vec![
        "--help".to_owned(),
        "--bash-completion".to_owned(),
        "--config".to_owned(),
        "-c".to_owned(),
    ];
    let mut kinds: Vec<(String, Vec<String>)> = KINDS
        .iter()
        .filter(|k| !k.hidden)
        .map(|k| {
            let keys = k.fields.iter().map(|f| format!("{}=", f.name)).collect();
            (k.name.to_owned(), keys)
        })
        .collect();
    kinds.extend(
        plugin_kinds
            .iter()
            .filter(|k| schema::kind(&k.kind).is_none())
            .map(|k| {
                let keys = k
                    .desc
                    .fields
                    .iter()
                    .map(|f| format!("{}=", f.name))
                    .collect();
                (k.kind.clone(), keys)
            }),
    );
    actions.extend(kinds.iter().map(|(name, _)| format!("--{name}")));
    let mut out = String::new();
    out.push_str(&format!("{function}()\n{{\n"));
    out.push_str("  local cur prevdashed count DASHCMDS\n");
    out.push_str("  cur=${COMP_WORDS[COMP_CWORD]}\n");
    out.push_str("  count=$((COMP_CWORD-1))\n");
    out.push_str("  while [[ $count > 1 && ! ${COMP_WORDS[$count]} == -* ]]; do\n");
    out.push_str("    count=$((count-1))\n");
    out.push_str("  done\n");
    out.push_str("  prevdashed=${COMP_WORDS[$count]}\n");
    out.push_str(&format!("  DASHCMDS=\"{}\"\n", actions.join(" ")));
    out.push_str("  if [[ $cur == -* ]]; then\n");
    out.push_str("    COMPREPLY=($(compgen -W \"$DASHCMDS\" -- ${cur}))\n");
    out.push_str("  else\n");
    out.push_str("    case ${prevdashed} in\n");
    out.push_str("      -c|--config)\n");
    out.push_str("        COMPREPLY=($(compgen -f -- ${cur}))\n");
    out.push_str("        ;;\n");
    for (name, keys) in &kinds {
        out.push_str(&format!("      --{name})\n"));
        out.push_str(&format!(
            "        COMPREPLY=($(compgen -W \"{}\" -- ${{cur}}))\n",
            keys.join(" ")
        ));
        out.push_str("        ;;\n");
    }
    out.push_str("      *)\n");
    out.push_str("        COMPREPLY=($(compgen -W \"$DASHCMDS\" -- ${cur}))\n");
    out.push_str("        ;;\n");
    out.push_str("    esac\n");
    out.push_str("  fi\n");
    out.push_str("  [[ $COMPREPLY == *= ]] && compopt -o nospace\n");
    out.push_str("}\n");
    out.push_str(&format!("complete -F {function} {program}\n"));
    out
}
