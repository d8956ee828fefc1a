//! Shows a saved view: in the real dashboard (the terminal is taken until `q`), or printed as
//! text with `--print`.
//!
//! ```text
//! cargo run -p lockscope-tui --example view -- debugger/tui/tests/fixtures/kalloc_global.view.json
//! cargo run -p lockscope-tui --example view -- FILE --print --tab 2 --size 80x24
//! ```

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;
use lockscope_engine::SessionHandle;
use lockscope_tui::{App, Options, Tab, Theme};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

#[derive(Parser)]
struct Args {
    file: PathBuf,
    /// Print one frame instead of running the dashboard.
    #[arg(long)]
    print: bool,
    /// View number (1-6) for --print.
    #[arg(long, default_value_t = 1)]
    tab: usize,
    /// Terminal size for --print, WIDTHxHEIGHT.
    #[arg(long, default_value = "80x24")]
    size: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let view = lockscope_tui::fixture::load(&args.file)?;
    if !args.print {
        lockscope_tui::run(SessionHandle::fixed(view), Options::default())?;
        return Ok(());
    }
    let Some((w, h)) = args.size.split_once('x') else {
        bail!("--size takes WIDTHxHEIGHT, for example 80x24");
    };
    let (w, h): (u16, u16) = (w.parse()?, h.parse()?);
    let Some(tab) = Tab::ALL.get(args.tab.wrapping_sub(1)) else {
        bail!("--tab takes 1 to 6");
    };
    let mut app = App::new(Theme::mono(), false);
    app.tab = *tab;
    let mut term = Terminal::new(TestBackend::new(w, h))?;
    term.draw(|f| lockscope_tui::render(f, &app, &view))?;
    println!("{}", term.backend());
    Ok(())
}
