//! The documentation and the binary agree: every command line of the README's command table
//! exists, with every flag it shows, in the built binary's `--help`.

use crate::common::{dam_sync_command, run, text};

use std::path::{Path, PathBuf};

/// The header row of the command table.
const TABLE_HEADER: &str = "| command | what it does |";

/// The README, and the docs pages the table may move to.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    if let Ok(entries) = std::fs::read_dir(root.join("docs")) {
        let mut pages: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        pages.sort();
        files.extend(pages);
    }
    files
}

/// The first cell of every row of every command table: the documented command lines.
fn documented_commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_table = false;
    for line in markdown.lines() {
        let line = line.trim();
        if line == TABLE_HEADER {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        // `\|` inside a cell is a literal bar (an alternative), not a column break.
        let row = line.replace("\\|", "\u{0}");
        let cell = row.split('|').nth(1).unwrap_or_default().trim();
        if let Some(command) = cell.strip_prefix('`').and_then(|c| c.split('`').next())
            && command.starts_with("dam-sync")
        {
            out.push(command.replace('\u{0}', "|"));
        }
    }
    out
}

/// The subcommand words (`dlq replay`) and the long flags (`--id`, `--all`) of a command line.
fn words_and_flags(command: &str) -> (Vec<String>, Vec<String>) {
    let tokens: Vec<&str> = command.split_whitespace().skip(1).collect();
    let words = tokens
        .iter()
        .take_while(|t| t.chars().all(|c| c.is_ascii_lowercase()))
        .map(|t| (*t).to_owned())
        .collect();
    let flags = tokens
        .iter()
        .filter_map(|t| {
            let t = t.trim_matches(|c: char| "[]|.".contains(c));
            let name: String = t
                .strip_prefix("--")?
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            Some(format!("--{name}"))
        })
        .collect();
    (words, flags)
}

/// Whether `help` lists `flag` as a whole word (`--id` is not found in `--idle`).
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let next = help[i + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn the_command_table_is_read_with_its_flags() {
    let table = "| command | what it does |\n|---|---|\n\
                 | `dam-sync dlq replay --id ID... \\| --all` | Moves. |\n\
                 | `dam-sync dlq list [--config FILE \\| --store PATH] [--bodies]` | Lists. |\n\
                 \nafter the table | `dam-sync ignored --x` |\n";
    let commands = documented_commands(table);
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(commands[0], "dam-sync dlq replay --id ID... | --all");
    let (words, flags) = words_and_flags(&commands[1]);
    assert_eq!(words, ["dlq", "list"]);
    assert_eq!(flags, ["--config", "--store", "--bodies"]);
    assert!(lists_flag("  --id <ID>\n", "--id"));
    assert!(!lists_flag("  --idle\n", "--id"));
}

#[tokio::test]
async fn every_documented_command_and_flag_exists_in_the_binary() {
    let mut commands = Vec::new();
    for file in documents() {
        let markdown = std::fs::read_to_string(&file).unwrap();
        commands.extend(documented_commands(&markdown));
    }
    assert!(
        commands.len() >= 9,
        "the command table (header {TABLE_HEADER:?}) was not found in README.md or docs/: \
         {commands:?}"
    );
    let mut wrong = Vec::new();
    for command in &commands {
        let (words, flags) = words_and_flags(command);
        let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
        args.push("--help");
        let out = run(dam_sync_command(&args)).await;
        let help = text(&out.stdout);
        if !out.status.success() {
            wrong.push(format!(
                "`{command}`: no such command ({})",
                text(&out.stderr).trim()
            ));
            continue;
        }
        for flag in flags {
            if !lists_flag(&help, &flag) {
                wrong.push(format!("`{command}`: the binary has no {flag}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "README and binary disagree:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn help_texts_offer_only_what_each_command_takes() {
    let help = |args: &'static [&'static str]| async move {
        text(&run(dam_sync_command(args)).await.stdout)
    };
    let backfill = help(&["backfill", "--help"]).await;
    assert!(!lists_flag(&backfill, "--store"), "{backfill}");
    assert!(
        backfill.contains("with --aws, SQS (QUEUE_URL)"),
        "{backfill}"
    );
    let check = help(&["check", "--help"]).await;
    let config = check
        .lines()
        .find(|l| l.trim_start().starts_with("--config <CONFIG>"));
    assert!(
        config.is_some_and(|l| l.contains("The config file `dam-sync serve` would run with")),
        "{check}"
    );
    // Without --id or --all, the error names both.
    let out = run(dam_sync_command(&["dlq", "replay", "--store", "x.db"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("<--id <ID>|--all>"), "{stderr}");
}
