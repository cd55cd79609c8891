//! `dstream top`: a live view of streams and their consumers.
//!
//! [`sampler`] takes [`model::TopSnapshot`]s; this module shows them: a
//! ratatui table on a terminal, plain text (or JSON lines) otherwise, or
//! one snapshot with `--once`.

pub mod model;
pub mod sampler;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};

use crate::cli::TopArgs;
use crate::commands::{Ctx, println_out};
use crate::util::{CliError, exit};
use model::TopSnapshot;
use sampler::Sampler;

/// Parse `--interval`: a humantime duration (`500ms`, `2s`) or bare seconds.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        _ => humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?,
    };
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err("must be between 100ms and 1h".into());
    }
    Ok(d)
}

/// Parse `--checkpoints [STREAM=]DIR`.
pub fn parse_checkpoints(text: &str) -> Result<(Option<String>, PathBuf), String> {
    match text.split_once('=') {
        Some((stream, dir)) if !stream.is_empty() && !dir.is_empty() => {
            Ok((Some(stream.to_owned()), PathBuf::from(dir)))
        }
        Some(_) => Err("expected DIR or STREAM=DIR".into()),
        None if text.is_empty() => Err("expected DIR or STREAM=DIR".into()),
        None => Ok((None, PathBuf::from(text))),
    }
}

/// Whether `name` matches `glob`: `*` matches within one `/`-separated
/// segment, `**` any number of segments, `?` one character.
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn segments(glob: &[&str], name: &[&str]) -> bool {
        match glob.split_first() {
            None => name.is_empty(),
            Some((&"**", rest)) => (0..=name.len()).any(|i| segments(rest, &name[i..])),
            Some((g, rest)) => name.split_first().is_some_and(|(n, name_rest)| {
                let (g, n): (Vec<char>, Vec<char>) = (g.chars().collect(), n.chars().collect());
                chars(&g, &n) && segments(rest, name_rest)
            }),
        }
    }
    fn chars(g: &[char], n: &[char]) -> bool {
        match g.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| chars(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && chars(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && chars(rest, &n[1..]),
        }
    }
    let g: Vec<&str> = glob.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    segments(&g, &n)
}

/// The stream names to watch: the arguments, then `--names-file`, kept
/// when they match a `--glob` (all when there is none), without repeats.
async fn names(args: &TopArgs) -> Result<Vec<String>, CliError> {
    let mut all = args.streams.clone();
    if let Some(path) = &args.names_file {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| CliError::io(&format!("cannot read {}", path.display()), &e))?;
        all.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let mut out: Vec<String> = Vec::new();
    for name in all {
        let keep = args.globs.is_empty() || args.globs.iter().any(|g| glob_match(g, &name));
        if keep && !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Run `dstream top`.
pub async fn run(ctx: &Ctx, args: TopArgs) -> Result<(), CliError> {
    let names = names(&args).await?;
    let subscriptions = if args.subscriptions.is_empty() {
        None
    } else {
        Some((ctx.subscriptions()?, args.subscriptions.clone()))
    };
    let checkpoint_streams = args.checkpoints.iter().any(|(s, _)| s.is_some());
    if names.is_empty() && subscriptions.is_none() && !checkpoint_streams {
        return Err(CliError::new(
            exit::USAGE,
            "top: no streams to watch (name streams, --names-file, --subscription, or --checkpoints STREAM=DIR; a --glob may have matched none)",
        ));
    }
    let mut sampler = Sampler::new(
        names,
        args.checkpoints.clone(),
        subscriptions,
        Box::new(|name| ctx.stream(name)),
    )?;
    let interval = args.interval;
    if args.once {
        sampler.sample().await?;
        tokio::time::sleep(interval).await;
        let snapshot = sampler.sample().await?;
        return print_snapshot(ctx, &snapshot);
    }
    if ctx.json() || !std::io::stdout().is_terminal() {
        return print_loop(ctx, &mut sampler, interval).await;
    }
    tui(&mut sampler, interval).await
}

fn print_snapshot(ctx: &Ctx, snapshot: &TopSnapshot) -> Result<(), CliError> {
    if ctx.json() {
        let line = serde_json::to_string(snapshot)
            .map_err(|e| CliError::new(exit::OTHER, format!("top: {e}")))?;
        println_out(&line)
    } else {
        println_out(model::plain_text(snapshot).trim_end())
    }
}

/// Not a terminal (or JSON): one snapshot per interval until ctrl-c.
async fn print_loop(
    ctx: &Ctx,
    sampler: &mut Sampler<'_>,
    interval: Duration,
) -> Result<(), CliError> {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    // The first sample starts the readers; rates need a second one.
    sampler.sample().await?;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            _ = &mut interrupt => return Ok(()),
            _ = ticks.tick() => {}
        }
        let snapshot = sampler.sample().await?;
        print_snapshot(ctx, &snapshot)?;
        if !ctx.json() {
            println_out("")?;
        }
    }
}

