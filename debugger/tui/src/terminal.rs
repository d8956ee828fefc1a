//! Taking the terminal and always giving it back: on return, on error and on panic.

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// The terminal is in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static MOUSE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// The UI's terminal. Dropping it restores the user's terminal.
pub struct Tui {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = restore();
    }
}

/// Puts the terminal in raw mode on the alternate screen, with mouse capture if asked. The
/// panic hook that restores it is installed first, so a panic at any later point leaves a
/// usable shell.
pub fn enter(mouse: bool) -> io::Result<Tui> {
    install_panic_hook();
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    MOUSE.store(mouse, Ordering::SeqCst);
    let mut out = io::stdout();
    let entered = if mouse {
        execute!(out, EnterAlternateScreen, EnableMouseCapture)
    } else {
        execute!(out, EnterAlternateScreen)
    };
    if let Err(e) = entered {
        let _ = restore();
        return Err(e);
    }
    match Terminal::new(CrosstermBackend::new(out)) {
        Ok(mut terminal) => {
            let _ = terminal.hide_cursor();
            let _ = terminal.clear();
            Ok(Tui { terminal })
        }
        Err(e) => {
            let _ = restore();
            Err(e)
        }
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor. Does nothing when the
/// terminal was not taken, so it is safe to call twice.
pub fn restore() -> io::Result<()> {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let mut out = io::stdout();
    if MOUSE.swap(false, Ordering::SeqCst) {
        let _ = execute!(out, DisableMouseCapture);
    }
    let r1 = execute!(out, LeaveAlternateScreen, crossterm::cursor::Show);
    let r2 = disable_raw_mode();
    r1.and(r2)
}

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Restore first so the panic message lands on the normal screen.
            let _ = restore();
            previous(info);
        }));
    });
}
