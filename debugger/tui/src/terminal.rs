//! Taking the terminal and always giving it back: on return, on error and on panic.
//!
//! ratatui does raw mode, the alternate screen and the panic hook that restores them
//! (`ratatui::try_init`, `ratatui::restore`); mouse capture, which it leaves alone, is ours.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use ratatui::DefaultTerminal;

/// Mouse capture is on.
static MOUSE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// The UI's terminal. Dropping it restores the user's terminal.
pub struct Tui {
    pub terminal: DefaultTerminal,
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal in raw mode on the alternate screen, with mouse capture if asked. Both
/// panic hooks (ratatui's and the one that releases the mouse) are in place before the
/// terminal changes, so a panic at any later point leaves a usable shell.
pub fn enter(mouse: bool) -> io::Result<Tui> {
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            // Quietly: the terminal may never have changed (stdout is not a terminal).
            let _ = ratatui::try_restore();
            return Err(e);
        }
    };
    // After ratatui's hook, so that on a panic the mouse is released first.
    install_mouse_hook();
    if mouse {
        MOUSE.store(true, Ordering::SeqCst);
        if let Err(e) = execute!(io::stdout(), EnableMouseCapture) {
            restore();
            return Err(e);
        }
    }
    let _ = terminal.clear();
    Ok(Tui { terminal })
}

/// Releases the mouse, leaves raw mode and the alternate screen. Safe to call twice.
pub fn restore() {
    release_mouse();
    ratatui::restore();
}

fn release_mouse() {
    if MOUSE.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), DisableMouseCapture);
    }
}

fn install_mouse_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            release_mouse();
            previous(info);
        }));
    });
}