/// What the terminal reports.
enum Input {
    Quit,
    Redraw,
}

fn is_quit(key: &KeyEvent) -> bool {
    key.kind != KeyEventKind::Release
        && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
            || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)))
}

/// The dashboard: redraw at every sample; q, Esc or ctrl-c quit. The
/// terminal is restored on exit, on errors and (ratatui's hook) on panic.
async fn tui(sampler: &mut Sampler<'_>, interval: Duration) -> Result<(), CliError> {
    let mut terminal = ratatui::try_init().map_err(|e| CliError::io("terminal", &e))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Terminal events block, so they are read on their own thread (waiting
    // in `poll`, not spinning) and sent over.
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match event::poll(Duration::from_millis(250)) {
                Ok(false) => {}
                Ok(true) => {
                    let input = match event::read() {
                        Ok(Event::Key(key)) if is_quit(&key) => Input::Quit,
                        Ok(Event::Resize(..)) => Input::Redraw,
                        Ok(_) => continue,
                        Err(_) => Input::Quit,
                    };
                    if tx.send(input).is_err() {
                        break;
                    }
                }
                Err(_) => {
                    let _ = tx.send(Input::Quit);
                    break;
                }
            }
        }
    });
    let result = async {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        let mut snapshot = TopSnapshot::default();
        loop {
            tokio::select! {
                _ = &mut interrupt => return Ok(()),
                input = rx.recv() => match input {
                    Some(Input::Redraw) => {}
                    Some(Input::Quit) | None => return Ok(()),
                },
                _ = ticks.tick() => snapshot = sampler.sample().await?,
            }
            terminal
                .draw(|frame| render(frame, &snapshot, interval))
                .map_err(|e| CliError::io("terminal", &e))?;
        }
    }
    .await;
    ratatui::restore();
    drop(rx);
    result
}

fn table<'a>(title: &'a str, headers: &'a [&'a str], rows: Vec<Vec<String>>) -> Table<'a> {
    let widths: Vec<Constraint> = model::widths(headers, &rows)
        .into_iter()
        .map(|w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)))
        .collect();
    let header = Row::new(headers.iter().copied())
        .style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED));
    Table::new(rows.into_iter().map(Row::new), widths)
        .header(header)
        .column_spacing(2)
        .block(Block::bordered().title(title))
}

/// Draw one snapshot: a title line, the streams table and, when there are
/// any, the consumers table.
pub fn render(frame: &mut Frame<'_>, snapshot: &TopSnapshot, interval: Duration) {
    let streams = model::stream_cells(snapshot);
    let consumers = model::consumer_cells(snapshot);
    let stream_height = u16::try_from(streams.len() + 3).unwrap_or(u16::MAX);
    let [title, top, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(stream_height),
        Constraint::Min(0),
    ])
    .areas(frame.area());
    let heading = format!(
        "dstream top  {} streams  every {}  {}  (q to quit)",
        snapshot.streams.len(),
        humantime::format_duration(interval),
        snapshot.taken_at
    );
    frame.render_widget(Line::from(heading), title);
    frame.render_widget(table("Streams", &model::STREAM_HEADERS, streams), top);
    if !consumers.is_empty() {
        frame.render_widget(
            table("Consumers", &model::CONSUMER_HEADERS, consumers),
            bottom,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{ConsumerRow, StreamRow};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    #[test]
    fn options_parse() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("2h").is_err());
        assert!(parse_interval("soon").is_err());
        assert_eq!(
            parse_checkpoints("orders=/var/ck"),
            Ok((Some("orders".into()), PathBuf::from("/var/ck")))
        );
        assert_eq!(
            parse_checkpoints("/var/ck"),
            Ok((None, PathBuf::from("/var/ck")))
        );
        assert!(parse_checkpoints("=x").is_err());
        assert!(parse_checkpoints("").is_err());
    }

    #[test]
    fn globs_match_segments() {
        assert!(glob_match("orders/*", "orders/eu"));
        assert!(!glob_match("orders/*", "orders/eu/1"));
        assert!(glob_match("orders/**", "orders/eu/1"));
        assert!(glob_match("**", "a/b"));
        assert!(glob_match("o?ders-*", "orders-7"));
        assert!(!glob_match("orders-*", "audit-1"));
        assert!(glob_match("exact", "exact"));
    }

    fn buffer_lines(terminal: &Terminal<TestBackend>) -> Vec<String> {
        let buffer = terminal.backend().buffer();
        let width = buffer.area.width as usize;
        buffer
            .content
            .chunks(width)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
            .collect()
    }

    #[test]
    fn the_dashboard_renders_streams_and_consumer_lag() {
        let snapshot = TopSnapshot {
            taken_at: "2030-01-01T00:00:00.000Z".into(),
            window_secs: Some(1.0),
            streams: vec![
                StreamRow {
                    name: "orders".into(),
                    tail_offset: Some("0_0000004096".into()),
                    bytes_per_sec: Some(2048.0),
                    messages_per_sec: Some(12.0),
                    last_append_secs: Some(0.25),
                    watched_secs: 3.0,
                    consumers: vec![
                        ConsumerRow {
                            name: "billing".into(),
                            source: "checkpoint",
                            offset: Some("0_0000001024".into()),
                            position: Some("behind"),
                            lag_bytes: Some(3072),
                            since_moved_secs: Some(65.0),
                            error: None,
                        },
                        ConsumerRow {
                            name: "audit".into(),
                            source: "checkpoint",
                            offset: Some("opaque".into()),
                            position: Some("ahead"),
                            lag_bytes: None,
                            since_moved_secs: None,
                            error: None,
                        },
                    ],
                    ..StreamRow::default()
                },
                StreamRow {
                    name: "done".into(),
                    tail_offset: Some("0_0000000010".into()),
                    bytes_per_sec: Some(0.0),
                    closed: true,
                    ttl_secs: Some(60),
                    watched_secs: 3.0,
                    ..StreamRow::default()
                },
            ],
        };
        let mut terminal = Terminal::new(TestBackend::new(100, 20)).unwrap();
        terminal
            .draw(|frame| render(frame, &snapshot, Duration::from_secs(1)))
            .unwrap();
        let lines = buffer_lines(&terminal);
        let screen = lines.join("\n");
        assert!(
            lines[0].starts_with("dstream top  2 streams  every 1s"),
            "{screen}"
        );
        assert!(lines[1].starts_with("┌Streams"), "{screen}");
        let header = &lines[2];
        for h in [
            "STREAM",
            "TAIL OFFSET",
            "BYTES/S",
            "MSGS/S",
            "LAST APPEND",
            "STATE",
            "EXPIRY",
        ] {
            assert!(header.contains(h), "{h}: {screen}");
        }
        assert!(
            lines[3].contains("orders  0_0000004096  2.0 KiB/s  12.0"),
            "{screen}"
        );
        assert!(
            lines[3].contains("0.2s ago") && lines[3].contains("open"),
            "{screen}"
        );
        assert!(
            lines[4].contains("done") && lines[4].contains("0 B/s"),
            "{screen}"
        );
        assert!(lines[4].contains("closed  ttl 60s"), "{screen}");
        assert!(lines[6].starts_with("┌Consumers"), "{screen}");
        for h in ["CONSUMER", "OFFSET", "POSITION", "LAG BYTES", "SINCE MOVED"] {
            assert!(lines[7].contains(h), "{h}: {screen}");
        }
        assert!(
            lines[8].contains("orders  billing   0_0000001024  behind    3072       1m05s ago"),
            "{screen}"
        );
        assert!(
            lines[9].contains("orders  audit     opaque        ahead     n/a        n/a"),
            "{screen}"
        );
    }

    #[test]
    fn quit_keys() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(is_quit(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(is_quit(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(is_quit(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!is_quit(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
    }
}
